"""The study report (markdown), rendered only from results.json: every number it shows is
one of the summary's (`study.summaries`); each benchmark's sections by the renderer of
their layout, in the order the study evaluated them.
"""
from __future__ import annotations

from eval import report
from study import summaries
from study.methods import strategy_label
from study.summaries import LAREQA_COLUMNS

# The paper's headline mAP numbers (arXiv 2408.10536, Tables 1-2; macro over languages).
PAPER_NUMBERS = [
    # model, sampling, xq mono, cross, multi, mlqa mono, cross, multi, bias xq, bias mlqa
    ("XLM-R", "X-X-mono", .792, .674, .547, .648, .584, .473, 410.2, 287.5),
    ("XLM-R", "X-Y", .755, .700, .593, .626, .620, .508, 295.4, 226.7),
    ("XLM-R", "Hybrid", .798, .705, .593, .648, .623, .512, 286.6, 227.1),
    ("LaBSE", "X-X-mono", .808, .752, .652, .681, .656, .550, 261.5, 225.3),
    ("LaBSE", "X-Y", .801, .762, .679, .671, .677, .576, 225.2, 198.3),
    ("LaBSE", "Hybrid", .817, .767, .682, .686, .681, .579, 221.1, 195.0),
]


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
      f"- machine: {results.get('machine', '?')}; wall time: {_wall_time(results)}",
      f"- command: `{results.get('command', '')}`",
      *_subsample_note(results),
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

  for _, section in summaries.sections(results["eval_languages"]):
    if s.get(section.key) and section.layout in RENDERERS:
      lines += RENDERERS[section.layout](s, s[section.key], section)

  lines += _comparisons_markdown(s)
  lines += _trends_markdown(s)
  lines += _checkpoints_markdown(s)
  if s.get("robust"):
    lines += _robust_markdown(s, s["robust"], bench)
  if results.get("plots"):
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]]
  return "\n".join(lines) + "\n"


def _wall_time(results: dict) -> str:
  """'12.0 min (this invocation 3.1 min; 23.4 min over 2 invocations)' or the one figure."""
  total = results.get("wall_time_s", 0) / 60
  if results.get("invocations", 1) <= 1 or "wall_time_last_s" not in results:
    return f"{total:.1f} min"
  return (f"{total:.1f} min over {results['invocations']} invocations "
          f"(the last {results['wall_time_last_s'] / 60:.1f} min)")


def _subsample_note(results: dict) -> list[str]:
  """One line at the top when the evaluation is not whole (a CPU preset's economy)."""
  o = results.get("eval_options") or {}
  parts = []
  if o.get("max_questions"):
    parts.append(f"the first {o['max_questions']} question ids per language")
  for name, cap in (o.get("max_documents") or {}).items():
    parts.append(f"{name}: the first {cap} passages per language")
  if not parts:
    return []
  return [f"- **subsampled evaluation** (not every question or passage): {'; '.join(parts)}"]


