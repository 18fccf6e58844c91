"""Aggregate a hybrid-batch study (many runs x seeds) into numbers, tests and a report.

Input is the list of runs written by `replicate` (the study driver): each run has
`sampling` (mono, cross, hybrid, mixed, or none for the starting model),
`alpha`, `seed`, for robust fine-tuning runs `method` ("wise" with `lambda`, "l2sp"
with `l2sp`; see METHODS) and `metrics[benchmark]` in the `eval.run` JSON shape, plus
optional per-query values (`per_query[benchmark][setting][language]`, one number
per query in a fixed query order, and optionally the matching question ids in
`per_query[benchmark]["qids"][setting][language]`) used for the across-query tests,
which take the question (parallel group) as the unit.

`summarize(...)` computes every number the report shows (means, 95% intervals,
deltas, worst language, spread, seen/unseen means, p-values) and stores them in
the results dict; `render_markdown(results)` only formats those numbers, so the
report never holds a number that results.json does not.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import numpy as np
from scipy import stats

from data_pipelines import sampler
from eval import report


@dataclasses.dataclass(frozen=True)
class Method:
  """One kind of run in a study: its label, its place in tables and plots, and the run
  field (if any) whose value tells its variants apart (key "<kind>@<value>")."""
  label: str                  # "{}" is replaced by the variant's value
  rank: int                   # report / plot order
  param: str | None = None    # run field of the variant ("alpha", "lambda", "l2sp")
  robust: bool = False        # a robust fine-tuning method built on the hybrid


# The one table of run kinds: sampling strategies, and robust fine-tuning of the hybrid
# (WiSE-FT: weights interpolated between the start and a hybrid run, no training; L2-SP:
# a hybrid run trained with a pull toward the starting weights). A run's kind is its
# "method" field, else its "sampling".
# The sampling strategies are the sampler's modes (`sampler.SAMPLING_MODES`: label and
# order), so a new batch-composition rule reaches the report without an edit here.
METHODS = {
    "none": Method("start (zero-shot)", 0),
    **{name: Method(mode.label, 1 + i, "alpha" if mode.uses_alpha else None)
       for i, (name, mode) in enumerate(sampler.SAMPLING_MODES.items())},
}
METHODS.update({
    "wise": Method("Hybrid + WiSE-FT (lambda={})", len(METHODS), "lambda", robust=True),
    "l2sp": Method("Hybrid + L2-SP (strength {})", len(METHODS) + 1, "l2sp", robust=True),
})
STRATEGY_NAMES = {k: m.label for k, m in METHODS.items() if m.param is None}
# Benchmarks whose question ids are shared across languages (parallel groups).
PARALLEL_BENCHMARKS = ("xquad_r", "mlqa_r")

# DESIGN.md section 1: the paper's headline mAP numbers (macro over languages).
PAPER_NUMBERS = [
    # model, sampling, xq mono, cross, multi, mlqa mono, cross, multi, bias xq, bias mlqa
    ("XLM-R", "X-X-mono", .792, .674, .547, .648, .584, .473, 410.2, 287.5),
    ("XLM-R", "X-Y", .755, .700, .593, .626, .620, .508, 295.4, 226.7),
    ("XLM-R", "Hybrid", .798, .705, .593, .648, .623, .512, 286.6, 227.1),
    ("LaBSE", "X-X-mono", .808, .752, .652, .681, .656, .550, 261.5, 225.3),
    ("LaBSE", "X-Y", .801, .762, .679, .671, .677, .576, 225.2, 198.3),
    ("LaBSE", "Hybrid", .817, .767, .682, .686, .681, .579, 221.1, 195.0),
]

# The paper-style columns: (label, setting, metric). None setting = language bias.
LAREQA_COLUMNS = [
    ("mono mAP", "mono", "map"), ("cross mAP", "cross", "map"),
    ("multi mAP", "multi", "map"), ("mono R@1", "mono", "r@1"),
    ("cross R@1", "cross", "r@1"), ("multi R@10", "multi", "r@10"),
    ("bias", None, "language_bias"),
]
TYDI_METRIC = "map"  # per-language TyDi scores use mAP, like the paper's tables


def run_kind(run: dict) -> str:
  """A run's row in METHODS: its "method" (wise, l2sp) if any, else its sampling."""
  return run.get("method") or run["sampling"]


def strategy_key(run: dict) -> str:
  """'hybrid@0.5', 'mono', 'none', 'wise@0.25', 'l2sp@1', ... (the variant only where the
  method has one)."""
  kind = run_kind(run)
  method = METHODS.get(kind)
  if method is None or method.param is None:
    return kind
  return f"{kind}@{float(run[method.param]):g}"


def key_kind(key: str) -> str:
  return key.split("@", 1)[0]


def key_value(key: str) -> float | None:
  """The variant's value of a key ('wise@0.25' -> 0.25), None without one."""
  return float(key.split("@", 1)[1]) if "@" in key else None


def is_robust(key: str) -> bool:
  method = METHODS.get(key_kind(key))
  return bool(method and method.robust)


def strategy_label(key: str) -> str:
  method = METHODS.get(key_kind(key))
  if method is None:
    return key
  if method.param is None:
    return method.label
  return method.label.format(key.split("@", 1)[1])


def strategy_order(keys: Iterable[str]) -> list[str]:
  """Keys in report order: METHODS' rank (unknown kinds after the hybrids), then value."""
  def rank(key):
    method = METHODS.get(key_kind(key))
    value = key_value(key)
    return (method.rank if method else METHODS["hybrid"].rank, value if value is not None else 0.0, key)
  return sorted(keys, key=rank)


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


def _lareqa_value(metrics: dict, setting: str | None, metric: str) -> float | None:
  if setting is None:
    return (metrics.get("language_bias") or {}).get("macro")
  return metrics["settings"].get(setting, {}).get("macro", {}).get(metric)


