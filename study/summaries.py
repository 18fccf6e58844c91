"""Every number a study's report shows, computed from its runs (numbers only, no text).

Input is the list of runs the driver assembles: each run has `sampling` (mono, cross,
hybrid, mixed, or none for the starting model), `alpha`, `seed`, for robust fine-tuning
`method` ("wise" with `lambda`, "l2sp" with `l2sp`; `study.methods`), and
`metrics[benchmark]` in the `eval.run` JSON shape, plus optional per-query values
(`per_query[benchmark]`, see `study.comparisons`).

What is summarised per benchmark is declared by its registry entry (`eval.benchmarks`:
`study` sections and `targets`); the code here is generic over the section layouts:
"lareqa" (the paper-style table), "languages" (one score per language) and "views"
(several settings per language).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from eval import benchmarks
from study import comparisons, methods
from study.statistics import mean_interval

# The paper-style columns: (label, setting, metric). None setting = language bias.
LAREQA_COLUMNS = [
    ("mono mAP", "mono", "map"), ("cross mAP", "cross", "map"),
    ("multi mAP", "multi", "map"), ("mono R@1", "mono", "r@1"),
    ("cross R@1", "cross", "r@1"), ("multi R@10", "multi", "r@10"),
    ("bias", None, "language_bias"),
]


def sections(benchmark_names) -> list[tuple[str, benchmarks.StudySection]]:
  """(benchmark, section) of every registry-declared study section, in benchmark order."""
  return [(name, section) for name in benchmark_names if name in benchmarks.BENCHMARKS
          for section in benchmarks.BENCHMARKS[name].study]


def summarize(runs: list[dict], *, lareqa_benchmark: str, train_languages: list[str],
              margin: float = 0.01) -> dict[str, Any]:
  """Every number the report shows: the paper-style table of the fold's LAReQA benchmark,
  a section per declared section of every other evaluated benchmark, the paired tests of
  the hybrid against each baseline (equivalence at +-`margin`, stated before the data), the
  trend in alpha, each trained run's selected checkpoint, and the robust fine-tuning arm
  when the runs hold it."""
  by_strategy: dict[str, list[dict]] = {}
  for run in runs:
    by_strategy.setdefault(methods.strategy_key(run), []).append(run)
  order = methods.strategy_order(by_strategy)
  summary: dict[str, Any] = {"strategies": order,
                             "labels": {k: methods.strategy_label(k) for k in order}}
  summary["lareqa"] = {"benchmark": lareqa_benchmark,
                       "table": _lareqa_table(by_strategy, order, lareqa_benchmark)}
  evaluated = list(dict.fromkeys(b for r in runs for b in r["metrics"]))
  for name, section in sections(evaluated):
    if section.layout == "languages":
      summary[section.key] = _languages_section(by_strategy, order, name, section, train_languages)
    elif section.layout == "views":
      summary[section.key] = _views_section(by_strategy, order, name, section)
  targets = [t for t in comparisons.targets(lareqa_benchmark, evaluated)  # with a value somewhere
             if any(t.value(r) is not None for r in runs)]
  summary["alpha_trends"] = comparisons.alpha_trends(by_strategy, order, targets)
  summary["significance"] = comparisons.significance(by_strategy, order, targets, margin,
                                                     summary["alpha_trends"])
  summary["equivalence_margin"] = margin
  summary["checkpoints"] = selected_checkpoints(runs)
  if any(methods.is_robust(k) for k in order):
    summary["robust"] = _robust_section(by_strategy, order, summary)
  return summary


def selected_checkpoints(runs) -> dict[str, dict]:
  """Per trained run: the step whose weights were evaluated (the best validation loss's
  with early stopping, else the last) and the pairs the model had seen by then."""
  out = {}
  for run in runs:
    train = run.get("train")
    if not train:
      continue
    best = train.get("best_validation") or {}
    step = best.get("step", train.get("final_step"))
    batch = ((run.get("provenance") or {}).get("train_config") or {}).get("batch_size")
    out[run["run_id"]] = {"step": step, "final_step": train.get("final_step"),
                          "pairs_seen": step * batch if step is not None and batch else None}
  return out


# ----------------------------------------------------------------------------
# Sections by layout


def _lareqa_value(metrics: dict, setting: str | None, metric: str) -> float | None:
  if setting is None:
    return (metrics.get("language_bias") or {}).get("macro")
  return metrics["settings"].get(setting, {}).get("macro", {}).get(metric)


def _lareqa_table(by_strategy, order, benchmark) -> dict[str, dict]:
  """Per strategy and paper-style column: mean and 95% interval over seeds."""
  table = {}
  for key in order:
    table[key] = {label: mean_interval(_lareqa_value(r["metrics"][benchmark], setting, metric)
                                       for r in by_strategy[key] if benchmark in r["metrics"])
                  for label, setting, metric in LAREQA_COLUMNS}
  return table


def _first_languages(runs, benchmark, setting):
  for r in runs:
    if benchmark in r["metrics"]:
      return list(r["metrics"][benchmark]["settings"][setting]["per_language"])
  return []


def _robustness(rows: list[dict[str, float]], languages, seen, unseen, start_scores,
                groups=None) -> dict:
  """Per-language means over seeds (rows: one {language: score} per seed), change against
  the start, the worst language of the means, spread, macro, seen / unseen and group means."""
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
  if groups:
    entry["groups"] = {g: mean_interval(float(np.mean([x[l] for l in ls])) for x in rows)
                       for g, ls in groups.items()}
    if start_scores is not None:
      entry["groups_delta_vs_start"] = {
          g: mean_interval(float(np.mean([x[l] - start_scores[l] for l in ls])) for x in rows)
          for g, ls in groups.items()}
  return entry


def _start_scores(rows):
  if not rows:
    return None
  return {l: float(np.mean([s[l] for s in rows])) for l in rows[0]}


def _groups(benchmark: str, languages) -> dict[str, list[str]]:
  """The registry's named language groups, restricted to the evaluated languages."""
  groups = {g: [l for l in ls if l in languages]
            for g, ls in benchmarks.BENCHMARKS[benchmark].groups.items()}
  return {g: ls for g, ls in groups.items() if ls}


