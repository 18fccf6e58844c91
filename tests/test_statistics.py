"""study.statistics: intervals, paired tests over seeds and over questions (the question
as the unit) and Holm, against hand values, scipy and statsmodels."""
import itertools

import numpy as np
import pytest
from scipy import stats

from study import render, statistics

pytestmark = [pytest.mark.fast]


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


# --- Seed-level tests of the decisive study: intervals, TOST, verdicts, the alpha trend ---
# Simulated studies have 20 seeds and a seed SD of 0.02 (the gpu study's spread); a rate
# over 1,000 studies is held to its nominal value +- 3 binomial sigmas.

SEEDS, SD, STUDIES = 20, 0.02, 1000
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _three_sigma(rate, n=STUDIES):
  return 3 * np.sqrt(rate * (1 - rate) / n)


def _pairs(rng, diff, sd=SD, studies=STUDIES, seeds=SEEDS):
  """`studies` paired studies as ({seed: a}, {seed: b}); a - b ~ N(diff, sd) per seed, on top
  of a shared seed effect both strategies see."""
  shared = 0.7 + 0.03 * rng.standard_normal((studies, seeds))
  a = shared + diff + sd / np.sqrt(2) * rng.standard_normal((studies, seeds))
  b = shared + sd / np.sqrt(2) * rng.standard_normal((studies, seeds))
  return [(dict(enumerate(x)), dict(enumerate(y))) for x, y in zip(a, b)]


def _sweeps(rng, slope, studies=STUDIES, seeds=SEEDS):
  """`studies` alpha sweeps {alpha: {seed: value}}: value = seed intercept + slope * alpha + noise."""
  alphas = np.array(ALPHAS)
  y = (0.7 + 0.03 * rng.standard_normal((studies, seeds, 1)) + slope * alphas
       + SD * rng.standard_normal((studies, seeds, alphas.size)))
  return [{float(a): dict(enumerate(y[i, :, j])) for j, a in enumerate(alphas)} for i in range(studies)]


def test_seed_test_interval_equals_scipy_and_handles_few_seeds():
  a = {0: 0.61, 1: 0.64, 2: 0.60, 3: 0.66}
  b = {0: 0.58, 1: 0.63, 2: 0.61, 3: 0.62, 9: 0.99}
  got = statistics.paired_seed_test(a, b)
  want = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)]).confidence_interval(0.95)
  assert got["ci95"] == pytest.approx([want.low, want.high])
  # mean 0.0175, sd 0.022174, t_{0.975, 3} = 3.182446 -> half-width 0.035283
  assert got["ci95"] == pytest.approx([0.0175 - 0.0352831, 0.0175 + 0.0352831], abs=1e-6)
  assert statistics.paired_seed_test({0: 0.5}, {0: 0.4})["ci95"] is None
  zero = statistics.paired_seed_test({0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.7})
  assert zero["p_value"] is None and zero["ci95"] == pytest.approx([0.1, 0.1])


def test_seed_test_holds_its_level_finds_a_planted_effect_and_covers_it():
  rng = np.random.default_rng(10)
  null = [statistics.paired_seed_test(a, b) for a, b in _pairs(rng, 0.0)]
  size = np.mean([r["p_value"] < 0.05 for r in null])
  assert abs(size - 0.05) <= _three_sigma(0.05)  # measured 0.036
  planted = [statistics.paired_seed_test(a, b) for a, b in _pairs(rng, 0.02)]
  power = np.mean([r["p_value"] < 0.05 and r["mean_diff"] > 0 for r in planted])
  assert power > 0.9  # effect = 1 SD at 20 seeds: measured 0.986
  covered = np.mean([r["ci95"][0] <= 0.02 <= r["ci95"][1] for r in planted])
  assert abs(covered - 0.95) <= _three_sigma(0.95)  # measured 0.939


def test_tost_equals_statsmodels_ttost_paired():
  weightstats = pytest.importorskip("statsmodels.stats.weightstats")
  rng = np.random.default_rng(11)
  for case in range(300):
    n = int(rng.integers(2, 31))
    margin = float(rng.choice([0.005, 0.01, 0.02, 0.05]))
    x1 = 0.7 + 0.03 * rng.standard_normal(n)
    x2 = x1 - rng.normal(0, 0.015) + rng.uniform(0.001, 0.03) * rng.standard_normal(n)
    alpha = 0.05 if case % 2 else 0.1
    got = statistics.tost_paired(dict(enumerate(x1)), dict(enumerate(x2)), margin, alpha)
    want = weightstats.ttost_paired(x1, x2, -margin, margin)[0]
    assert got["p_value"] == pytest.approx(float(want), rel=1e-9, abs=1e-14), case
    assert got["n"] == n and got["mean_diff"] == pytest.approx(np.mean(x1 - x2))
    # TOST at alpha rejects exactly when the (1 - 2 alpha) interval lies inside the margin.
    lo, hi = got["ci90"]
    assert got["equivalent"] == (-margin < lo and hi < margin), case
    ci = weightstats.DescrStatsW(x1 - x2).tconfint_mean(2 * alpha)
    assert [lo, hi] == pytest.approx(list(ci))