def summarize(runs: list[dict], *, lareqa_benchmark: str, train_languages: list[str],
              tydi_benchmark: str = "tydiqa_goldp",
              sentences_benchmark: str = "tydiqa_goldp_sentences",
              afriqa_benchmark: str = "afriqa") -> dict[str, Any]:
  """Every number the report shows, computed from the runs.

  The robustness sections (`tydi`, `tydi_sentences`, `afriqa`) are present only for
  benchmarks that some run evaluated.
  """
  by_strategy: dict[str, list[dict]] = {}
  for run in runs:
    by_strategy.setdefault(strategy_key(run), []).append(run)
  order = strategy_order(by_strategy)
  summary: dict[str, Any] = {"strategies": order,
                             "labels": {k: strategy_label(k) for k in order}}

  # Paper-style LAReQA table: mean and 95% interval over seeds.
  table = {}
  for key in order:
    row = {}
    for label, setting, metric in LAREQA_COLUMNS:
      values = [_lareqa_value(r["metrics"][lareqa_benchmark], setting, metric)
                for r in by_strategy[key] if lareqa_benchmark in r["metrics"]]
      row[label] = mean_interval(values)
    table[key] = row
  summary["lareqa"] = {"benchmark": lareqa_benchmark, "table": table}

  # TyDi robustness (passages, then sentences): per language, deltas, worst, spread, seen/unseen.
  summary["tydi"] = _tydi_section(by_strategy, order, tydi_benchmark, train_languages)
  if _evaluated(runs, sentences_benchmark):
    summary["tydi_sentences"] = _tydi_section(by_strategy, order, sentences_benchmark,
                                              train_languages)
  if _evaluated(runs, afriqa_benchmark):
    summary["afriqa"] = _afriqa_section(by_strategy, order, afriqa_benchmark)

  # Hybrid vs each baseline: paired over seeds and over queries.
  summary["significance"] = _significance(
      by_strategy, order, _targets(lareqa_benchmark, tydi_benchmark, sentences_benchmark,
                                   afriqa_benchmark, runs))
  if any(is_robust(k) for k in order):
    summary["robust"] = _robust_section(by_strategy, order, summary, lareqa_benchmark,
                                        tydi_benchmark, sentences_benchmark, afriqa_benchmark)
  return summary


# ----------------------------------------------------------------------------
# Robust fine-tuning: WiSE-FT and L2-SP against the hybrid they start from


def _seen_unseen(run, benchmark, languages):
  """Macro mono mAP of a TyDi benchmark over `languages` (None if not evaluated)."""
  m = run["metrics"].get(benchmark)
  if m is None or not languages:
    return None
  per_language = m["settings"]["mono"]["per_language"]
  return float(np.mean([per_language[l][TYDI_METRIC] for l in languages]))


def _with_delta(values: list[float], start: float | None) -> dict[str, Any]:
  """Mean and interval of per-seed values and of their change against the start's value."""
  values = [v for v in values if v is not None]
  return {"score": mean_interval(values),
          "delta_vs_start": mean_interval(v - start for v in values) if start is not None else None}


def _robust_section(by_strategy, order, summary, lareqa_benchmark, tydi_benchmark,
                    sentences_benchmark, afriqa_benchmark) -> dict[str, Any]:
  """Per method (start, X-X-mono, X-Y, the hybrid the robust methods start from, each
  robust method): TyDi (passages, sentences) seen / unseen mono mAP and their change
  against the start, AfriQA native nDCG@10 and its change, the LAReQA cross / multi mAP
  and language bias, each over seeds; and each robust method against that hybrid
  (exploratory family: unseen-language TyDi mono mAP, LAReQA multi mAP)."""
  robust = [k for k in order if is_robust(k)]
  alphas = {r["alpha"] for k in robust for r in by_strategy[k]}
  hybrid = f"hybrid@{float(next(iter(alphas))):g}" if len(alphas) == 1 else None
  if hybrid not in by_strategy:
    hybrid = None
  methods = [k for k in order if k in ("none", "mono", "cross", hybrid) or is_robust(k)]
  start_runs = by_strategy.get("none", [])
  section: dict[str, Any] = {"base": hybrid, "methods": methods, "per_method": {}}
  levels = {"tydi": tydi_benchmark, "tydi_sentences": sentences_benchmark}
  for name, benchmark in levels.items():
    if summary.get(name):
      section.setdefault("languages", {})[name] = {"seen": summary[name]["seen"],
                                                   "unseen": summary[name]["unseen"]}
  table = summary["lareqa"]["table"]

  def start_value(fn):
    values = [fn(r) for r in start_runs]
    return values[0] if values and values[0] is not None else None

  def afriqa_native(run):
    m = run["metrics"].get(afriqa_benchmark)
    return None if m is None else m["settings"]["native"]["macro"][AFRIQA_METRIC]

  for key in methods:
    runs = by_strategy[key]
    entry: dict[str, Any] = {}
    for name, benchmark in levels.items():
      if name not in section.get("languages", {}):
        continue
      for part in ("seen", "unseen"):
        langs = section["languages"][name][part]
        fn = lambda r, b=benchmark, ls=langs: _seen_unseen(r, b, ls)
        entry[f"{name}_{part}"] = _with_delta([fn(r) for r in runs], start_value(fn))
    if summary.get("afriqa"):
      entry["afriqa_native"] = _with_delta([afriqa_native(r) for r in runs],
                                           start_value(afriqa_native))
    for column in ("cross mAP", "multi mAP", "bias"):
      entry[column] = table[key][column]
    section["per_method"][key] = entry

  # The share of the hybrid's multi mAP gain over the start that a method keeps (means).
  if hybrid and "none" in section["per_method"]:
    start_multi = table["none"]["multi mAP"]["mean"]
    gain = (table[hybrid]["multi mAP"]["mean"] - start_multi
            if start_multi is not None and table[hybrid]["multi mAP"]["mean"] is not None else None)
    for key in methods:
      mean = table[key]["multi mAP"]["mean"]
      section["per_method"][key]["multi_gain_kept"] = (
          (mean - start_multi) / gain if gain and mean is not None else None)

  # Each robust method against its hybrid: exploratory, Holm within this family.
  tests = []
  unseen = section.get("languages", {}).get("tydi", {}).get("unseen")
  targets = [Target(lareqa_benchmark, "multi", "map", f"{lareqa_benchmark} multi mAP", False)]
  if unseen:
    targets.insert(0, Target(tydi_benchmark, "mono", "map",
                             "TyDi mono mAP, unseen languages (change against the start)",
                             False, tuple(unseen)))
  if hybrid:
    for target in targets:
      for key in robust:
        a = {s: v for s, v in _per_seed(by_strategy[key], target.value).items() if v is not None}
        b = {s: v for s, v in _per_seed(by_strategy[hybrid], target.value).items() if v is not None}
        tests.append({"method": key, "against": hybrid, "target": target.label,
                      "benchmark": target.benchmark, "setting": target.setting,
                      "languages": list(target.languages) if target.languages else None,
                      "family": "robust (exploratory)",
                      "across_seeds": paired_seed_test(a, b),
                      "across_queries": _query_test(by_strategy[key], by_strategy[hybrid], target)})
    for kind in ("across_seeds", "across_queries"):
      for row, p in zip(tests, holm([r[kind]["p_value"] for r in tests])):
        row[kind]["p_holm"] = p
  section["tests"] = tests
  return section


