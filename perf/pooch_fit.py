"""Does pooch cover what `data_pipelines.datadir` does? Behaviour checks, no timings.

  /tmp/libs-venv/bin/python perf/pooch_fit.py      # a venv with pooch (not a project dependency)

A local HTTP server (127.0.0.1, a thread) serves a copy of one raw data file, laid out
as raw.githubusercontent.com; `pooch.retrieve` is asked for it the way
`datadir.verify_or_download` would be, and each case prints what pooch did:

1. the registry as SOURCES.txt has it (size + 16-hex sha256 prefix);
2. a full sha256: download, then a second call (served from the cache?);
3. the cached copy corrupted: refused, or silently downloaded again?
4. a corrupted upstream: the error, with retries;
5. a file:// URL (what the project's tests use for a fake upstream);
6. the server gone: the error a user sees.

Output: one JSON line per case (perf/results/hand_written.md quotes them).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import pathlib
import shutil
import sys
import tempfile
import threading

import pooch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipelines import datadir  # noqa: E402


class _Counting(http.server.SimpleHTTPRequestHandler):
  hits = 0

  def do_GET(self):
    type(self).hits += 1
    super().do_GET()

  def log_message(self, *args):
    pass


def _case(name, fn):
  try:
    result = {"case": name, "ok": True, "result": fn()}
  except Exception as e:  # noqa: BLE001 (what the user would see is the point)
    result = {"case": name, "ok": False, "error": f"{type(e).__name__}: {e}"}
  result["server_requests"] = _Counting.hits
  print(json.dumps(result), flush=True)


def main() -> None:
  data_dir = datadir.resolve_data_dir()
  source = next(s for s in datadir.parse_sources(data_dir / "xquad_r" / "SOURCES.txt")
                if s.name == "en.json")
  original = data_dir / "xquad_r" / source.name
  full = hashlib.sha256(original.read_bytes()).hexdigest()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    mirror = tmp / "mirror" / source.repo / source.commit / source.path
    mirror.parent.mkdir(parents=True)
    shutil.copy(original, mirror)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Counting, directory=str(tmp / "mirror")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = source.url(f"http://127.0.0.1:{server.server_port}/{{repo}}/{{commit}}/{{path}}")
    cache = tmp / "cache"
    get = functools.partial(pooch.retrieve, url, fname=source.name, path=cache)

    _case("1 sha256 prefix from SOURCES.txt", lambda: get(f"sha256:{source.sha256_prefix}"))
    _case("2a full sha256, first call", lambda: get(f"sha256:{full}"))
    _case("2b full sha256, second call", lambda: get(f"sha256:{full}"))
    cached = cache / source.name
    cached.write_bytes(cached.read_bytes()[:-1] + b"!")
    _case("3 cached copy corrupted", lambda: (get(f"sha256:{full}"),
                                              cached.read_bytes() == original.read_bytes()))
    mirror.write_bytes(mirror.read_bytes()[:-1] + b"!")
    cached.unlink()
    _case("4 upstream corrupted, retry_if_failed=1",
          lambda: pooch.create(path=cache, base_url=url.rsplit("/", 1)[0] + "/",
                               registry={source.name: f"sha256:{full}"},
                               retry_if_failed=1).fetch(source.name))
    _case("5 file:// URL", lambda: pooch.retrieve("file://" + str(original), f"sha256:{full}",
                                                  path=tmp / "cache5"))
    server.shutdown()
    server.server_close()
    _case("6 server gone", lambda: get(f"sha256:{full}", fname="other.json"))


if __name__ == "__main__":
  main()
