"""perf/search_gpu.py: its float64 check accepts exact results and rejects wrong ones;
the whole script runs on a CPU with tiny sizes (slow)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu]

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf import search_gpu  # noqa: E402
from perf.search_throughput import _embeddings  # noqa: E402


def _numpy_top_k(queries, corpus, k):
  scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, order, 1).astype(np.float32), order


def test_float64_check_accepts_exact_and_rejects_wrong_results():
  corpus, queries = _embeddings(3000, 16, 0), _embeddings(12, 16, 1)
  scores, indices = _numpy_top_k(queries, corpus, 20)
  good = search_gpu.float64_check(queries, corpus, scores, indices, 20, rows=700)
  assert good["exact"] and good["max_score_error"] < 1e-6 and good["max_kth_shortfall"] <= 1e-6
  # the 20th best swapped for the 200th: its score no longer matches, and the k-th falls short
  wrong = indices.copy()
  wrong[5, 19] = np.argsort(-(queries[5] @ corpus.T))[199]
  assert not search_gpu.float64_check(queries, corpus, scores, wrong, 20, rows=700)["exact"]
  # right indices with the scores of the 21st: the k-th falls short of float64's
  s21, _ = _numpy_top_k(queries, corpus, 21)
  low = scores.copy()
  low[:, 19] = s21[:, 20]
  check = search_gpu.float64_check(queries, corpus, low, indices, 20, rows=700)
  assert not check["exact"] and check["max_kth_shortfall"] > 1e-5


@pytest.mark.slow
def test_dry_run_writes_exact_results(tmp_path):
  out = subprocess.run([sys.executable, str(REPO / "perf" / "search_gpu.py"), "--out",
                        str(tmp_path), "--dry-run", "--max_load", "1000"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads((tmp_path / "search_gpu.json").read_text())
  assert [s["corpus"] for s in result["sizes"]] == [3000, 5000]
  for size in result["sizes"]:
    assert all(c["exact"] for c in size["float64_check"].values())
    assert size["methods"]["torch mm + topk"]["topk_overlap_with_float32"] == 1.0
  assert "| 5,000 | eval.search float32 |" in (tmp_path / "search_gpu.md").read_text()