def _evaluated(runs, benchmark) -> bool:
  return any(benchmark in r["metrics"] for r in runs)


def _first_languages(runs, benchmark, setting):
  for r in runs:
    if benchmark in r["metrics"]:
      return list(r["metrics"][benchmark]["settings"][setting]["per_language"])
  return []


def _robustness(rows: list[dict[str, float]], languages, seen, unseen, start_scores) -> dict:
  """Per-language means over seeds (rows: one {language: score} per seed), change against
  the start, the worst language of the means, spread, macro and seen / unseen means."""
  entry: dict[str, Any] = {"per_language": {l: mean_interval(x[l] for x in rows) for l in languages}}
  if start_scores is not None:
    entry["delta_vs_start"] = {l: mean_interval(x[l] - start_scores[l] for x in rows)
                               for l in languages}
    entry["macro_delta_vs_start"] = mean_interval(
        float(np.mean([x[l] - start_scores[l] for l in languages])) for x in rows)
  # The worst language of the per-language means, and that language's score.
  worst = min(languages, key=lambda l: entry["per_language"][l]["mean"])
  entry["worst_language"] = worst
  entry["worst_score"] = entry["per_language"][worst]
  entry["spread_max_minus_min"] = mean_interval(max(x.values()) - min(x.values()) for x in rows)
  entry["spread_std"] = mean_interval(float(np.std(list(x.values()))) for x in rows)
  entry["macro"] = mean_interval(float(np.mean(list(x.values()))) for x in rows)
  entry["seen_mean"] = mean_interval(float(np.mean([x[l] for l in seen])) for x in rows) if seen else None
  entry["unseen_mean"] = mean_interval(float(np.mean([x[l] for l in unseen])) for x in rows) if unseen else None
  return entry


def _start_scores(rows):
  if not rows:
    return None
  return {l: float(np.mean([s[l] for s in rows])) for l in rows[0]}


def _tydi_section(by_strategy, order, benchmark, train_languages) -> dict[str, Any]:
  """Per-language mono mAP of a TyDi benchmark (passages or sentences), plus its pooled setting."""
  runs = {k: [r for r in v if benchmark in r["metrics"]] for k, v in by_strategy.items()}
  languages = _first_languages([r for v in runs.values() for r in v], benchmark, "mono")
  seen = [l for l in languages if l in train_languages]
  unseen = [l for l in languages if l not in train_languages]

  def per_language(run):  # {lang: mono mAP}
    return {l: run["metrics"][benchmark]["settings"]["mono"]["per_language"][l][TYDI_METRIC]
            for l in languages}

  start_scores = _start_scores([per_language(r) for r in runs.get("none", [])])
  section: dict[str, Any] = {"benchmark": benchmark, "metric": f"mono {TYDI_METRIC}",
                             "languages": languages, "seen": seen, "unseen": unseen,
                             "per_strategy": {}}
  for key in order:
    rows = [per_language(r) for r in runs.get(key, [])]
    if not rows:
      continue
    entry = _robustness(rows, languages, seen, unseen, start_scores)
    multi = [r["metrics"][benchmark]["settings"].get("multi", {}).get("macro", {}) for r in runs[key]]
    entry["multi_map"] = mean_interval(m.get("map") for m in multi)
    entry["multi_top10_same_language"] = mean_interval(m.get("top10_same_language") for m in multi)
    section["per_strategy"][key] = entry
  return section


AFRIQA_METRIC = "ndcg@10"


def _afriqa_section(by_strategy, order, benchmark) -> dict[str, Any]:
  """Per language: native and translated nDCG@10 and their gap (native - translated), each
  with its change against the start; every AfriQA language is unseen by training."""
  runs = {k: [r for r in v if benchmark in r["metrics"]] for k, v in by_strategy.items()}
  languages = _first_languages([r for v in runs.values() for r in v], benchmark, "native")

  def views(run):  # {view: {lang: score}}
    m = run["metrics"][benchmark]
    out = {s: {l: m["settings"][s]["per_language"][l][AFRIQA_METRIC] for l in languages}
           for s in ("native", "translated")}
    out["gap"] = {l: m["robustness_gap"]["per_language"][l][AFRIQA_METRIC] for l in languages}
    return out

  start = [views(r) for r in runs.get("none", [])]
  section: dict[str, Any] = {"benchmark": benchmark, "metric": AFRIQA_METRIC, "languages": languages,
                             "seen": [], "unseen": languages, "per_strategy": {}}
  for key in order:
    rows = [views(r) for r in runs.get(key, [])]
    if not rows:
      continue
    section["per_strategy"][key] = {
        view: _robustness([x[view] for x in rows], languages, [], languages,
                          _start_scores([x[view] for x in start]))
        for view in ("native", "translated", "gap")}
  return section