def _languages_section(by_strategy, order, benchmark, section, train_languages) -> dict[str, Any]:
  """One score per language (`section.setting`, `section.metric`) with its robustness
  summary, plus the pooled `multi` setting when the section declares one."""
  runs = {k: [r for r in v if benchmark in r["metrics"]] for k, v in by_strategy.items()}
  languages = _first_languages([r for v in runs.values() for r in v], benchmark, section.setting)
  seen = [l for l in languages if l in train_languages]
  unseen = [l for l in languages if l not in train_languages]
  groups = _groups(benchmark, languages)

  def per_language(run):  # {lang: score}
    block = run["metrics"][benchmark]["settings"][section.setting]["per_language"]
    return {l: block[l][section.metric] for l in languages}

  start_scores = _start_scores([per_language(r) for r in runs.get("none", [])])
  out: dict[str, Any] = {"benchmark": benchmark, "metric": f"{section.setting} {section.metric}",
                         "languages": languages, "seen": seen, "unseen": unseen,
                         "per_strategy": {}}
  if groups:
    out["groups"] = groups
  for key in order:
    rows = [per_language(r) for r in runs.get(key, [])]
    if not rows:
      continue
    entry = _robustness(rows, languages, seen, unseen, start_scores, groups)
    if section.pooled:
      multi = [r["metrics"][benchmark]["settings"].get("multi", {}).get("macro", {}) for r in runs[key]]
      entry["multi_map"] = mean_interval(m.get("map") for m in multi)
      entry["multi_top10_same_language"] = mean_interval(m.get("top10_same_language") for m in multi)
    out["per_strategy"][key] = entry
  return out


def _views_section(by_strategy, order, benchmark, section) -> dict[str, Any]:
  """Per language and view (a setting, or "gap" = the protocol's robustness_gap): scores,
  change against the start, worst language, spread; the benchmark's unseen languages."""
  runs = {k: [r for r in v if benchmark in r["metrics"]] for k, v in by_strategy.items()}
  languages = _first_languages([r for v in runs.values() for r in v], benchmark, section.views[0])
  metric = section.metric

  def views(run):  # {view: {lang: score}}
    m = run["metrics"][benchmark]
    return {v: {l: (m["robustness_gap"] if v == "gap" else m["settings"][v])["per_language"][l][metric]
                for l in languages} for v in section.views}

  unseen_all = set(benchmarks.BENCHMARKS[benchmark].unseen_languages)
  unseen = [l for l in languages if l in unseen_all]
  seen = [l for l in languages if l not in unseen_all]
  start = [views(r) for r in runs.get("none", [])]
  out: dict[str, Any] = {"benchmark": benchmark, "metric": metric, "languages": languages,
                         "seen": seen, "unseen": unseen, "per_strategy": {}}
  for key in order:
    rows = [views(r) for r in runs.get(key, [])]
    if rows:
      out["per_strategy"][key] = {
          v: _robustness([x[v] for x in rows], languages, seen, unseen,
                         _start_scores([x[v] for x in start]))
          for v in section.views}
  return out


# ----------------------------------------------------------------------------
# Robust fine-tuning: WiSE-FT and L2-SP against the hybrid they start from


