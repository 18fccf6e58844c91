"""The study's comparisons: which macro scores (targets) the hybrid is compared on, and
the paired tests over seeds and over questions (Holm within each family).

Targets come from the registry (`eval.benchmarks`: each entry's `targets`), planned ones
first. The query-level test takes the question as the unit: per-query values of a run are
`per_query[benchmark][setting][language]` (one number per query, fixed order) with the
question ids in `per_query[benchmark]["qids"][setting][language]`; a benchmark whose
entry is `parallel` shares ids across languages, so a question and its translations flip
sign together.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from eval import benchmarks
from study import methods
from study.statistics import (alpha_trend, best_alpha, holm, paired_query_test,
                               paired_seed_test, tost_paired, verdict)


def _per_seed(runs, fn):
  return {r["seed"]: fn(r) for r in runs if r.get("seed") is not None}


def _evaluated(runs, benchmark) -> bool:
  return any(benchmark in r["metrics"] for r in runs)


@dataclasses.dataclass(frozen=True)
class Target:
  """One macro score that the hybrid is compared on. setting "gap" = AfriQA's
  robustness_gap (native - translated)."""
  benchmark: str
  setting: str
  metric: str
  label: str
  family: str  # "planned" (named before the data), "mid-resource", "exploratory"
  languages: tuple[str, ...] | None = None  # the macro over these languages only (None: all)

  def value(self, run) -> float | None:
    m = run["metrics"].get(self.benchmark)
    if m is None:
      return None
    if self.languages is not None:
      per_language = m["settings"].get(self.setting, {}).get("per_language", {})
      # the macro over those of `languages` that were evaluated
      values = [per_language[l].get(self.metric) for l in self.languages if l in per_language]
      return None if not values or None in values else float(np.mean(values))
    if self.setting == "gap":
      return (m.get("robustness_gap") or {}).get("macro", {}).get(self.metric)
    return m["settings"].get(self.setting, {}).get("macro", {}).get(self.metric)



def targets(lareqa_benchmark: str, evaluated) -> list[Target]:
  """The comparisons of the evaluated benchmarks (registry `targets`) in family order
  (`benchmarks.FAMILIES`); a LAReQA benchmark's only where it is the fold's in-domain one."""
  found = []
  for name in evaluated:
    bench = benchmarks.BENCHMARKS.get(name)
    if bench is None or (any(s.layout == "lareqa" for s in bench.study) and name != lareqa_benchmark):
      continue
    found += [Target(name, t.setting, t.metric, t.label.format(benchmark=name), t.family,
                     tuple(bench.groups[t.group]) if t.group else None)
              for t in bench.targets]
  return sorted(found, key=lambda t: benchmarks.FAMILIES.index(t.family))


def primary_hybrid(order) -> str | None:
  """The hybrid the strategies are compared against: alpha 0.5 when present."""
  hybrids = [k for k in order if k.startswith("hybrid@")]
  return None if not hybrids else ("hybrid@0.5" if "hybrid@0.5" in hybrids else hybrids[0])


def significance(by_strategy, order, targets, margin: float = 0.01, trends=()) -> list[dict]:
  """The primary hybrid against each baseline (the other strategies; the start in the "vs
  start" family) on each target: the effect with its 95% interval over seeds, the paired
  t-test, the equivalence test at +-`margin` (TOST), the question-level sign-flip test;
  Holm within each family and kind of test (the seed tests of a family together with the
  alpha trends of its targets, `alpha_trends`, whose `p_holm` is set here too); the verdict
  from the Holm-adjusted seed p-value."""
  hybrid = primary_hybrid(order)
  if hybrid is None:
    return []
  out = []
  for target in targets:
    for baseline in order:
      if baseline.startswith("hybrid@") or methods.is_robust(baseline):
        continue  # other alphas: the trend; robust fine-tuning: its own family
      value = target.value
      a = {s: v for s, v in _per_seed(by_strategy[hybrid], value).items() if v is not None}
      if baseline == "none":  # the starting model has one deterministic result
        start_values = [value(r) for r in by_strategy["none"] if value(r) is not None]
        b = {s: start_values[0] for s in a} if start_values else {}
      else:
        b = {s: v for s, v in _per_seed(by_strategy[baseline], value).items() if v is not None}
      out.append({"hybrid": hybrid, "baseline": baseline, "target": target.label,
                  "benchmark": target.benchmark, "setting": target.setting, "metric": target.metric,
                  "languages": list(target.languages) if target.languages else None,
                  "family": "vs start" if baseline == "none" else target.family,
                  "across_seeds": paired_seed_test(a, b),
                  "equivalence": tost_paired(a, b, margin),
                  "across_queries": _query_test(by_strategy[hybrid], by_strategy[baseline], target)})
  out.sort(key=lambda r: benchmarks.FAMILIES.index(r["family"]))  # stable: target order within
  for family in dict.fromkeys(r["family"] for r in out):
    members = [r for r in out if r["family"] == family]
    for row, p in zip(members, holm([r["across_queries"]["p_value"] for r in members])):
      row["across_queries"]["p_holm"] = p
    tests = [r["across_seeds"] for r in members] + [t["trend"] for t in trends if t["family"] == family]
    for test, p in zip(tests, holm([t["p_value"] for t in tests])):
      test["p_holm"] = p
  for row in out:
    seeds = row["across_seeds"]
    row["verdict"] = verdict(seeds, row["equivalence"], p_value=seeds.get("p_holm"))
  return out


def alpha_axis(key: str) -> float | None:
  """Where a strategy sits on the alpha axis (share of X-X-mono batches): X-Y 0, X-X-mono 1,
  hybrid its alpha; None off the axis (start, mixed, robust methods)."""
  from data_pipelines import sampler
  mode = sampler.SAMPLING_MODES.get(methods.key_kind(key))
  if mode is None:
    return None
  return methods.key_value(key) if mode.uses_alpha else mode.alpha_axis


def alpha_trends(by_strategy, order, targets) -> list[dict]:
  """Per target of the planned and mid-resource families: the seed-level slope of the target
  in alpha (95% interval, t-test over seeds; Holm within the family is applied by
  `significance`) and the best alpha with a bootstrap interval; only with three alphas or more."""
  axis = {k: alpha_axis(k) for k in order}
  keys = [k for k in order if axis[k] is not None]
  if len({axis[k] for k in keys}) < 3:
    return []
  out = []
  for target in targets:
    if target.family not in ("planned", "mid-resource"):
      continue
    values = {axis[k]: {s: v for s, v in _per_seed(by_strategy[k], target.value).items() if v is not None}
              for k in keys}
    out.append({"target": target.label, "benchmark": target.benchmark, "family": target.family,
                "trend": alpha_trend(values), "best_alpha": best_alpha(values)})
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
  paragraph clusters when `per_query[benchmark]["paragraphs"]` is present: questions that
  share a paragraph, joined with their parallel copies (`_clusters`); else questions:
  `per_query[benchmark]["qids"][setting][language]` when present (for a
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
  parallel = benchmarks.BENCHMARKS[benchmark].parallel if benchmark in benchmarks.BENCHMARKS else False
  if qids and all(len(qids.get(u, ())) == n for u, n in zip(units, sizes)):
    groups = np.concatenate([np.asarray([q if parallel else f"{u}\x1f{q}" for q in map(str, qids[u])],
                                        dtype=object) for u in units]).astype(str)
    paragraphs = (pq.get("paragraphs") or {}).get("native" if setting == "gap" else setting) or {}
    if paragraphs and all(len(paragraphs.get(u, ())) == n for u, n in zip(units, sizes)):
      para = np.concatenate([np.asarray(paragraphs[u], dtype=object) for u in units]).astype(str)
      return values, strata, _clusters(groups, para), "paragraph"
    return values, strata, groups, "question id"
  if not parallel:
    return values, strata, np.arange(values.size), "query"
  if len(set(sizes)) == 1:
    return values, strata, np.concatenate([np.arange(n) for n in sizes]), "question (position)"
  return None, None, None, "parallel benchmark without question ids: no grouping"


def _clusters(questions: np.ndarray, paragraphs: np.ndarray) -> np.ndarray:
  """Connected components of queries linked by a shared question id (parallel copies) or a
  shared paragraph: the units that are independent of each other (union-find)."""
  parent: dict[str, str] = {}

  def find(x):
    parent.setdefault(x, x)
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for q, p in zip(questions, paragraphs):
    a, b = find("q\x1f" + q), find("p\x1f" + p)
    if a != b:
      parent[max(a, b)] = min(a, b)
  return np.array([find("q\x1f" + q) for q in questions])


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


def robust_tests(by_strategy, robust, hybrid, lareqa_benchmark, tydi_benchmark, unseen) -> list[dict]:
  """Each robust method against its hybrid on the LAReQA multi mAP and, when TyDi was
  evaluated, the unseen-language TyDi mono mAP: exploratory, Holm within this family."""
  if not hybrid:
    return []
  found = [Target(lareqa_benchmark, "multi", "map", f"{lareqa_benchmark} multi mAP", False)]
  if unseen:
    found.insert(0, Target(tydi_benchmark, "mono", "map",
                           "TyDi mono mAP, unseen languages (change against the start)",
                           False, tuple(unseen)))
  tests = []
  for target in found:
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
  return tests
