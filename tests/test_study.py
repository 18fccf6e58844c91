"""Statistics of the study report, against values worked out by hand or scipy."""
import numpy as np
import pytest
from scipy import stats

from study import render, statistics


def test_mean_interval_matches_hand_computed_t_interval():
  cell = statistics.mean_interval([1.0, 2.0, 3.0])
  # mean 2, sample sd 1, t_{0.975, 2} = 4.302652729749464 -> half-width 4.3027 / sqrt(3)
  assert cell["mean"] == pytest.approx(2.0)
  assert cell["ci95"] == pytest.approx(4.302652729749464 / np.sqrt(3))
  assert cell["n"] == 3
  one = statistics.mean_interval([0.5])
  assert one == {"mean": 0.5, "ci95": None, "n": 1}


def test_paired_seed_test_equals_scipy_ttest_rel():
  a = {0: 0.61, 1: 0.64, 2: 0.60, 3: 0.66}
  b = {0: 0.58, 1: 0.63, 2: 0.61, 3: 0.62, 9: 0.99}  # seed 9 has no partner: ignored
  got = statistics.paired_seed_test(a, b)
  seeds = [0, 1, 2, 3]
  want = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue
  assert got["n"] == 4
  assert got["p_value"] == pytest.approx(want)
  assert got["mean_diff"] == pytest.approx(np.mean([0.03, 0.01, -0.01, 0.04]))


def test_paired_query_test_detects_shift_and_not_noise():
  rng = np.random.default_rng(0)
  base = rng.random(400)
  shifted = statistics.paired_query_test(base + 0.05, base)
  assert shifted["p_value"] < 0.001 and shifted["mean_diff"] == pytest.approx(0.05)
  # Differences symmetric around zero: the exact sign-flip null is centred on it.
  d = np.concatenate([np.full(200, 0.1), np.full(200, -0.1)])
  assert statistics.paired_query_test(base + d, base)["p_value"] > 0.5


def test_fmt_shows_mean_and_interval():
  assert render.fmt({"mean": 0.71234, "ci95": 0.0041, "n": 3}) == "0.712 ± 0.004"
  assert render.fmt({"mean": None, "ci95": None, "n": 0}) == "–"
