"""Where the raw benchmark files live, and how to check or fetch them.

The project never ships data. It reads a data directory laid out like
`../shared/data` (one folder per source, each with a `SOURCES.txt`), chosen by
`--data_dir`, else `$MLIR_DATA_DIR`, else `../shared/data` beside the repository.
Files missing there are fetched from their public upstream (raw GitHub at the
pinned commit) into a user cache, `$MLIR_TRAIN_CACHE/data/<folder>` (default
`~/.cache/mlir_train/data/<folder>`), and every file is checked against the
size and sha256 prefix in `SOURCES.txt`.

`SOURCES.txt` lines are tab-separated:
  name  owner/repo@commit:path  N bytes  sha256:PREFIX  license
Lines starting with "#" are notes. When a data directory has no `SOURCES.txt`
for a folder, the copy packaged in `data_pipelines/sources/<folder>.txt` is used.

  python -m data_pipelines.datadir --folders xquad_r mlqa_r tydiqa_goldp
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.request
from typing import Callable, Iterable

from data_pipelines.errors import DataError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGED_SOURCES = pathlib.Path(__file__).resolve().parent / "sources"
GITHUB_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

# fetch(url, destination path): writes the file or raises.
Fetch = Callable[[str, pathlib.Path], None]


def resolve_data_dir(flag: str | os.PathLike | None = None) -> pathlib.Path:
  """The data directory: `flag`, else $MLIR_DATA_DIR, else ../shared/data beside the repo."""
  if flag:
    chosen, origin = pathlib.Path(flag), "--data_dir"
  elif os.environ.get("MLIR_DATA_DIR"):
    chosen, origin = pathlib.Path(os.environ["MLIR_DATA_DIR"]), "$MLIR_DATA_DIR"
  else:
    chosen = REPO_ROOT.parent / "shared" / "data"
    if not chosen.is_dir():
      raise DataError(
          f"no data directory: pass --data_dir, set $MLIR_DATA_DIR, or place the data at {chosen}; "
          f"or fetch it with `python -m data_pipelines.datadir` (downloads to {cache_dir()})")
    return chosen
  if not chosen.is_dir():
    raise DataError(f"{chosen}: data directory from {origin} does not exist")
  return chosen


def cache_dir() -> pathlib.Path:
  """Where downloaded data go: $MLIR_TRAIN_CACHE/data, default ~/.cache/mlir_train/data."""
  root = os.environ.get("MLIR_TRAIN_CACHE") or pathlib.Path.home() / ".cache" / "mlir_train"
  return pathlib.Path(root) / "data"


@dataclasses.dataclass(frozen=True)
class Source:
  """One line of SOURCES.txt."""
  name: str
  repo: str
  commit: str
  path: str
  size: int
  sha256_prefix: str
  license: str

  def url(self, template: str = GITHUB_RAW) -> str:
    return template.format(repo=self.repo, commit=self.commit, path=self.path)


def parse_sources(path: pathlib.Path) -> list[Source]:
  """Parse a SOURCES.txt file; malformed lines raise DataError naming the line."""
  sources = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip() or line.startswith("#"):
      continue
    fields = line.split("\t")
    try:
      name, where, size, sha, *rest = fields
      location, file_path = where.split(":", 1)
      repo, commit = location.split("@", 1)
      if not size.endswith(" bytes") or not sha.startswith("sha256:"):
        raise ValueError
      sources.append(Source(name, repo, commit, file_path, int(size.split()[0]),
                            sha.removeprefix("sha256:").lower(), "\t".join(rest)))
    except ValueError:
      raise DataError(f"{path}: line {number}: malformed SOURCES.txt line "
                      "(want name, repo@commit:path, 'N bytes', 'sha256:PREFIX', license)") from None
  return sources


def sources_file(data_dir: pathlib.Path | None, folder: str) -> pathlib.Path:
  """The folder's SOURCES.txt in the data dir, else the packaged copy."""
  candidates = []
  if data_dir is not None:
    candidates.append(pathlib.Path(data_dir) / folder / "SOURCES.txt")
  candidates.append(PACKAGED_SOURCES / f"{folder}.txt")
  for path in candidates:
    if path.is_file():
      return path
  raise DataError(f"{folder}: no SOURCES.txt (looked at {', '.join(map(str, candidates))})")


