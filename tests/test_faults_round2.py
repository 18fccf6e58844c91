"""Faults, round two (issue 33): one writer per directory, results written whole, lengths
the model can hold, interpolation checked against provenance, and the POOR list.

Each test names the audit case it covers (BAD 1-5, POOR 6-12). Two-process tests hold a
lock in a child Python process (`hold_lock`) and check that the loser says who holds it
and changes nothing.
"""
import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from data_pipelines import files

REPO = pathlib.Path(__file__).resolve().parents[1]


def hold_lock(directory, what="training run", lock_name=files.LOCK_FILE):
  """A child process holding `DirectoryLock(directory)` until killed (started when it
  has printed "held")."""
  code = textwrap.dedent(f"""
      import sys, time
      from data_pipelines import files
      files.DirectoryLock({str(directory)!r}, {what!r}, {lock_name!r}).acquire()
      print("held", flush=True)
      time.sleep(600)
  """)
  child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
  assert child.stdout.readline().strip() == "held"
  return child


def kill(child):
  child.send_signal(signal.SIGKILL)
  child.wait(timeout=30)


def snapshot(directory):
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()}


def disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- the files module: atomic writes and the directory lock ----------------------------
def test_atomic_write_json_replaces_whole(tmp_path):
  path = tmp_path / "sub" / "results.json"
  files.atomic_write_json(path, {"a": 1})
  assert json.loads(path.read_text()) == {"a": 1}
  files.atomic_write_text(path, "new\n")
  assert path.read_text() == "new\n"
  assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left
  # The mode is that of a plain open(): not mkstemp's 0600.
  plain = tmp_path / "plain"
  plain.write_text("x")
  assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_full_disk_keeps_the_old_file_and_says_so_in_one_line(tmp_path, monkeypatch, where):
  path = tmp_path / "results.json"
  path.write_text('{"old": true}\n')
  fresh = tmp_path / "fresh.json"
  if where == "replace":
    monkeypatch.setattr(files.os, "replace", disk_full)
  else:  # the data does not fit: the flush to disk fails
    monkeypatch.setattr(files.os, "fsync", disk_full)
  for target, kept in ((path, "its previous version is kept"),
                       (fresh, "nothing was written there")):
    with pytest.raises(files.WriteError) as error:
      files.atomic_write_json(target, {"new": True})
    message = str(error.value)
    assert "\n" not in message and str(target) in message and "no space left" in message
    assert kept in message
  assert path.read_text() == '{"old": true}\n'
  assert not fresh.exists()  # no 0-byte result file
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_lock_held_by_another_process_names_it(tmp_path):
  child = hold_lock(tmp_path / "run")
  try:
    with pytest.raises(files.LockError) as error:
      files.DirectoryLock(tmp_path / "run", "training run").acquire()
    message = str(error.value)
    assert "\n" not in message
    assert f"pid {child.pid}" in message and socket.gethostname() in message
    assert "since 20" in message and "training run" in message
  finally:
    kill(child)


def test_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, capsys):
  child = hold_lock(tmp_path)
  kill(child)  # SIGKILL: the lock file stays, the kernel drops the flock
  assert (tmp_path / files.LOCK_FILE).exists()
  with files.DirectoryLock(tmp_path, "evaluation") as lock:
    assert lock.taken_over["pid"] == child.pid
    holder = json.loads((tmp_path / files.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
  err = capsys.readouterr().err
  assert "taking over" in err and f"pid {child.pid}" in err
  assert not (tmp_path / files.LOCK_FILE).exists()  # released: nothing left behind


def test_lock_is_reentrant_within_a_process(tmp_path):
  with files.DirectoryLock(tmp_path, "study") as outer:
    with files.DirectoryLock(tmp_path, "study"):
      pass
    assert outer.held and (tmp_path / files.LOCK_FILE).exists()
  assert not (tmp_path / files.LOCK_FILE).exists()
