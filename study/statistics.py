"""The statistics of a study, in one module a statistician can review alone.

- `mean_interval`: mean and 95% t-interval half-width over seeds;
- `paired_seed_test`: paired t-test over seeds (the unit of replication), with the 95%
  interval of the mean difference;
- `tost_paired`: two one-sided paired t-tests over seeds (equivalence within +-margin);
- `verdict`: better / worse / equivalent / inconclusive from the two tests (p-values may be
  Holm-adjusted); "no difference" is only ever claimed by TOST;
- `alpha_trend`: seed-level OLS slope of a target in alpha, its t-interval and t-test;
- `best_alpha`: the alpha with the highest mean and a seed-bootstrap interval of it;
- `paired_query_test`: two-sided sign-flip permutation test on per-query values, whole
  groups (a paragraph's questions, or a question and its parallel copies) flipping
  together, the macro average over strata (languages) as the statistic;
- `holm`: Holm's step-down adjustment within a family.
Seeds are the unit of replication: dict inputs are {seed: value}, paired on the seeds
both sides have. Checked against hand values, scipy and statsmodels, and by simulated
studies (level under the null, power, coverage), in tests/test_statistics.py.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
from scipy import special, stats


def mean_interval(values: Iterable[float]) -> dict[str, Any]:
  """Mean and the half-width of a 95% t-interval (None with one value)."""
  v = np.asarray([x for x in values if x is not None], dtype=np.float64)
  if v.size == 0:
    return {"mean": None, "ci95": None, "n": 0}
  half = None
  if v.size > 1:
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
  return {"mean": float(v.mean()), "ci95": half, "n": int(v.size)}


def _paired_differences(a: dict[int, float], b: dict[int, float]) -> np.ndarray:
  """a - b on the seeds both sides have, in seed order."""
  seeds = sorted(set(a) & set(b))
  return np.array([a[s] for s in seeds], np.float64) - np.array([b[s] for s in seeds], np.float64)


def _constant(x: np.ndarray) -> bool:
  """No spread across seeds (up to rounding): no t statistic exists."""
  return not np.ptp(x) > 1e-12 * max(1.0, float(np.abs(x).max()))


def _t_interval(x: np.ndarray, level: float) -> list[float]:
  """Two-sided t-interval of the mean of x at `level` ([m, m] at zero variance)."""
  half = 0.0
  if not _constant(x):
    half = float(special.stdtrit(x.size - 1, 0.5 + level / 2) * x.std(ddof=1) / math.sqrt(x.size))
  return [float(x.mean()) - half, float(x.mean()) + half]


def _t_test(x: np.ndarray, null: float = 0.0) -> float:
  """Two-sided one-sample t-test p-value of mean(x) = null (scipy's ttest_1samp, without
  its per-call overhead, which the simulated studies in the tests would pay 1,000 times)."""
  t = (x.mean() - null) / (x.std(ddof=1) / math.sqrt(x.size))
  return float(2 * special.stdtr(x.size - 1, -abs(t)))


def paired_seed_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
  """Paired t-test over seeds both strategies ran (a - b) and the 95% t-interval of the mean
  difference ("ci95": [lo, hi]; None under 2 seeds, [d, d] at zero variance, where no
  p-value exists)."""
  x = _paired_differences(a, b)
  if x.size < 2:
    return {"n": int(x.size), "mean_diff": None, "p_value": None, "ci95": None}
  out = {"n": int(x.size), "mean_diff": float(x.mean()), "p_value": None,
         "ci95": _t_interval(x, 0.95)}
  if not _constant(x):
    out["p_value"] = _t_test(x)
  else:
    out["note"] = "zero variance across seeds"
  return out


def tost_paired(a: dict[int, float], b: dict[int, float], margin: float,
                alpha: float = 0.05) -> dict[str, Any]:
  """Equivalence of a and b within +-margin by two one-sided paired t-tests over seeds.

  p_value is the larger of the one-sided p-values of H0: d <= -margin and H0: d >= margin
  (equals statsmodels' ttost_paired(a, b, -margin, margin)); "equivalent" when it is below
  alpha, i.e. the (1 - 2 alpha) t-interval ("ci90", 90% at the default alpha) lies inside
  (-margin, margin). Under 2 seeds: no test, not equivalent. At zero variance across seeds
  no t statistic exists: p_value None, and "equivalent" is the limit of the test as the
  spread goes to 0: true iff the constant difference lies strictly inside the margin.
  """
  x = _paired_differences(a, b)
  out: dict[str, Any] = {"n": int(x.size), "mean_diff": float(x.mean()) if x.size > 1 else None,
                         "margin": float(margin), "ci90": None, "p_value": None,
                         "equivalent": False}
  if x.size < 2:
    return out
  out["ci90"] = _t_interval(x, 1 - 2 * alpha)
  if _constant(x):
    out["note"] = "zero variance across seeds"
    out["equivalent"] = bool(abs(x.mean()) < margin)
    return out
  se = x.std(ddof=1) / math.sqrt(x.size)
  p_lower = special.stdtr(x.size - 1, -(x.mean() + margin) / se)  # H0: d <= -margin
  p_upper = special.stdtr(x.size - 1, (x.mean() - margin) / se)  # H0: d >= +margin
  out["p_value"] = float(max(p_lower, p_upper))
  out["equivalent"] = out["p_value"] < alpha
  return out


def verdict(seed_test: dict[str, Any], tost: dict[str, Any] | None = None,
            alpha: float = 0.05, p_value: float | None = None,
            tost_p_value: float | None = None) -> str:
  """"better" / "worse" (a vs b) when the paired test rejects (p < alpha, the sign of
  mean_diff), else "equivalent" when TOST rejects non-equivalence, else "inconclusive".

  p_value / tost_p_value replace the tests' own p-values (pass Holm-adjusted ones). A seed
  test without a p-value (under 2 seeds, zero variance) claims no direction; a TOST without
  one falls back on its "equivalent" flag (see tost_paired). A significant difference
  inside the margin is reported as better / worse, not equivalent.
  """
  p = seed_test.get("p_value") if p_value is None else p_value
  if p is not None and p < alpha and seed_test.get("mean_diff"):
    return "better" if seed_test["mean_diff"] > 0 else "worse"
  if tost is not None:
    q = tost.get("p_value") if tost_p_value is None else tost_p_value
    if (q < alpha) if q is not None else bool(tost.get("equivalent")):
      return "equivalent"
  return "inconclusive"


def _seed_matrix(values: dict[float, dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
  """alphas (sorted) and the [seed, alpha] values of the seeds present at every alpha."""
  alphas = np.array(sorted(values), np.float64)
  seeds = sorted(set.intersection(*(set(values[a]) for a in sorted(values)))) if values else []
  y = np.array([[values[a][s] for a in sorted(values)] for s in seeds], np.float64)
  return alphas, y.reshape(len(seeds), alphas.size)


def alpha_trend(values: dict[float, dict[int, float]]) -> dict[str, Any]:
  """Seed-level trend of a target in alpha ({alpha: {seed: value}}): each seed's OLS slope
  of value on alpha (seeds present at every alpha), then the mean slope, its 95%
  t-interval and the t-test of slope 0 over seeds (None under 2 seeds or 2 alphas; no
  p-value at zero variance)."""
  alphas, y = _seed_matrix(values)
  out: dict[str, Any] = {"slope": None, "ci95": None, "p_value": None,
                         "n_seeds": int(y.shape[0]), "alphas": [float(a) for a in alphas]}
  if alphas.size < 2 or y.shape[0] == 0:
    return out
  centred = alphas - alphas.mean()
  slopes = y @ centred / float(centred @ centred)
  out["slope"] = float(slopes.mean())
  if slopes.size >= 2:
    out["ci95"] = _t_interval(slopes, 0.95)
    if not _constant(slopes):
      out["p_value"] = _t_test(slopes)
  return out


def best_alpha(values: dict[float, dict[int, float]], resamples: int = 2000,
               seed: int = 0) -> dict[str, Any]:
  """The alpha with the highest mean over seeds ({alpha: {seed: value}}, seeds present at
  every alpha; ties to the smaller alpha) and a percentile bootstrap of it: seeds resampled
  with replacement, paired across alphas; "ci95" the 2.5% and 97.5% quantiles of the
  resampled best alpha (values of the grid), "share" how often each alpha was best."""
  alphas, y = _seed_matrix(values)
  if alphas.size == 0 or y.shape[0] == 0:
    return {"best": None, "ci95": None, "share": {}}
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, y.shape[0], size=(resamples, y.shape[0]))
  boot = alphas[np.argmax(y[picks].mean(axis=1), axis=1)]  # [resamples]
  lo, hi = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
  return {"best": float(alphas[np.argmax(y.mean(axis=0))]), "ci95": [float(lo), float(hi)],
          "share": {float(a): float(np.mean(boot == a)) for a in alphas}}


def paired_query_test(a, b, groups=None, strata=None, seed: int = 0,
                      resamples: int = 10000) -> dict[str, Any]:
  """Two-sided paired sign-flip test on per-query values, the group as the unit.

  The statistic is the macro average of a - b: the mean over strata (languages
  or language pairs) of each stratum's mean. Under the null all values of one
  group flip sign together: a group is a paragraph (the questions sharing it, as
  in LAReQA / TyDi) or a parallel group (a question and its translations). Without
  `groups` every value is its own group; without `strata` there is one stratum.
  """
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.size == 0:
    return {"n": 0, "groups": 0, "mean_diff": None, "p_value": None}
  _, s = np.unique(np.zeros(d.size) if strata is None else np.asarray(strata), return_inverse=True)
  weights = 1.0 / (np.bincount(s)[s] * (s.max() + 1))  # macro average = sum(weights * d)
  _, first, g = np.unique(np.arange(d.size) if groups is None else np.asarray(groups),
                          return_index=True, return_inverse=True)
  g = np.argsort(np.argsort(first))[g]  # groups in order of appearance, whatever their names
  c = np.bincount(g, weights=weights * d)  # each group's contribution to the statistic
  observed = float(c.sum())
  rng = np.random.default_rng(seed)
  hits, chunk = 0, max(1, 2_000_000 // c.size)
  for start in range(0, resamples, chunk):
    signs = rng.integers(0, 2, size=(min(chunk, resamples - start), c.size)) * 2.0 - 1.0
    hits += int(np.sum(np.abs(signs @ c) >= abs(observed) - 1e-12))
  return {"n": int(d.size), "groups": int(c.size), "mean_diff": observed,
          "p_value": (1 + hits) / (resamples + 1)}


def holm(p_values: list[float | None]) -> list[float | None]:
  """Holm step-down adjusted p-values over the family of available ones (None stays None)."""
  idx = [i for i, p in enumerate(p_values) if p is not None]
  p = np.array([p_values[i] for i in idx], np.float64)
  order = np.argsort(p, kind="stable")
  adjusted = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
  out: list[float | None] = [None] * len(p_values)
  for j, value in zip(order, adjusted):
    out[idx[j]] = float(value)
  return out