def sha256_file(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes (the one implementation in the project), cached by
  (path, modification time, size) so that repeated checks of big files are free."""
  st = os.stat(path)
  return _sha256(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
  del mtime_ns, size  # cache key only
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def check_file(path: pathlib.Path, source: Source) -> None:
  """Raise DataError naming the file when its size or sha256 prefix differs."""
  st = path.stat()
  if st.st_size != source.size:
    raise DataError(f"{path}: size {st.st_size} bytes, expected {source.size} "
                    f"({source.repo}@{source.commit[:7]}:{source.path}); the file is corrupt or a different version")
  digest = _sha256(str(path), st.st_mtime_ns, st.st_size)
  if not digest.startswith(source.sha256_prefix):
    raise DataError(f"{path}: sha256 {digest[:len(source.sha256_prefix)]}..., expected "
                    f"{source.sha256_prefix}... ({source.repo}@{source.commit[:7]}:{source.path}); "
                    "the file is corrupt or a different version")


def urllib_fetch(url: str, destination: pathlib.Path) -> None:
  """Download `url` (https:// or file://) to `destination`."""
  with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
    shutil.copyfileobj(response, out)


def verify_or_download(data_dir: str | os.PathLike | None, folder: str,
                       files: Iterable[str] | None = None, *,
                       download_dir: str | os.PathLike | None = None,
                       fetch: Fetch = urllib_fetch,
                       url_template: str = GITHUB_RAW,
                       progress: bool = False) -> dict[str, pathlib.Path]:
  """Check `folder`'s files against SOURCES.txt; fetch the missing ones.

  Files present in `data_dir/folder` or in `download_dir/folder` (default the
  user cache) are verified; missing ones are downloaded from upstream into
  `download_dir/folder`, verified, then moved into place. Returns
  {file name: verified path}. Any mismatch raises DataError naming the file.
  """
  data_dir = pathlib.Path(data_dir) if data_dir is not None else None
  target = pathlib.Path(download_dir) if download_dir is not None else cache_dir()
  target = target / folder
  sources = parse_sources(sources_file(data_dir, folder))
  if files is not None:
    wanted = set(files)
    unknown = wanted - {s.name for s in sources}
    if unknown:
      raise DataError(f"{folder}: {', '.join(sorted(unknown))} not listed in its SOURCES.txt")
    sources = [s for s in sources if s.name in wanted]
  if progress:
    from tqdm import tqdm
    sources = tqdm(sources, desc=f"verify {folder}", unit="file")
  found = {}
  for source in sources:
    places = ([data_dir / folder / source.name] if data_dir is not None else []) + [target / source.name]
    path = next((p for p in places if p.is_file()), None)
    if path is None:
      path = _download(source, target, fetch, url_template)
    check_file(path, source)
    found[source.name] = path
  return found


def _download(source: Source, target: pathlib.Path, fetch: Fetch, url_template: str) -> pathlib.Path:
  target.mkdir(parents=True, exist_ok=True)
  url = source.url(url_template)
  with tempfile.TemporaryDirectory(dir=target) as tmp:
    partial = pathlib.Path(tmp) / source.name
    try:
      fetch(url, partial)
    except OSError as e:
      raise DataError(f"{source.name}: download from {url} failed ({e})") from None
    try:
      check_file(partial, source)
    except DataError as e:
      raise DataError(f"{source.name}: downloaded from {url} but it does not match SOURCES.txt: {e}") from None
    final = target / source.name
    os.replace(partial, final)
  return final


def locate(data_dir: str | os.PathLike | None, folder: str, name: str) -> pathlib.Path:
  """Path of one raw file: in the data dir if there, else in the download cache.

  `data_dir=None` means `resolve_data_dir()` (when one exists). Does not
  download; a missing file raises DataError saying how to fetch it.
  """
  places = []
  if data_dir is None:
    try:
      data_dir = resolve_data_dir()
    except DataError:
      data_dir = None
  if data_dir is not None:
    places.append(pathlib.Path(data_dir) / folder / name)
  places.append(cache_dir() / folder / name)
  for path in places:
    if path.is_file():
      return path
  raise DataError(f"{places[0]}: file not found (also not in {cache_dir() / folder}); "
                  f"fetch it with `python -m data_pipelines.datadir --folders {folder}`")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description="Verify the raw benchmark files against SOURCES.txt (size + sha256) and "
                  "download missing ones from their public upstream into the user cache.")
  parser.add_argument("--data_dir", default=None,
                      help="data directory (default: $MLIR_DATA_DIR, else ../shared/data beside the repo)")
  parser.add_argument("--folders", nargs="+", default=["xquad_r", "mlqa_r", "tydiqa_goldp"],
                      help="source folders to check/fetch (default: the evaluation benchmarks)")
  parser.add_argument("--files", nargs="+", default=None,
                      help="only these file names (default: every file listed in SOURCES.txt)")
  parser.add_argument("--download_dir", default=None,
                      help=f"where downloads go (default: {cache_dir()})")
  args = parser.parse_args(argv)
  try:
    data_dir = resolve_data_dir(args.data_dir)
  except DataError as e:
    if args.data_dir:
      print(f"error: {e}", file=sys.stderr)
      raise SystemExit(2) from None
    data_dir = None
    print(f"no local data directory; downloading into {args.download_dir or cache_dir()}")
  for folder in args.folders:
    try:
      found = verify_or_download(data_dir, folder, args.files, download_dir=args.download_dir,
                                 progress=True)
    except DataError as e:
      print(f"error: {e}", file=sys.stderr)
      raise SystemExit(2) from None
    print(f"{folder}: {len(found)} files verified")


if __name__ == "__main__":
  main()