def _per_seed(runs, fn):
  return {r["seed"]: fn(r) for r in runs if r.get("seed") is not None}


@dataclasses.dataclass(frozen=True)
class Target:
  """One macro score that the hybrid is compared on. setting "gap" = AfriQA's
  robustness_gap (native - translated)."""
  benchmark: str
  setting: str
  metric: str
  label: str
  planned: bool  # a primary target, named before the data
  languages: tuple[str, ...] | None = None  # the macro over these languages only (None: all)

  def value(self, run) -> float | None:
    m = run["metrics"].get(self.benchmark)
    if m is None:
      return None
    if self.languages is not None:
      per_language = m["settings"].get(self.setting, {}).get("per_language", {})
      values = [per_language.get(l, {}).get(self.metric) for l in self.languages]
      return None if not values or None in values else float(np.mean(values))
    if self.setting == "gap":
      return (m.get("robustness_gap") or {}).get("macro", {}).get(self.metric)
    return m["settings"].get(self.setting, {}).get("macro", {}).get(self.metric)


def _targets(lareqa_benchmark, tydi_benchmark, sentences_benchmark="tydiqa_goldp_sentences",
             afriqa_benchmark="afriqa", runs=None) -> list[Target]:
  """The comparisons, planned ones first; only benchmarks that some run evaluated."""
  targets = [
      Target(tydi_benchmark, "mono", "map", "TyDi mono mAP (macro)", True),
      Target(lareqa_benchmark, "multi", "map", f"{lareqa_benchmark} multi mAP", True),
      Target(sentences_benchmark, "mono", "map", "TyDi sentences mono mAP (macro)", True),
      Target(afriqa_benchmark, "native", AFRIQA_METRIC, "AfriQA native nDCG@10 (macro)", True),
      Target(tydi_benchmark, "multi", "map", "TyDi multi mAP", False),
      Target(lareqa_benchmark, "cross", "map", f"{lareqa_benchmark} cross mAP", False),
      Target(sentences_benchmark, "multi", "map", "TyDi sentences multi mAP", False),
      Target(afriqa_benchmark, "gap", AFRIQA_METRIC, "AfriQA gap nDCG@10 (native - translated)", False),
  ]
  if runs is None:
    return targets
  return [t for t in targets if _evaluated(runs, t.benchmark)]


def _significance(by_strategy, order, targets):
  hybrids = [k for k in order if k.startswith("hybrid@")]
  if not hybrids:
    return []
  hybrid = "hybrid@0.5" if "hybrid@0.5" in hybrids else hybrids[0]
  out = []
  for target in targets:
    for baseline in order:
      if baseline.startswith("hybrid@") or is_robust(baseline):
        continue  # robust fine-tuning methods are compared in their own family
      value = target.value
      a = {s: v for s, v in _per_seed(by_strategy[hybrid], value).items() if v is not None}
      if baseline == "none":  # the starting model has one deterministic result
        start_values = [value(r) for r in by_strategy["none"] if value(r) is not None]
        b = {s: start_values[0] for s in a} if start_values else {}
      else:
        b = {s: v for s, v in _per_seed(by_strategy[baseline], value).items() if v is not None}
      out.append({"hybrid": hybrid, "baseline": baseline, "target": target.label,
                  "benchmark": target.benchmark, "setting": target.setting, "metric": target.metric,
                  "family": "planned" if target.planned else "exploratory",
                  "across_seeds": paired_seed_test(a, b),
                  "across_queries": _query_test(by_strategy[hybrid], by_strategy[baseline], target)})
  # Holm within each family (planned / exploratory) and each kind of test.
  for family in ("planned", "exploratory"):
    rows = [r for r in out if r["family"] == family]
    for kind in ("across_seeds", "across_queries"):
      for row, p in zip(rows, holm([r[kind]["p_value"] for r in rows])):
        row[kind]["p_holm"] = p
  return out


def _per_query_table(pq, setting, metric):
  """{unit: [values]} of one setting and metric (None where absent); "gap" = native - translated."""
  if setting == "gap":
    native, translated = (_per_query_table(pq, s, metric) for s in ("native", "translated"))
    if not native or not translated or set(native) != set(translated) or any(
        len(native[u]) != len(translated[u]) for u in native):
      return None
    return {u: (np.asarray(native[u], np.float64) - np.asarray(translated[u], np.float64)).tolist()
            for u in native}
  if metric == "map":
    return pq.get(setting)
  return ((pq.get("by_metric") or {}).get(metric) or {}).get(setting)


def _query_units(run, benchmark, setting, metric="map", languages=None):
  """One run's per-query values as (values, strata, groups, unit), or (None, .., reason).

  Strata are the languages (or pairs) the macro average runs over. Groups are
  questions: `per_query[benchmark]["qids"][setting][language]` when present (for a
  non-parallel benchmark the pair (language, id), since its ids are not shared
  across languages: AfriQA numbers each language's questions from 0); else, for a
  parallel benchmark whose lists all have one length, the position (XQuAD-R's files
  hold the same ids in the same order); else each query alone for a non-parallel
  benchmark (TyDi, MIRACL).
  """
  pq = (run.get("per_query") or {}).get(benchmark) or {}
  table = _per_query_table(pq, setting, metric)
  if table and languages is not None:  # a macro over some languages (e.g. the unseen ones)
    table = {u: v for u, v in table.items() if u in languages}
  if not table:
    return None, None, None, "no per-query values"
  units = sorted(table)
  sizes = [len(table[u]) for u in units]
  values = np.concatenate([np.asarray(table[u], np.float64) for u in units])
  strata = np.repeat(np.arange(len(units)), sizes)
  qids = (pq.get("qids") or {}).get("native" if setting == "gap" else setting) or {}
  parallel = benchmark in PARALLEL_BENCHMARKS
  if qids and all(len(qids.get(u, ())) == n for u, n in zip(units, sizes)):
    groups = np.concatenate([np.asarray([q if parallel else f"{u}\x1f{q}" for q in map(str, qids[u])],
                                        dtype=object) for u in units]).astype(str)
    return values, strata, groups, "question id"
  if not parallel:
    return values, strata, np.arange(values.size), "query"
  if len(set(sizes)) == 1:
    return values, strata, np.concatenate([np.arange(n) for n in sizes]), "question (position)"
  return None, None, None, "parallel benchmark without question ids: no grouping"


