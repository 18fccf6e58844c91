"""The statistics of a study, in one module a statistician can review alone.

- `mean_interval`: mean and 95% t-interval half-width over seeds;
- `paired_seed_test`: paired t-test over seeds (the unit of replication);
- `paired_query_test`: two-sided sign-flip permutation test on per-query values, whole
  groups (a question and its parallel copies) flipping together, the macro average over
  strata (languages) as the statistic;
- `holm`: Holm's step-down adjustment within a family.
Checked against scipy and statsmodels in tests/test_statistics.py.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
from scipy import stats


def mean_interval(values: Iterable[float]) -> dict[str, Any]:
  """Mean and the half-width of a 95% t-interval (None with one value)."""
  v = np.asarray([x for x in values if x is not None], dtype=np.float64)
  if v.size == 0:
    return {"mean": None, "ci95": None, "n": 0}
  half = None
  if v.size > 1:
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
  return {"mean": float(v.mean()), "ci95": half, "n": int(v.size)}


def paired_seed_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
  """Paired t-test over seeds both strategies ran (a - b); no p-value at zero variance."""
  seeds = sorted(set(a) & set(b))
  if len(seeds) < 2:
    return {"n": len(seeds), "mean_diff": None, "p_value": None}
  x = np.array([a[s] for s in seeds]) - np.array([b[s] for s in seeds])
  out = {"n": len(seeds), "mean_diff": float(x.mean()), "p_value": None}
  if np.ptp(x) > 1e-12 * max(1.0, float(np.abs(x).max())):
    out["p_value"] = float(stats.ttest_1samp(x, 0.0).pvalue)
  else:
    out["note"] = "zero variance across seeds"
  return out


def paired_query_test(a, b, groups=None, strata=None, seed: int = 0,
                      resamples: int = 10000) -> dict[str, Any]:
  """Two-sided paired sign-flip test on per-query values, the group as the unit.

  The statistic is the macro average of a - b: the mean over strata (languages
  or language pairs) of each stratum's mean. Under the null all values of one
  group (a question and its parallel copies) flip sign together. Without
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