def test_tost_at_the_margin_is_a_size_alpha_test_and_finds_planted_equivalence():
  rng = np.random.default_rng(12)
  for true in (0.01, -0.01):  # the true difference on the boundary of the null
    at_margin = [statistics.tost_paired(a, b, 0.01) for a, b in _pairs(rng, true)]
    size = np.mean([r["equivalent"] for r in at_margin])
    assert abs(size - 0.05) <= _three_sigma(0.05)  # measured 0.046 and 0.046
  # No true difference and a seed SD of 0.01: equivalence within 0.01 shows in most studies.
  same = [statistics.tost_paired(a, b, 0.01) for a, b in _pairs(rng, 0.0, sd=0.01)]
  assert np.mean([r["equivalent"] for r in same]) > 0.9  # measured 0.993 (0.40 at SD 0.02)


def test_tost_without_spread_or_seeds():
  one = statistics.tost_paired({0: 0.5}, {0: 0.5}, 0.01)
  assert one == {"n": 1, "mean_diff": None, "margin": 0.01, "ci90": None, "p_value": None,
                 "equivalent": False}
  inside = statistics.tost_paired({0: 0.705, 1: 0.805}, {0: 0.7, 1: 0.8}, 0.01)
  assert inside["p_value"] is None and inside["equivalent"] is True
  assert inside["ci90"] == pytest.approx([0.005, 0.005])
  on_margin = statistics.tost_paired({0: 0.71, 1: 0.81}, {0: 0.7, 1: 0.8}, 0.0100001)
  assert on_margin["equivalent"] is True  # 0.01 up to rounding, strictly inside 0.0100001
  outside = statistics.tost_paired({0: 0.72, 1: 0.82}, {0: 0.7, 1: 0.8}, 0.01)
  assert outside["p_value"] is None and outside["equivalent"] is False


def test_verdict_on_hand_made_cases():
  a = {s: 0.70 + 0.01 * (s % 3) for s in range(6)}
  better = {s: a[s] + 0.03 + 0.002 * (-1) ** s for s in a}
  close = {s: a[s] + 0.001 * (-1) ** s for s in a}
  noisy = {s: a[s] + 0.05 * (-1) ** s + 0.01 for s in a}

  def answer(x, y, **kw):
    return statistics.verdict(statistics.paired_seed_test(x, y), statistics.tost_paired(x, y, 0.01), **kw)

  assert answer(better, a) == "better" and answer(a, better) == "worse"
  assert answer(close, a) == "equivalent"  # differences +-0.001 against a margin of 0.01
  assert answer(noisy, a) == "inconclusive"  # mean 0.01, SD 0.055: neither test rejects
  # Holm-adjusted p-values replace the raw ones: an adjusted p of 0.2 no longer rejects.
  test, tost = statistics.paired_seed_test(better, a), statistics.tost_paired(better, a, 0.01)
  assert test["p_value"] < 1e-4
  assert statistics.verdict(test, tost, p_value=0.2) == "inconclusive"
  near = statistics.tost_paired(close, a, 0.01)
  assert near["p_value"] < 0.01
  assert statistics.verdict(statistics.paired_seed_test(close, a), near, tost_p_value=0.3) == "inconclusive"
  assert statistics.verdict(test, None) == "better"
  assert statistics.verdict({"p_value": 0.5, "mean_diff": 0.001}, None) == "inconclusive"
  # A significant difference inside the margin is a difference, not an equivalence.
  tiny = {"p_value": 0.001, "mean_diff": -0.002}
  assert statistics.verdict(tiny, {"p_value": 0.001, "equivalent": True}) == "worse"
  # Zero spread: no p-values; TOST falls back on its limit decision.
  flat = {s: a[s] + 0.005 for s in a}
  assert answer(flat, a) == "equivalent"
  assert answer({s: a[s] + 0.02 for s in a}, a) == "inconclusive"