def _query_test(runs_a, runs_b, target: Target):
  """Grouped, language-stratified sign-flip test on per-query values averaged over seeds."""
  parts = [_query_units(r, target.benchmark, target.setting, target.metric, target.languages)
           for r in list(runs_a) + list(runs_b)]
  bad = next((p[3] for p in parts if p[0] is None), None)
  first = parts[0] if parts else (None,) * 4
  if bad is None and parts and not all(
      np.array_equal(p[1], first[1]) and np.array_equal(p[2], first[2]) for p in parts):
    bad = "runs hold different queries"
  if bad is not None or not parts:
    return {"n": 0, "groups": 0, "mean_diff": None, "p_value": None, "note": bad or "no runs"}
  a = np.mean([p[0] for p in parts[:len(runs_a)]], axis=0)
  b = np.mean([p[0] for p in parts[len(runs_a):]], axis=0)
  return {**paired_query_test(a, b, groups=first[2], strata=first[1]), "unit": first[3]}


# ----------------------------------------------------------------------------
# Markdown


def fmt(cell: dict | float | None, digits: int = 3) -> str:
  """'0.712 ± 0.004' from a mean_interval dict; '–' when missing."""
  if isinstance(cell, dict):
    if cell.get("mean") is None:
      return "–"
    text = f"{cell['mean']:.{digits}f}"
    if cell.get("ci95") is not None:
      text += f" ± {cell['ci95']:.{digits}f}"
    return text
  return report.fmt(None if cell is None else float(cell), digits, missing="–")


def fmt_signed(cell: dict | None, digits: int = 3) -> str:
  """'+0.012 ± 0.004' for changes."""
  if not cell or cell.get("mean") is None:
    return "–"
  text = f"{cell['mean']:+.{digits}f}"
  if cell.get("ci95") is not None:
    text += f" ± {cell['ci95']:.{digits}f}"
  return text


def fmt_p(p: float | None) -> str:
  """'0.0123'; 'n/a' where no p-value exists (too few seeds, zero variance, no grouping)."""
  return "n/a" if p is None else f"{p:.4f}"


def _settings_markdown(results: dict) -> list[str]:
  """Per benchmark: what the starting model's evaluation recorded (every run is evaluated
  with the same settings: provenance), and how many texts were cut."""
  start = next((r for r in results.get("runs", []) if r.get("sampling") == "none"),
               (results.get("runs") or [None])[0])
  if not start:
    return []
  lines = ["", "Evaluation settings (as recorded by each evaluation):", "",
           "| benchmark | split | languages | questions | candidates | max tokens | documents kept "
           "per language | texts cut at max tokens |", "|---|---|---|---|---|---|---|---|"]
  for name, metrics in start["metrics"].items():
    o = metrics.get("options", {})
    cut = o.get("truncated") or {}
    cut_text = ", ".join(f"{kind} {c['truncated']} of {c['texts']}" for kind, c in cut.items()
                         ) or "not recorded"
    lines.append(f"| {name} | {o.get('split', '?')} | {len(metrics.get('languages', []))} | "
                 f"{sum((o.get('questions') or {}).values())} | "
                 f"{sum((o.get('candidates') or {}).values())} | {o.get('max_length', '?')} | "
                 f"{o.get('max_documents') or 'all'} | {cut_text} |")
  return lines


def _untested_notes(rows, names) -> list[str]:
  """One line per distinct reason a row's query test has no p-value."""
  reasons = {}
  for row in rows:
    q = row["across_queries"]
    if q.get("p_value") is None:
      reasons.setdefault(q.get("note") or "no per-query values", []).append(
          f"{' vs '.join(names(row))}, {row['target']}")
  return [""] + [f"- Query test n/a ({reason}): {'; '.join(where)}"
                 for reason, where in reasons.items()] if reasons else []


