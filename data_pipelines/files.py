"""Result files written whole, and one writer per directory.

`atomic_write_text(path, text)` / `atomic_write_json(path, obj)` /
`atomic_write_bytes(path, data)` write a temporary file in the same directory,
flush and fsync it, then `os.replace` it over `path`: a reader (or a run killed
half-way, or a full disk) sees the old file or the new one, never a part.
`atomic_output(path)` gives the temporary path for writers that need a file name
(matplotlib's savefig). Any `OSError` (disk full, permission) becomes one
`WriteError` line naming the file and what was kept.

`DirectoryLock(directory, what)`: an advisory `fcntl.flock` on
`<directory>/.lock` (a JSON line: host, pid, since, what), held while a process
writes there. A second process gets `LockError` naming the holder; a lock file
left by a process that died (the kernel drops its flock) is taken over with a
message naming the old holder. Re-entrant within one process. A directory the lock
created and the process left empty is removed again on release. Advisory: only
processes that take the lock are kept out.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
from typing import Any, Iterator

from data_pipelines.errors import ProjectError

LOCK_FILE = ".lock"


class WriteError(ProjectError):
  """A result file that could not be written (disk full, permission): names it and what
  was kept."""


class LockError(ProjectError, RuntimeError):
  """A directory another live process is writing to."""


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------
def _kept(path: pathlib.Path) -> str:
  return (f"its previous version is kept" if path.exists()
          else "nothing was written there")


def write_error(path, error: OSError, kept: str | None = None) -> WriteError:
  """The `WriteError` for `error` while writing `path` (`kept`: what survives; default:
  the previous file or nothing)."""
  path = pathlib.Path(path)
  reason = error.strerror or str(error)
  if error.errno == errno.ENOSPC:
    reason = "no space left on the device"
  return WriteError(f"cannot write {path} ({reason}); {kept or _kept(path)}")


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
  """0o666 less the process umask (what `open(path, "w")` would give)."""
  global _UMASK
  with _UMASK_LOCK:
    if _UMASK is None:
      _UMASK = os.umask(0o022)
      os.umask(_UMASK)
  return 0o666 & ~_UMASK


def _fsync_directory(directory: pathlib.Path) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # some filesystems cannot fsync a directory; the rename itself is atomic
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_output(path, kept: str | None = None, fsync: bool = True) -> Iterator[pathlib.Path]:
  """Yield a temporary path beside `path`; when the block ends without error it replaces
  `path` (after an fsync). An `OSError` inside or while replacing is a `WriteError`; the
  temporary file is removed either way."""
  path = pathlib.Path(path)
  directory = path.parent
  tmp = None
  try:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = pathlib.Path(name)
    os.chmod(tmp, _file_mode())
    yield tmp
    if fsync:
      fd = os.open(tmp, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    os.replace(tmp, path)
    tmp = None
    if fsync:
      _fsync_directory(directory)
  except OSError as e:
    raise write_error(path, e, kept) from None
  finally:
    if tmp is not None:
      with contextlib.suppress(OSError):
        tmp.unlink()


def atomic_write_bytes(path, data: bytes, kept: str | None = None, fsync: bool = True) -> None:
  """Write `data` to `path` whole or not at all (see the module docstring)."""
  with atomic_output(path, kept, fsync) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def atomic_write_text(path, text: str, kept: str | None = None, fsync: bool = True) -> None:
  """Write `text` (UTF-8) to `path` whole or not at all."""
  atomic_write_bytes(path, text.encode("utf-8"), kept, fsync)


def atomic_write_json(path, obj: Any, kept: str | None = None, fsync: bool = True,
                      indent: int | None = 2, **dumps_kwargs) -> None:
  """`json.dumps(obj, indent=2, ...)` + newline to `path`, whole or not at all."""
  atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n", kept, fsync)


@contextlib.contextmanager
def write_errors(path, kept: str | None = None) -> Iterator[None]:
  """Turn an `OSError` in the block (an append, a write by a library) into a `WriteError`
  naming `path`."""
  try:
    yield
  except OSError as e:
    raise write_error(path, e, kept) from None


# --------------------------------------------------------------------------------------
# One writer per directory
# --------------------------------------------------------------------------------------
_HELD: dict[tuple[int, str], "DirectoryLock"] = {}  # (pid, lock path) -> the lock held
_HELD_LOCK = threading.Lock()


def describe_holder(holder: dict | None) -> str:
  """"host H, pid P, since T (N min ago)" of a lock file's record."""
  if not holder:
    return "an unknown process"
  since = holder.get("since", "?")
  ago = ""
  try:
    start = datetime.datetime.fromisoformat(since)
    minutes = (datetime.datetime.now(datetime.timezone.utc) - start).total_seconds() / 60
    ago = f" ({minutes:.0f} min ago)" if minutes >= 1 else " (under a minute ago)"
  except (TypeError, ValueError):
    pass
  what = f"{holder['what']}: " if holder.get("what") else ""
  return f"{what}host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {since}{ago}"