def test_alpha_trend_matches_a_hand_computation():
  values = {0.0: {0: 0.1, 1: 0.2, 2: 0.3, 7: 0.9},
            0.5: {0: 0.2, 1: 0.2, 2: 0.3},
            1.0: {0: 0.3, 1: 0.5, 2: 0.3, 7: 0.1}}  # seed 7 misses alpha 0.5: left out
  got = statistics.alpha_trend(values)
  # slopes 0.2, 0.3, 0: mean 1/6, SD sqrt(0.07/3), t^2 = 25/7 on 2 df -> p = 1 - 5/sqrt(39)
  sd = np.sqrt(0.07 / 3)
  assert got["n_seeds"] == 3 and got["alphas"] == [0.0, 0.5, 1.0]
  assert got["slope"] == pytest.approx(1 / 6)
  assert got["p_value"] == pytest.approx(1 - 5 / np.sqrt(39))
  half = 4.302652729749464 * sd / np.sqrt(3)
  assert got["ci95"] == pytest.approx([1 / 6 - half, 1 / 6 + half])
  assert statistics.alpha_trend({0.0: {0: 0.1}, 1.0: {0: 0.3}}) == {
      "slope": pytest.approx(0.2), "ci95": None, "p_value": None, "n_seeds": 1, "alphas": [0.0, 1.0]}
  assert statistics.alpha_trend({0.5: {0: 0.1, 1: 0.2}})["slope"] is None  # one alpha: no slope


def test_alpha_trend_equals_linregress_per_seed():
  rng = np.random.default_rng(13)
  alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
  y = rng.random((7, 5))
  got = statistics.alpha_trend({a: dict(enumerate(y[:, j])) for j, a in enumerate(alphas)})
  slopes = [stats.linregress(alphas, row).slope for row in y]
  test = stats.ttest_1samp(slopes, 0.0)
  ci = test.confidence_interval(0.95)
  assert got["slope"] == pytest.approx(np.mean(slopes))
  assert got["p_value"] == pytest.approx(test.pvalue)
  assert got["ci95"] == pytest.approx([ci.low, ci.high])


def test_alpha_trend_holds_its_level_and_covers_a_true_slope():
  rng = np.random.default_rng(14)
  null = [statistics.alpha_trend(v) for v in _sweeps(rng, 0.0)]
  size = np.mean([r["p_value"] < 0.05 for r in null])
  assert abs(size - 0.05) <= _three_sigma(0.05)  # measured 0.048
  planted = [statistics.alpha_trend(v) for v in _sweeps(rng, -0.02)]
  covered = np.mean([r["ci95"][0] <= -0.02 <= r["ci95"][1] for r in planted])
  assert abs(covered - 0.95) <= _three_sigma(0.95)  # measured 0.948
  # slope SE = 0.02 / sqrt(0.625 * 20) = 0.0057: a slope of -0.02 is found in ~93% of studies (measured 0.916)
  assert np.mean([r["p_value"] < 0.05 and r["slope"] < 0 for r in planted]) > 0.85


def test_best_alpha_bootstrap_equals_exact_enumeration():
  # 3 seeds x 3 alphas: all 27 resamples of the seeds are equally likely.
  y = np.array([[0.60, 0.66, 0.62],
                [0.64, 0.61, 0.63],
                [0.61, 0.65, 0.66]])  # [seed, alpha]; means 0.617, 0.640, 0.637
  alphas = [0.0, 0.5, 1.0]
  values = {a: dict(enumerate(y[:, j])) for j, a in enumerate(alphas)}
  exact = np.zeros(3)
  for pick in itertools.product(range(3), repeat=3):
    exact[np.argmax(y[list(pick)].mean(axis=0))] += 1 / 27
  got = statistics.best_alpha(values, resamples=20000, seed=3)
  assert got["best"] == 0.5
  assert list(got["share"]) == alphas
  assert list(got["share"].values()) == pytest.approx(exact, abs=4 * np.sqrt(0.25 / 20000))
  # exact shares 4/27, 16/27, 7/27: the 2.5% and 97.5% quantiles are alpha 0 and alpha 1
  assert exact == pytest.approx([4 / 27, 16 / 27, 7 / 27])
  assert got["ci95"] == [0.0, 1.0]
  assert statistics.best_alpha(values, resamples=500, seed=3) == statistics.best_alpha(values, resamples=500, seed=3)


def test_best_alpha_with_a_clear_winner_ties_and_no_seeds():
  values = {0.0: {0: 0.5, 1: 0.52}, 0.5: {0: 0.7, 1: 0.71, 2: 0.1}, 1.0: {0: 0.6, 1: 0.62}}
  got = statistics.best_alpha(values)  # seed 2 misses alphas 0 and 1: left out
  assert got == {"best": 0.5, "ci95": [0.5, 0.5], "share": {0.0: 0.0, 0.5: 1.0, 1.0: 0.0}}
  tie = statistics.best_alpha({0.25: {0: 0.5}, 0.75: {0: 0.5}})
  assert tie["best"] == 0.25  # ties go to the smaller alpha
  assert statistics.best_alpha({0.0: {0: 0.5}, 1.0: {1: 0.5}}) == {"best": None, "ci95": None, "share": {}}