def render_markdown(results: dict) -> str:
  """The study report; every number is read from `results` (results.json)."""
  s = results["summary"]
  bench = s["lareqa"]["benchmark"]
  lines = [f"# Hybrid-batch study: preset `{results['preset']}`, fold {results['fold']}", ""]
  if results.get("note"):
    lines += [f"> {results['note']}", ""]
  lines += [
      f"- model: `{results['model']}`; training languages: {', '.join(results['train_languages'])}",
      f"- seeds: {results['seeds']}; steps per run: {results['train_overrides'].get('total_steps')}; "
      f"batch size: {results['train_overrides'].get('batch_size')}",
      "- evaluated: " + "; ".join(f"{b} ({', '.join(ls)})" for b, ls in results["eval_languages"].items()),
      f"- machine: {results.get('machine', '?')}; wall time: {results.get('wall_time_s', 0) / 60:.1f} min",
      f"- command: `{results.get('command', '')}`",
      *_settings_markdown(results),
      "",
      f"## {bench}: paper-style table (mean ± 95% interval over seeds)",
      "",
      "| strategy | seeds | " + " | ".join(c[0] for c in LAREQA_COLUMNS) + " |",
      "|---|---|" + "---|" * len(LAREQA_COLUMNS),
  ]
  for key in s["strategies"]:
    row = s["lareqa"]["table"][key]
    n = max(c["n"] for c in row.values())
    lines.append(f"| {s['labels'][key]} | {n} | " + " | ".join(
        fmt(row[c[0]], 1 if c[2] == "language_bias" else 3) for c in LAREQA_COLUMNS) + " |")
  col = {"xquad_r": (2, 3, 4, 8), "mlqa_r": (5, 6, 7, 9)}.get(bench)
  if col and results.get("paper_numbers"):
    lines += ["", f"The paper's numbers on {bench} (fine-tuned XLM-R / LaBSE on in-house "
              "translations; compare direction, not level):", "",
              "| model | strategy | mono mAP | cross mAP | multi mAP | bias |", "|---|---|---|---|---|---|"]
    for p in results["paper_numbers"]:
      lines.append(f"| {p[0]} | {p[1]} | {p[col[0]]:.3f} | {p[col[1]]:.3f} | {p[col[2]]:.3f} | {p[col[3]]:.1f} |")

  lines += _tydi_markdown(s, s["tydi"], "TyDi QA GoldP: robustness across languages",
                          "Pooled (multilingual) TyDi corpus:")
  if s.get("tydi_sentences"):
    lines += _tydi_markdown(s, s["tydi_sentences"],
                            "TyDi QA GoldP sentences: robustness across languages",
                            "Pooled nine-language sentence corpus:",
                            "Candidates are the sentences of each language's gold passages; the "
                            "relevant one holds the answer start.")
  if s.get("afriqa"):
    lines += _afriqa_markdown(s, s["afriqa"])

  if s["significance"]:
    planned = sorted({r["target"] for r in s["significance"] if r["family"] == "planned"})
    hybrids = sorted({strategy_label(r["hybrid"]) for r in s["significance"]})
    baselines = sorted({strategy_label(r["baseline"]) for r in s["significance"]})
    lines += ["", "## Hybrid against each baseline (paired tests)", "",
              f"Planned comparisons: {', '.join(hybrids)} against each baseline "
              f"({', '.join(baselines)}) on {' and '.join(planned)}; "
              "the other rows are exploratory. Across seeds: paired t-test on the macro score per "
              "seed (n/a at zero variance). Across queries: sign-flip permutation test on per-query "
              "values of the row's metric (AP; AfriQA: nDCG@10, for the gap native minus translated) "
              "averaged over seeds, with the question as the unit (its parallel copies or "
              "language pairs flip sign together) and the row's macro average over languages as "
              "the statistic. Holm-adjusted p-values within each family (planned, exploratory) "
              "and kind of test (seeds, queries). Where a query test has no p-value, the note "
              "below the table says why.", "",
              "| hybrid | baseline | target | family | seeds | diff (seeds) | p (seeds) | Holm p (seeds) "
              "| questions | diff (queries) | p (queries) | Holm p (queries) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in s["significance"]:
      a, q = row["across_seeds"], row["across_queries"]
      lines.append(f"| {strategy_label(row['hybrid'])} | {strategy_label(row['baseline'])} | {row['target']} | "
                   f"{row['family']} | {a['n']} | {fmt(a['mean_diff'], 4)} | {fmt_p(a['p_value'])} | "
                   f"{fmt_p(a.get('p_holm'))} | {q.get('groups', 0)} | {fmt(q['mean_diff'], 4)} | "
                   f"{fmt_p(q['p_value'])} | {fmt_p(q.get('p_holm'))} |")
    lines += _untested_notes(s["significance"], lambda r: (strategy_label(r["hybrid"]),
                                                          strategy_label(r["baseline"])))
  if s.get("robust"):
    lines += _robust_markdown(s, s["robust"], bench)
  if results.get("plots"):
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]]
  return "\n".join(lines) + "\n"


def _tydi_markdown(s: dict, t: dict, title: str, pooled_title: str, intro: str = "") -> list[str]:
  """Per-language table, change against the start and the pooled setting of one TyDi section."""
  langs = t["languages"]
  lines = ["", f"## {title}", ""]
  if intro:
    lines += [intro, ""]
  lines += [f"Per-language {t['metric']} (mean ± 95% interval over seeds). Seen in training: "
            f"{', '.join(t['seen']) or 'none'}; unseen: {', '.join(t['unseen']) or 'none'}.", "",
            "| strategy | " + " | ".join(langs) + " | macro | worst (lang) | spread max-min | std | seen | unseen |",
            "|---|" + "---|" * (len(langs) + 6)]
  for key in s["strategies"]:
    e = t["per_strategy"].get(key)
    if not e:
      continue
    lines.append(f"| {s['labels'][key]} | " + " | ".join(fmt(e["per_language"][l]) for l in langs)
                 + f" | {fmt(e['macro'])} | {fmt(e['worst_score'])} ({e['worst_language']}) | "
                 f"{fmt(e['spread_max_minus_min'])} | {fmt(e['spread_std'])} | "
                 f"{fmt(e['seen_mean'])} | {fmt(e['unseen_mean'])} |")
  if any("delta_vs_start" in e for e in t["per_strategy"].values()):
    lines += ["", "Change against the starting model (positive = better):", "",
              "| strategy | " + " | ".join(langs) + " | macro |", "|---|" + "---|" * (len(langs) + 1)]
    for key in s["strategies"]:
      e = t["per_strategy"].get(key)
      if key == "none" or not e or "delta_vs_start" not in e:
        continue
      lines.append(f"| {s['labels'][key]} | " + " | ".join(
          fmt_signed(e["delta_vs_start"][l]) for l in langs)
          + f" | {fmt_signed(e['macro_delta_vs_start'])} |")
  lines += ["", pooled_title, "",
            "| strategy | multi mAP | share of top-10 in query language |", "|---|---|---|"]
  for key in s["strategies"]:
    e = t["per_strategy"].get(key)
    if e:
      lines.append(f"| {s['labels'][key]} | {fmt(e['multi_map'])} | {fmt(e['multi_top10_same_language'])} |")
  return lines