def _comparisons_markdown(s: dict) -> list[str]:
  """The hybrid against each baseline: effect and 95% interval over seeds, Holm within each
  family, equivalence (TOST) and the verdict; the question-level test beside it."""
  rows = s.get("significance") or []
  if not rows:
    return []
  margin = s.get("equivalence_margin", 0.01)
  hybrids = sorted({strategy_label(r["hybrid"]) for r in rows})
  families = list(dict.fromkeys(r["family"] for r in rows))
  lines = ["", "## Hybrid against each baseline (paired tests)", "",
           f"{', '.join(hybrids)} against each baseline on each target, one family of tests per "
           f"group of targets ({', '.join(families)}); the planned family holds the strategy "
           "contrasts on the targets named before the data (and the trend in alpha, below); "
           "the start is compared in its own family. Across seeds (the unit of replication): "
           "the mean paired difference with its 95% interval, the paired t-test and its "
           "Holm-adjusted p within the family, and the two one-sided tests (TOST) of "
           f"equivalence within ±{margin:g}. Verdict: better / worse when the Holm-adjusted "
           "seed test rejects at 0.05, equivalent when TOST rejects a difference of "
           f"±{margin:g} or more, else inconclusive (\"no difference\" is claimed only by "
           "TOST). Across queries (secondary): sign-flip permutation test on per-query values "
           "(AP; AfriQA nDCG@10; NTREX accuracy@1) averaged over seeds, the unit a cluster of "
           "questions sharing a paragraph with their parallel copies, the row's macro over "
           "languages as the statistic; Holm within the family.", "",
           "| hybrid | baseline | target | family | seeds | diff [95% CI] (seeds) | p | Holm p "
           "| TOST p | verdict | clusters | diff (queries) | p (queries) | Holm p (queries) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    a, q, e = row["across_seeds"], row["across_queries"], row.get("equivalence") or {}
    lines.append(f"| {strategy_label(row['hybrid'])} | {strategy_label(row['baseline'])} | "
                 f"{row['target']} | {row['family']} | {a['n']} | {_effect(a)} | "
                 f"{fmt_p(a['p_value'])} | {fmt_p(a.get('p_holm'))} | {fmt_p(e.get('p_value'))} | "
                 f"{row.get('verdict', 'n/a')} | {q.get('groups', 0)} | {fmt(q['mean_diff'], 4)} | "
                 f"{fmt_p(q['p_value'])} | {fmt_p(q.get('p_holm'))} |")
  return lines + _untested_notes(rows, lambda r: (strategy_label(r["hybrid"]),
                                                  strategy_label(r["baseline"])))


def _effect(test: dict, digits: int = 4) -> str:
  """'+0.0123 [+0.0050, +0.0196]' from a test's mean_diff and ci95; '–' when missing."""
  if test.get("mean_diff") is None:
    return "–"
  text = f"{test['mean_diff']:+.{digits}f}"
  if test.get("ci95"):
    lo, hi = test["ci95"]
    text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
  return text


def _trends_markdown(s: dict) -> list[str]:
  """The trend of each planned / mid-resource target in alpha and the best alpha."""
  trends = s.get("alpha_trends") or []
  if not trends:
    return []
  lines = ["", "## The trend in alpha", "",
           "Slope of each target against alpha (0 = X-Y, 1 = X-X-mono, hybrids between): per "
           "seed the least-squares slope over the alphas, then its mean with a 95% interval and "
           "a t-test over seeds (Holm within the family, with the strategy contrasts above). "
           "Best alpha: the highest mean, with a bootstrap interval over seeds.", "",
           "| target | family | seeds | slope [95% CI] | p | Holm p | best alpha [95% CI] |",
           "|---|---|---|---|---|---|---|"]
  for t in trends:
    trend, best = t["trend"], t["best_alpha"]
    effect = _effect({"mean_diff": trend.get("slope"), "ci95": trend.get("ci95")})
    interval = best.get("ci95") or [None, None]
    best_text = ("–" if best.get("best") is None else f"{best['best']:g}"
                 + (f" [{interval[0]:g}, {interval[1]:g}]" if interval[0] is not None else ""))
    lines.append(f"| {t['target']} | {t['family']} | {trend.get('n_seeds', 0)} | {effect} | "
                 f"{fmt_p(trend.get('p_value'))} | {fmt_p(trend.get('p_holm'))} | {best_text} |")
  return lines


def _checkpoints_markdown(s: dict) -> list[str]:
  """Which checkpoint of each trained run was evaluated, and the pairs it had seen."""
  checkpoints = s.get("checkpoints") or {}
  if not checkpoints:
    return []
  lines = ["", "## Evaluated checkpoints", "",
           "| run | evaluated step | last step | pairs seen by the evaluated step |", "|---|---|---|---|"]
  for rid, c in checkpoints.items():
    lines.append(f"| {rid} | {c['step']} | {c['final_step']} | {c['pairs_seen'] or '–'} |")
  return lines


def _languages_markdown(s: dict, t: dict, section) -> list[str]:
  """Layout "languages": per-language table (seen / unseen and group means), change against
  the start, and the pooled setting when the section declares one."""
  langs, groups = t["languages"], list(t.get("groups", {}))
  lines = ["", f"## {section.title}", ""]
  if section.intro:
    lines += [section.intro, ""]
  lines += [f"Per-language {t['metric']} (mean ± 95% interval over seeds). Seen in training: "
            f"{', '.join(t['seen']) or 'none'}; unseen: {', '.join(t['unseen']) or 'none'}."
            + "".join(f" {g}: {', '.join(ls)}." for g, ls in t.get("groups", {}).items()), "",
            "| strategy | " + " | ".join(langs) + " | macro | worst (lang) | spread max-min | std | seen | unseen |"
            + "".join(f" {g} |" for g in groups),
            "|---|" + "---|" * (len(langs) + 6 + len(groups))]
  for key in s["strategies"]:
    e = t["per_strategy"].get(key)
    if not e:
      continue
    lines.append(f"| {s['labels'][key]} | " + " | ".join(fmt(e["per_language"][l]) for l in langs)
                 + f" | {fmt(e['macro'])} | {fmt(e['worst_score'])} ({e['worst_language']}) | "
                 f"{fmt(e['spread_max_minus_min'])} | {fmt(e['spread_std'])} | "
                 f"{fmt(e['seen_mean'])} | {fmt(e['unseen_mean'])} |"
                 + "".join(f" {fmt(e['groups'][g])} |" for g in groups))
  if any("delta_vs_start" in e for e in t["per_strategy"].values()):
    lines += ["", "Change against the starting model (positive = better):", "",
              "| strategy | " + " | ".join(langs) + " | macro |" + "".join(f" {g} |" for g in groups),
              "|---|" + "---|" * (len(langs) + 1 + len(groups))]
    for key in s["strategies"]:
      e = t["per_strategy"].get(key)
      if key == "none" or not e or "delta_vs_start" not in e:
        continue
      lines.append(f"| {s['labels'][key]} | " + " | ".join(
          fmt_signed(e["delta_vs_start"][l]) for l in langs)
          + f" | {fmt_signed(e['macro_delta_vs_start'])} |"
          + "".join(f" {fmt_signed(e['groups_delta_vs_start'][g])} |" for g in groups))
  if section.pooled:
    lines += ["", section.pooled, "",
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
  goal = r.get("goal") or {}
  if goal.get("sections"):
    lines += ["", f"The goal: every low-resource language within {goal['low_resource_drop']:g} of "
              f"the start (worst mean change over seeds, per section: {', '.join(goal['sections'])}) "
              f"while keeping at least {goal['gain_kept']:.0%} of the hybrid's multi mAP gain:", "",
              "| method | " + " | ".join(f"worst low-resource change, {n}" for n in goal["sections"])
              + " | multi gain kept | meets the goal |",
              "|---|" + "---|" * (len(goal["sections"]) + 2)]
    for key in methods:
      e = per[key]
      if key == "none":
        continue
      worst = e.get("low_resource_worst_change") or {}
      met = e.get("meets_goal")
      lines.append(f"| {s['labels'][key]} | " + " | ".join(
          f"{worst[n]:+.3f}" if n in worst else "–" for n in goal["sections"])
          + f" | {fmt(e.get('multi_gain_kept'))} | {'n/a' if met is None else ('yes' if met else 'no')} |")
  if r.get("tests"):
    lines += ["", f"Each robust method against {strategy_label(r['base'])} (exploratory family; "
              "paired t-test over seeds, grouped sign-flip test over questions, a cluster of "
              "questions sharing a paragraph (with their parallel copies) as the unit, per-query "
              "values averaged over seeds; Holm-adjusted within this "
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


# How the "views" layout names a view in titles and in the change table.
VIEW_TITLES = {"native": "Native questions", "translated": "Translated questions",
               "gap": "Gap native - translated"}
VIEW_NOUNS = {"translated": "translated score"}


def _views_markdown(s: dict, a: dict, section) -> list[str]:
  """Layout "views": a per-language table per view (a "gap" view signed), then the change
  of the first view per language and of every view's macro against the start."""
  langs, metric, views = a["languages"], a["metric"], section.views
  lines = ["", f"## {section.title}", "",
           section.intro.format(metric=metric, unseen=", ".join(a["unseen"]))]
  for view in views:
    lines += ["", f"{VIEW_TITLES.get(view, view)}, {metric}:", "",
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
  first = views[0]
  if any("delta_vs_start" in v[first] for v in a["per_strategy"].values()):
    lines += ["", f"Change of {first} {metric} against the starting model (positive = better); "
              "last columns: change of the macro " + " and of the macro ".join(
                  VIEW_NOUNS.get(v, v) for v in views[1:]) + ":", "",
              "| strategy | " + " | ".join(langs) + "".join(f" | macro {v}" for v in views) + " |",
              "|---|" + "---|" * (len(langs) + len(views))]
    for key in s["strategies"]:
      e = a["per_strategy"].get(key)
      if key == "none" or not e or "delta_vs_start" not in e[first]:
        continue
      lines.append(f"| {s['labels'][key]} | " + " | ".join(
          fmt_signed(e[first]["delta_vs_start"][l]) for l in langs)
          + "".join(f" | {fmt_signed(e[v]['macro_delta_vs_start'])}" for v in views) + " |")
  return lines


# The renderer of each section layout ("lareqa" is the table at the top of the report).
RENDERERS = {"languages": _languages_markdown, "views": _views_markdown}
