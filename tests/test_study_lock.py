"""One study per --out: a second study process on the same directory stops with one
`error:` line naming the holder, before any work, and changes nothing."""
import os
import subprocess
import sys
import time

import pytest

import replicate

pytestmark = [pytest.mark.fast]

HOLD = """
import sys, time
from data_pipelines import files
lock = files.DirectoryLock(sys.argv[1], "study").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _tree(path):
  return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_a_second_study_on_the_same_out_changes_nothing(tmp_path, capsys):
  out = tmp_path / "study"
  out.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
  try:
    assert holder.stdout.readline().strip() == "held"
    before = _tree(out)
    with pytest.raises(SystemExit) as exit_info:
      replicate.main(["--preset", "smoke", "--model", "tiny-random", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and f"pid {holder.pid}" in err[0]
    assert _tree(out) == before  # no runs/, no results, the holder's lock file untouched
  finally:
    holder.kill()
    holder.wait()
  # Once the holder is gone, its lock is taken over: a dry run needs none, a real run may start.
  result = replicate.main(["--preset", "smoke", "--model", "tiny-random", "--out", str(out),
                           "--dry_run"])
  assert result["dry_run"]["trainings"] == 3