def _robust_markdown(s: dict, r: dict, bench: str) -> list[str]:
  """Robust fine-tuning: per method the seen / unseen scores and their change against the
  start, AfriQA, the LAReQA scores it keeps; its tests against the hybrid."""
  methods, per = r["methods"], r["per_method"]
  langs = r.get("languages", {})
  lines = ["", "## Robust fine-tuning", "",
           "Methods that keep the hybrid's training but pull the model back toward the start: "
           "WiSE-FT (weights (1 - lambda) * start + lambda * hybrid of the same seed, no "
           "training; lambda 0 = start, 1 = hybrid) and L2-SP (the hybrid trained with a pull "
           "(strength / 2) * ||theta - theta_start||^2). Mean ± 95% interval over seeds; "
           "change = against the starting model (positive = better)."]
  levels = [(name, title) for name, title in (("tydi", "TyDi passages"), ("tydi_sentences", "TyDi sentences"))
            if name in langs]
  if levels:
    lines += ["", "TyDi mono mAP by language group (" + "; ".join(
        f"{title}: seen {', '.join(langs[n]['seen']) or 'none'}, unseen {', '.join(langs[n]['unseen']) or 'none'}"
        for n, title in levels) + "):", ""]
    header, rule = "| method | seeds |", "|---|---|"
    for _, title in levels:
      header += f" {title} seen | change | {title} unseen | change |"
      rule += "---|" * 4
    lines += [header, rule]
    for key in methods:
      e = per[key]
      n = max((e[f"{name}_{part}"]["score"]["n"] for name, _ in levels for part in ("seen", "unseen")), default=0)
      row = f"| {s['labels'][key]} | {n} |"
      for name, _ in levels:
        for part in ("seen", "unseen"):
          cell = e[f"{name}_{part}"]
          row += f" {fmt(cell['score'])} | {fmt_signed(cell['delta_vs_start'])} |"
      lines.append(row)
  afriqa = any("afriqa_native" in per[k] for k in methods)
  lines += ["", f"AfriQA (every language unseen) and the {bench} scores each method keeps "
            "(multi gain kept: the method's multi mAP gain over the start as a share of the "
            "hybrid's, on the means):", "",
            "| method |" + (" AfriQA native nDCG@10 | change |" if afriqa else "")
            + " cross mAP | multi mAP | multi gain kept | bias |",
            "|---|" + ("---|---|" if afriqa else "") + "---|---|---|---|"]
  for key in methods:
    e = per[key]
    row = f"| {s['labels'][key]} |"
    if afriqa:
      cell = e.get("afriqa_native") or {}
      row += f" {fmt(cell.get('score'))} | {fmt_signed(cell.get('delta_vs_start'))} |"
    kept = e.get("multi_gain_kept")
    row += (f" {fmt(e['cross mAP'])} | {fmt(e['multi mAP'])} | {fmt(kept)} | "
            f"{fmt(e['bias'], 1)} |")
    lines.append(row)
  if r.get("tests"):
    lines += ["", f"Each robust method against {strategy_label(r['base'])} (exploratory family; "
              "paired t-test over seeds, grouped sign-flip test over questions, the question "
              "as the unit, per-query values averaged over seeds; Holm-adjusted within this "
              "family and kind of test). The unseen-language target is the macro over the "
              "unseen TyDi languages; its difference equals the difference of the changes "
              "against the start.", "",
              "| method | against | target | seeds | diff (seeds) | p (seeds) | Holm p (seeds) "
              "| questions | diff (queries) | p (queries) | Holm p (queries) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["tests"]:
      a, q = row["across_seeds"], row["across_queries"]
      lines.append(f"| {strategy_label(row['method'])} | {strategy_label(row['against'])} | "
                   f"{row['target']} | {a['n']} | {fmt(a['mean_diff'], 4)} | {fmt_p(a['p_value'])} | "
                   f"{fmt_p(a.get('p_holm'))} | {q.get('groups', 0)} | {fmt(q['mean_diff'], 4)} | "
                   f"{fmt_p(q['p_value'])} | {fmt_p(q.get('p_holm'))} |")
    lines += _untested_notes(r["tests"], lambda t: (strategy_label(t["method"]),
                                                    strategy_label(t["against"])))
  return lines


def _afriqa_markdown(s: dict, a: dict) -> list[str]:
  """AfriQA: native, translated and gap per language; change against the start."""
  langs, metric = a["languages"], a["metric"]
  lines = ["", "## AfriQA: native against translated questions", "",
           f"Per-language {metric} of the native questions and of their human translations "
           "(English; French for fon) against the same gold passages, and the gap native - "
           "translated (negative = the model loses by the question being in the African "
           "language); mean ± 95% interval over seeds. Every AfriQA language is unseen by "
           f"training: {', '.join(a['unseen'])}."]
  titles = {"native": f"Native questions, {metric}:", "translated": f"Translated questions, {metric}:",
            "gap": f"Gap native - translated, {metric}:"}
  for view in ("native", "translated", "gap"):
    lines += ["", titles[view], "",
              "| strategy | " + " | ".join(langs) + " | macro | worst (lang) | spread max-min |",
              "|---|" + "---|" * (len(langs) + 3)]
    for key in s["strategies"]:
      e = (a["per_strategy"].get(key) or {}).get(view)
      if not e:
        continue
      show = fmt_signed if view == "gap" else fmt
      lines.append(f"| {s['labels'][key]} | " + " | ".join(show(e["per_language"][l]) for l in langs)
                   + f" | {show(e['macro'])} | {show(e['worst_score'])} ({e['worst_language']}) | "
                   f"{fmt(e['spread_max_minus_min'])} |")
  if any("delta_vs_start" in v["native"] for v in a["per_strategy"].values()):
    lines += ["", f"Change of native {metric} against the starting model (positive = better); "
              "last columns: change of the macro translated score and of the macro gap:", "",
              "| strategy | " + " | ".join(langs) + " | macro native | macro translated | macro gap |",
              "|---|" + "---|" * (len(langs) + 3)]
    for key in s["strategies"]:
      e = a["per_strategy"].get(key)
      if key == "none" or not e or "delta_vs_start" not in e["native"]:
        continue
      lines.append(f"| {s['labels'][key]} | " + " | ".join(
          fmt_signed(e["native"]["delta_vs_start"][l]) for l in langs)
          + f" | {fmt_signed(e['native']['macro_delta_vs_start'])} | "
          f"{fmt_signed(e['translated']['macro_delta_vs_start'])} | "
          f"{fmt_signed(e['gap']['macro_delta_vs_start'])} |")
  return lines


# ----------------------------------------------------------------------------
# Plots


def _per_language_plot(plt, s: dict, t: dict, title: str, path) -> bool:
  """Change against the starting model per language where there is one, else the scores;
  points with 95% intervals on an axis fitted to them, the legend outside the axes."""
  delta = any("delta_vs_start" in e for k, e in t["per_strategy"].items() if k != "none")
  field = "delta_vs_start" if delta else "per_language"
  keys = [k for k in s["strategies"] if field in t["per_strategy"].get(k, {}) and not (delta and k == "none")]
  if not keys or not t["languages"]:
    return False
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(t["languages"]) + 2), 3.5))
  x = np.arange(len(t["languages"]))
  offsets = np.linspace(-0.3, 0.3, len(keys)) if len(keys) > 1 else [0.0]
  for off, key in zip(offsets, keys):
    cells = [t["per_strategy"][key][field][l] for l in t["languages"]]
    ax.errorbar(x + off, [c["mean"] for c in cells], yerr=[c["ci95"] or 0 for c in cells],
                fmt="o", capsize=3, label=s["labels"][key])
  if delta:
    ax.axhline(0.0, color="grey", linewidth=0.8)
  ax.set_xticks(x, t["languages"])
  ax.set_ylabel(f"change in {t['metric']}" if delta else t["metric"])
  ax.set_title(f"{title} per language" + (": change against the starting model" if delta else ""))
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return True