def _read_holder(fd: int) -> dict | None:
  os.lseek(fd, 0, os.SEEK_SET)
  data = b""
  while chunk := os.read(fd, 65536):
    data += chunk
  if not data.strip():
    return None
  try:
    holder = json.loads(data)
  except ValueError:
    return {"what": "unreadable lock record"}
  return holder if isinstance(holder, dict) else None


class DirectoryLock:
  """`with DirectoryLock(workdir, "training run"):` one writing process per directory.

  `acquire()` raises `LockError` when a live process holds it (one line naming that
  process: host, pid, since when); a record left by a dead process is taken over with a
  message to stderr. `release()` removes the lock file. Taken twice in one process, the
  second is a no-op that releases nothing.
  """

  def __init__(self, directory, what: str = "process", lock_name: str = LOCK_FILE):
    self.directory = pathlib.Path(directory)
    self.what = what
    self.path = self.directory / lock_name
    self._fd: int | None = None
    self._nested = False
    self.taken_over: dict | None = None  # the dead holder's record, if one was taken over
    self._created = False

  def _key(self) -> tuple[int, str]:
    return os.getpid(), str(self.path.absolute())

  def acquire(self) -> "DirectoryLock":
    with _HELD_LOCK:
      if self._key() in _HELD:
        self._nested = True
        return self
    self._created = not self.directory.exists()
    with write_errors(self.path, "nothing was written"):
      self.directory.mkdir(parents=True, exist_ok=True)
    while True:
      with write_errors(self.path, "nothing was written"):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise LockError(
            f"{self.directory} is in use by another {self.what} ({describe_holder(holder)}); "
            f"wait for it to end, or use another directory (lock file {self.path})") from None
      except OSError as e:  # a filesystem without locks: go on unlocked, and say so
        os.close(fd)
        print(f"warning: {self.path}: cannot lock ({e.strerror or e}); not guarding "
              f"{self.directory} against a second writer", file=sys.stderr)
        return self
      # The file we locked may have been removed by a holder releasing meanwhile.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = _read_holder(fd)
    if previous:
      self.taken_over = previous
      print(f"note: {self.directory}: taking over the lock of a {self.what} that ended "
            f"without releasing it ({describe_holder(previous)})", file=sys.stderr)
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "what": self.what}
    try:
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, (json.dumps(record) + "\n").encode())
      os.fsync(fd)
    except OSError as e:
      os.close(fd)
      raise write_error(self.path, e, "nothing was written") from None
    self._fd = fd
    with _HELD_LOCK:
      _HELD[self._key()] = self
    return self

  def release(self) -> None:
    if self._nested:
      self._nested = False
      return
    if self._fd is None:
      return
    with _HELD_LOCK:
      _HELD.pop(self._key(), None)
    with contextlib.suppress(OSError):
      self.path.unlink()  # while still locked: a waiting process re-checks the inode
    with contextlib.suppress(OSError):
      os.close(self._fd)  # closing drops the flock
    self._fd = None
    if self._created:  # made for the lock, and the process wrote nothing there
      with contextlib.suppress(OSError):
        self.directory.rmdir()

  @property
  def held(self) -> bool:
    return self._fd is not None or self._nested

  def __enter__(self) -> "DirectoryLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
