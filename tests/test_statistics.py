"""study.statistics: intervals, paired tests over seeds and over questions (the question
as the unit) and Holm, against hand values, scipy and statsmodels."""
import itertools

import numpy as np
import pytest
from scipy import stats

from study import render, statistics


def _parallel_null(rng, groups=60, copies=11, effect=0.0):
  """Per-query differences of `groups` questions x `copies` parallel copies, strongly correlated."""
  shared = rng.standard_t(3, size=groups)  # the question's own difficulty gap, heavy-tailed
  d = effect + shared[None, :] + 0.3 * rng.standard_normal((copies, groups))  # [copies, groups]
  ids = np.tile(np.arange(groups), copies)
  language = np.repeat(np.arange(copies), groups)
  return d.ravel(), ids, language


def test_grouped_test_holds_its_level_under_within_question_correlation():
  rng = np.random.default_rng(1)
  studies, grouped, naive = 1000, 0, 0
  for i in range(studies):
    d, ids, language = _parallel_null(rng)
    grouped += statistics.paired_query_test(d, 0 * d, ids, language, seed=i, resamples=400)["p_value"] <= 0.05
    if i < 200:  # the old test: every value its own unit
      naive += statistics.paired_query_test(d, 0 * d, None, language, seed=i, resamples=400)["p_value"] <= 0.05
  assert 0.03 <= grouped / studies <= 0.07  # measured 0.054
  assert naive / 200 > 0.3  # measured 0.575: the independence assumption is badly wrong here


def test_grouped_test_detects_a_planted_effect():
  rng = np.random.default_rng(2)
  detected = 0
  for i in range(100):
    d, ids, language = _parallel_null(rng, effect=1.0)
    detected += statistics.paired_query_test(d, 0 * d, ids, language, seed=i, resamples=400)["p_value"] <= 0.05
  assert detected >= 95  # measured 100 of 100


def test_ungrouped_test_agrees_with_scipy_permutation_test():
  rng = np.random.default_rng(3)
  x = rng.random(200)
  y = x - 0.02 + 0.15 * rng.standard_normal(200)  # p near 0.14
  ours = statistics.paired_query_test(x, y, resamples=20000, seed=5)["p_value"]
  theirs = stats.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis),
                                  permutation_type="samples", n_resamples=20000,
                                  random_state=7).pvalue
  assert 0.01 < theirs < 0.3
  assert abs(ours - theirs) < 4 * np.sqrt(2 * theirs * (1 - theirs) / 20000)


def test_grouped_test_equals_sign_flip_on_question_means_by_exact_enumeration():
  # 12 questions in 3 languages with one copy each: the macro average difference
  # equals the mean of the question means; exact null by all 2^12 sign vectors (scipy).
  rng = np.random.default_rng(4)
  d = 0.5 + rng.standard_normal((3, 12))  # [language, question]; exact p 0.051
  ids = np.tile(np.arange(12), 3)
  language = np.repeat(["ar", "de", "en"], 12)
  got = statistics.paired_query_test(d.ravel(), np.zeros(36), ids, language, resamples=40000, seed=0)
  exact = stats.permutation_test((d.mean(axis=0),), np.mean, permutation_type="samples",
                                 n_resamples=np.inf).pvalue
  assert got["mean_diff"] == pytest.approx(d.mean())
  assert got["groups"] == 12 and got["n"] == 36
  assert abs(got["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / 40000) + 1e-4


def test_statistic_is_the_macro_average_with_unequal_languages_and_missing_copies():
  # Language "a" holds questions 0..3, "b" only 0 and 2: the statistic is
  # mean(mean_a, mean_b), and question 0's two values flip together.
  d = np.array([0.4, -0.1, 0.2, 0.3, 0.5, -0.2])
  ids = np.array([0, 1, 2, 3, 0, 2])
  language = np.array(["a", "a", "a", "a", "b", "b"])
  got = statistics.paired_query_test(d, np.zeros(6), ids, language, resamples=20000, seed=1)
  macro = (np.mean(d[:4]) + np.mean(d[4:])) / 2
  assert got["mean_diff"] == pytest.approx(macro)
  # Exact null by hand: group contributions c_g = sum of value / (2 * n_language).
  c = np.array([0.4 / 8 + 0.5 / 4, -0.1 / 8, 0.2 / 8 - 0.2 / 4, 0.3 / 8])
  null = [abs(np.dot(s, c)) for s in itertools.product([-1, 1], repeat=4)]
  # |0.175 + e|, e = +-0.0125 +-0.025 +-0.0375 >= 0 in 5 of 8 cases, mirrored: 10 of 16.
  exact = np.mean(np.array(null) >= abs(macro) - 1e-12)
  assert macro == pytest.approx(0.175) and exact == pytest.approx(10 / 16)
  assert abs(got["p_value"] - exact) < 0.015


def test_holm_matches_hand_values():
  p = [0.01, 0.04, None, 0.03, 0.005]
  # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
  assert statistics.holm(p) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
  assert statistics.holm([None, None]) == [None, None]
  # Capped at 1, and never below an earlier step: 3*0.3 = 0.9, 2*0.6 = 1.2 -> 1, 1*0.7 -> 1.
  assert statistics.holm([0.7, 0.3, 0.6]) == pytest.approx([1.0, 0.9, 1.0])


def test_holm_matches_statsmodels():
  multitest = pytest.importorskip("statsmodels.stats.multitest")
  rng = np.random.default_rng(6)
  for _ in range(20):
    raw = rng.random(8) ** 3
    want = multitest.multipletests(raw, method="holm")[1]
    assert statistics.holm(list(raw)) == pytest.approx(list(want))


def test_seed_test_gives_no_p_value_at_zero_variance():
  same = statistics.paired_seed_test({0: 0.7, 1: 0.8, 2: 0.9}, {0: 0.6, 1: 0.7, 2: 0.8})
  assert same["p_value"] is None and same["mean_diff"] == pytest.approx(0.1)
  zero = statistics.paired_seed_test({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5})
  assert zero["p_value"] is None
  assert render.fmt_p(same["p_value"]) == "n/a"
  assert statistics.paired_seed_test({0: 0.5}, {0: 0.4})["p_value"] is None  # one seed


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