def _seen_unseen(run, benchmark, languages):
  """Macro mono mAP of a TyDi benchmark over `languages` (None if not evaluated)."""
  m = run["metrics"].get(benchmark)
  if m is None or not languages:
    return None
  per_language = m["settings"]["mono"]["per_language"]
  return float(np.mean([per_language[l]["map"] for l in languages]))


# The robust arm's goal: every low-resource language within this of the start (mean change
# over seeds, in the section's metric) while keeping this share of the hybrid's multi gain.
GOAL_LOW_RESOURCE_DROP = 0.01
GOAL_GAIN_KEPT = 0.9


def _robust_goal(section: dict, summary: dict, keys) -> None:
  """Per method: the worst mean change against the start among the low-resource languages
  of every section that has that group (TyDi passages / sentences, NTREX), and whether the
  method meets the goal (every one within GOAL_LOW_RESOURCE_DROP, multi gain kept >=
  GOAL_GAIN_KEPT)."""
  sections = {k: v for k, v in summary.items()
              if isinstance(v, dict) and "low-resource" in (v.get("groups") or {})}
  section["goal"] = {"low_resource_drop": GOAL_LOW_RESOURCE_DROP, "gain_kept": GOAL_GAIN_KEPT,
                     "sections": list(sections)}
  for key in keys:
    entry = section["per_method"][key]
    worst = {}
    for name, t in sections.items():
      deltas = (t["per_strategy"].get(key) or {}).get("delta_vs_start") or {}
      values = [deltas[l]["mean"] for l in t["groups"]["low-resource"] if l in deltas]
      if values:
        worst[name] = float(min(values))
    entry["low_resource_worst_change"] = worst
    kept = entry.get("multi_gain_kept")
    entry["meets_goal"] = (None if key == "none" or not worst or kept is None else
                           bool(min(worst.values()) >= -GOAL_LOW_RESOURCE_DROP and kept >= GOAL_GAIN_KEPT))


def _with_delta(values: list[float], start: float | None) -> dict[str, Any]:
  """Mean and interval of per-seed values and of their change against the start's value."""
  values = [v for v in values if v is not None]
  return {"score": mean_interval(values),
          "delta_vs_start": mean_interval(v - start for v in values) if start is not None else None}


def _robust_section(by_strategy, order, summary) -> dict[str, Any]:
  """Per method (start, X-X-mono, X-Y, the hybrid the robust methods start from, each
  robust method): TyDi (passages, sentences) seen / unseen mono mAP and their change
  against the start, AfriQA native nDCG@10 and its change, the LAReQA cross / multi mAP
  and language bias, each over seeds; and each robust method against that hybrid
  (`comparisons.robust_tests`)."""
  robust = [k for k in order if methods.is_robust(k)]
  alphas = {r["alpha"] for k in robust for r in by_strategy[k]}
  hybrid = f"hybrid@{float(next(iter(alphas))):g}" if len(alphas) == 1 else None
  if hybrid not in by_strategy:
    hybrid = None
  keys = [k for k in order if k in ("none", "mono", "cross", hybrid) or methods.is_robust(k)]
  start_runs = by_strategy.get("none", [])
  section: dict[str, Any] = {"base": hybrid, "methods": keys, "per_method": {}}
  levels = {name: summary[name]["benchmark"] for name in ("tydi", "tydi_sentences") if summary.get(name)}
  for name in levels:
    section.setdefault("languages", {})[name] = {"seen": summary[name]["seen"],
                                                 "unseen": summary[name]["unseen"]}
  table = summary["lareqa"]["table"]
  afriqa = summary.get("afriqa")

  def start_value(fn):
    values = [fn(r) for r in start_runs]
    return values[0] if values and values[0] is not None else None

  def afriqa_native(run):
    m = run["metrics"].get(afriqa["benchmark"])
    return None if m is None else m["settings"]["native"]["macro"][afriqa["metric"]]

  for key in keys:
    runs = by_strategy[key]
    entry: dict[str, Any] = {}
    for name, benchmark in levels.items():
      for part in ("seen", "unseen"):
        langs = section["languages"][name][part]
        fn = lambda r, b=benchmark, ls=langs: _seen_unseen(r, b, ls)
        entry[f"{name}_{part}"] = _with_delta([fn(r) for r in runs], start_value(fn))
    if afriqa:
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
    for key in keys:
      mean = table[key]["multi mAP"]["mean"]
      section["per_method"][key]["multi_gain_kept"] = (
          (mean - start_multi) / gain if gain and mean is not None else None)

  _robust_goal(section, summary, keys)
  unseen = section.get("languages", {}).get("tydi", {}).get("unseen")
  section["tests"] = comparisons.robust_tests(
      by_strategy, robust, hybrid, summary["lareqa"]["benchmark"],
      levels.get("tydi"), unseen)
  return section