def _robust_tradeoff_plot(plt, s: dict, path) -> bool:
  """x: LAReQA multi mAP, y: change of unseen-language TyDi mono mAP against the start; one
  point per method with 95% intervals on both axes, the WiSE-FT points joined as a curve
  from lambda 0 (the start) to 1 (the hybrid)."""
  r = s["robust"]
  if "tydi" not in r.get("languages", {}) or not r["languages"]["tydi"]["unseen"]:
    return False

  def point(key):
    e = r["per_method"][key]
    x, y = e["multi mAP"], e["tydi_unseen"]["delta_vs_start"]
    if not y or x["mean"] is None or y["mean"] is None:
      return None
    return x["mean"], y["mean"], x["ci95"] or 0.0, y["ci95"] or 0.0

  fig, ax = plt.subplots(figsize=(6, 4))
  curve = [k for k in ("none",) if k in r["per_method"]]
  curve += [k for k in r["methods"] if key_kind(k) == "wise"]
  curve += [r["base"]] if r["base"] in r["per_method"] else []
  curve_points = [p for p in map(point, curve) if p]
  if len(curve_points) >= 2:
    ax.plot([p[0] for p in curve_points], [p[1] for p in curve_points], "-", color="grey",
            linewidth=1, zorder=1, label="WiSE-FT curve (lambda 0 = start ... 1 = hybrid)")
  plotted = 0
  for key in r["methods"]:
    p = point(key)
    if p is None:
      continue
    ax.errorbar(p[0], p[1], xerr=p[2], yerr=p[3], fmt="o", capsize=3, zorder=2,
                label=s["labels"][key])
    plotted += 1
  if not plotted:
    plt.close(fig)
    return False
  ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
  ax.set_xlabel(f"{s['lareqa']['benchmark']} multi mAP")
  ax.set_ylabel("unseen-language TyDi mono mAP\nchange against the start")
  ax.set_title("Robust fine-tuning: unseen languages against multilingual gain", fontsize=9)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return True


def write_plots(results: dict, out_dir) -> list[str]:
  """Per-language change against the start (TyDi passages and sentences, AfriQA native),
  language bias per strategy, mAP vs alpha."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import pathlib
  out_dir = pathlib.Path(out_dir)
  s, written = results["summary"], []

  per_language = [(s["tydi"], "TyDi QA GoldP", "tydi_per_language.png")]
  if s.get("tydi_sentences"):
    per_language.append((s["tydi_sentences"], "TyDi QA GoldP sentences",
                         "tydi_sentences_per_language.png"))
  if s.get("afriqa"):
    a = s["afriqa"]  # the native questions' scores
    per_language.append(({"languages": a["languages"], "metric": f"native {a['metric']}",
                          "per_strategy": {k: v["native"] for k, v in a["per_strategy"].items()}},
                         "AfriQA (native questions)", "afriqa_per_language.png"))
  for section, title, name in per_language:
    if _per_language_plot(plt, s, section, title, out_dir / name):
      written.append(name)

  table = s["lareqa"]["table"]
  bias = [(s["labels"][k], table[k]["bias"]) for k in s["strategies"] if table[k]["bias"]["mean"] is not None]
  if bias:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([b[0] for b in bias], [b[1]["mean"] for b in bias], yerr=[b[1]["ci95"] or 0 for b in bias])
    ax.set_ylabel("language bias (lower is better)")
    ax.set_title(f"{s['lareqa']['benchmark']} language bias")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "language_bias.png", dpi=120)
    plt.close(fig)
    written.append("language_bias.png")

  if s.get("robust") and _robust_tradeoff_plot(plt, s, out_dir / "robust_tradeoff.png"):
    written.append("robust_tradeoff.png")

  # mAP vs alpha: alpha=1 is X-X-mono, alpha=0 is X-Y, between are hybrids.
  points = []
  for key in s["strategies"]:
    mode = sampler.SAMPLING_MODES.get(key_kind(key))
    alpha = None if mode is None else (key_value(key) if mode.uses_alpha else mode.alpha_axis)
    if alpha is not None:
      points.append((alpha, key))
  if len({a for a, _ in points}) >= 3:
    points.sort()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for setting in ("mono mAP", "cross mAP", "multi mAP"):
      cells = [table[k][setting] for _, k in points]
      ax.errorbar([a for a, _ in points], [c["mean"] for c in cells],
                  yerr=[c["ci95"] or 0 for c in cells], marker="o", label=setting)
    ax.set_xlabel("alpha (share of X-X-mono batches)")
    ax.set_ylabel("mAP")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(out_dir / "map_vs_alpha.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append("map_vs_alpha.png")
  return written
