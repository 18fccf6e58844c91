"""Markdown tables and matplotlib plots from an `eval.run` result dict.

For `results/x.json` it writes `x.report.md` (macro, per-language and, for
XQuAD-R / MLQA-R, per-language-pair tables), `x.per_language.png` (a grouped bar
chart of each setting's main metric per language) and, for XQuAD-R / MLQA-R,
`x.heatmap.png` (mAP, query language x corpus language: mono on the diagonal,
cross elsewhere).
"""
from __future__ import annotations

import pathlib

import numpy as np

from data_pipelines import files


def fmt(value, digits: int = 3, missing: str = "n/a") -> str:
  """A table cell: floats to `digits` decimals, None as `missing`, anything else as text."""
  if value is None:
    return missing
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
  return lines + [""]


def shown_settings(result: dict) -> dict:
  """The settings a report shows: with one language the pooled "multi" setting is its
  mono setting again (one language's candidates), so it is left out."""
  settings = result["settings"]
  if len(result["languages"]) == 1:
    return {k: v for k, v in settings.items() if k != "multi"}
  return settings


def data_label(result: dict) -> str:
  """Where the questions came from: own files by path, else the split."""
  options = result.get("options") or {}
  if options.get("files"):
    return "files " + ", ".join(f"{l}: {' + '.join(p)}" for l, p in options["files"].items())
  return f"split {options.get('split') or 'default'}"


def headline(result: dict) -> str:
  """One line per setting with its macro metrics (+ language bias)."""
  n = len(result["languages"])
  lines = [f"{result['benchmark']} / {result['model']} ({n} language{'s' if n != 1 else ''}; "
           f"{data_label(result)})"]
  for setting, table in shown_settings(result).items():
    metrics = ", ".join(f"{k} {fmt(v)}" for k, v in table["macro"].items())
    lines.append(f"  {setting:<5} {metrics}")
  if "language_bias" in result and len(result["languages"]) > 1:
    lines.append(f"  language bias (multi, lower is better): {fmt(result['language_bias']['macro'], 1)}")
  if "robustness_gap" in result:
    gap = ", ".join(f"{k} {_signed(v)}" for k, v in result["robustness_gap"]["macro"].items())
    lines.append(f"  gap   (native - translated) {gap}")
  return "\n".join(lines)


def _signed(value) -> str:
  return "n/a" if value is None else f"{value:+.3f}"


def pair_matrix(result: dict, metric: str = "map") -> np.ndarray:
  """[query language, corpus language] metric: mono on the diagonal, cross elsewhere."""
  languages = result["languages"]
  settings = result["settings"]
  matrix = np.full((len(languages), len(languages)), np.nan)
  for i, a in enumerate(languages):
    for j, b in enumerate(languages):
      if a == b:
        cell = settings["mono"]["per_language"].get(a, {}).get(metric)
      else:
        cell = settings.get("cross", {}).get("per_pair", {}).get(f"{a}-{b}", {}).get(metric)
      matrix[i, j] = np.nan if cell is None else cell
  return matrix


def pair_rows(result: dict) -> list[tuple[str, str, dict]]:
  """(query language, corpus language, metrics) for every cross `per_pair` entry:
  ordered by `result["languages"]` (query, then corpus), any other key after, sorted."""
  per_pair = result["settings"].get("cross", {}).get("per_pair", {})
  languages = result["languages"]
  keys = [f"{a}-{b}" for a in languages for b in languages if f"{a}-{b}" in per_pair]
  keys += sorted(set(per_pair) - set(keys))
  return [(*key.split("-", 1), per_pair[key]) if "-" in key else (key, "", per_pair[key])
          for key in keys]


def markdown(result: dict) -> str:
  languages = result["languages"]
  settings = shown_settings(result)
  lines = [f"# {result['benchmark']}: {result['model']}", "",
           f"Languages: {', '.join(languages)}. Data: {data_label(result)}. Zero-shot; macro = "
           "unweighted mean over languages (cross: over ordered language pairs).", ""]
  if len(languages) == 1 and "multi" in result["settings"]:
    lines += ["One language: no pooled (multi) setting, it would repeat mono.", ""]
  lines += ["## Macro averages", ""]
  for setting, table in settings.items():
    names = list(table["macro"])
    lines += [f"**{setting}**", ""] + _table(names, [[table["macro"][n] for n in names]])
  if "language_bias" in result and len(languages) > 1:
    bias = result["language_bias"]
    lines += ["## Language bias (multi pool; max - min rank of the parallel answers; lower is better)",
              ""]
    lines += _table(["macro"] + languages,
                    [[fmt(bias["macro"], 1)] + [fmt(bias["per_language"].get(l), 1) for l in languages]])
  if "robustness_gap" in result:
    gap = result["robustness_gap"]
    names = list(gap["macro"])
    lines += ["## Robustness gap (native minus translated query; negative = loss from the "
              "native-language question)", ""]
    lines += _table(["language"] + names,
                    [["macro"] + [_signed(gap["macro"][n]) for n in names]]
                    + [[l] + [_signed(gap["per_language"][l].get(n)) for n in names]
                       for l in languages if l in gap["per_language"]])
  lines += ["## Per language", ""]
  for setting, table in settings.items():
    if "per_language" not in table:
      continue
    names = list(table["macro"])
    lines += [f"**{setting}**", ""]
    lines += _table(["language"] + names,
                    [[l] + [table["per_language"][l].get(n) for n in names]
                     for l in languages if l in table["per_language"]])
  if result["settings"].get("cross", {}).get("per_pair"):
    cross = result["settings"]["cross"]
    names = list(cross.get("macro", {}))
    names += [n for n in dict.fromkeys(n for t in cross["per_pair"].values() for n in t)
              if n not in names]
    lines += ["## Per language pair (cross: queries in one language, corpus in another)", ""]
    lines += _table(["query", "corpus"] + names,
                    [[a, b] + [table.get(n) for n in names] for a, b, table in pair_rows(result)])
  if "cross" in result["settings"]:
    matrix = pair_matrix(result)
    lines += ["## mAP by query language (rows) x corpus language (columns)", ""]
    lines += _table(["query \\ corpus"] + languages,
                    [[a] + [None if np.isnan(v) else float(v) for v in row]
                     for a, row in zip(languages, matrix)])
  counts = result.get("counts", {}).get("per_language", {})
  issues = result.get("data_issues", {})
  lines += ["## Data", ""]
  lines += _table(["language", "queries", "candidates", "data issues", "dropped"],
                  [[l, counts.get(l, {}).get("queries"), counts.get(l, {}).get("candidates"),
                    issues.get(l, {}).get("records"), issues.get(l, {}).get("dropped")]
                   for l in languages])
  lines += data_notes(result)
  if result.get("counts", {}).get("pool_candidates") is not None and len(languages) > 1:
    lines += [f"Pooled setting: {result['counts']['pool_candidates']} candidates.", ""]
  elif result.get("counts", {}).get("pool"):
    lines += [f"Pools: {result['counts']['pool']}.", ""]
  if result["benchmark"] == "afriqa":
    from data_pipelines.readers import AFRIQA_LANGUAGES
    missing = [l for l in AFRIQA_LANGUAGES if l not in languages]
    if missing:
      lines += [f"Not evaluated: {', '.join(missing)} (no gold passages upstream in split "
                f"{result.get('options', {}).get('split', '?')}, or not requested).", ""]
  if "timing_seconds" in result:
    t = result["timing_seconds"]
    lines += [f"Time: {fmt(t.get('total'), 1)} s in all (encoding {fmt(t.get('encode'), 1)} s, "
              f"search and metrics {fmt(t.get('search_and_metrics'), 1)} s).", ""]
  return "\n".join(lines)


def data_notes(result: dict) -> list[str]:
  """Merged duplicate paragraphs and texts cut at max_length, as report lines."""
  lines = []
  for language, m in (result.get("merged_duplicates") or {}).items():
    lines.append(f"- {language}: {m['paragraphs']} paragraphs, {m['unique']} unique: "
                 f"{m['paragraphs'] - m['unique']} duplicates merged into one candidate each.")
  options = result.get("options") or {}
  truncated = options.get("truncated") or {}
  cut = {kind: stats for kind, stats in truncated.items() if stats.get("truncated")}
  for kind, stats in cut.items():
    share = stats["truncated"] / max(1, stats.get("texts", 0))
    lines.append(f"- {kind}: {stats['truncated']} of {stats.get('texts')} texts "
                 f"({100 * share:.1f}%) cut at max_length {options.get('max_length')} tokens.")
  if truncated and not cut:
    lines.append(f"- No text was cut at max_length {options.get('max_length')} tokens.")
  return lines + ([""] if lines else [])


def plot_per_language(result: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from eval import benchmarks  # the registry's main metric (imported here: it loads the search stack)
  metric = benchmarks.main_metric(result["benchmark"])
  languages = result["languages"]
  # cross contributes its mean over corpus languages per query language
  tables = {s: t.get("per_language", t.get("per_query_language"))
            for s, t in shown_settings(result).items()}
  settings = [s for s, t in tables.items() if t]
  width = 0.8 / max(len(settings), 1)
  fig, ax = plt.subplots(figsize=(min(14, max(6, 0.45 * len(languages) * max(len(settings), 1))), 4))
  x = np.arange(len(languages))
  for i, setting in enumerate(settings):
    table = tables[setting]
    values = [np.nan if table.get(l, {}).get(metric) is None else table[l][metric] for l in languages]
    ax.bar(x + i * width - 0.4 + width / 2, values, width, label=setting)
  ax.set_xticks(x, languages)
  ax.set_ylabel(metric)
  ax.set_ylim(0, 1)
  ax.set_title(f"{result['benchmark']}: {result['model']}, {metric} per query language"
               + (" (cross: mean over corpus languages)" if "cross" in tables else ""))
  ax.legend()
  fig.tight_layout()
  with files.atomic_output(path) as tmp:  # whole or not at all
    fig.savefig(tmp, dpi=120, format=pathlib.Path(path).suffix.lstrip(".") or "png")
  plt.close(fig)


def plot_heatmap(result: dict, path: pathlib.Path, metric: str = "map") -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  languages = result["languages"]
  matrix = pair_matrix(result, metric)
  fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 0.6 * len(languages)),
                                  max(3.5, 1.0 + 0.5 * len(languages))))
  image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(len(languages)), languages)
  ax.set_yticks(range(len(languages)), languages)
  ax.set_xlabel("corpus language")
  ax.set_ylabel("query language")
  for i in range(len(languages)):
    for j in range(len(languages)):
      if not np.isnan(matrix[i, j]):
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if matrix[i, j] < 0.5 else "black")
  fig.colorbar(image, ax=ax, label=metric)
  ax.set_title(f"{result['benchmark']}: {metric}")
  fig.tight_layout()
  with files.atomic_output(path) as tmp:  # whole or not at all
    fig.savefig(tmp, dpi=120, format=pathlib.Path(path).suffix.lstrip(".") or "png")
  plt.close(fig)


def write_report(result: dict, json_path) -> list[pathlib.Path]:
  """Report and plots beside `json_path`; returns the paths written."""
  json_path = pathlib.Path(json_path)
  stem = json_path.with_suffix("")
  paths = [stem.with_name(stem.name + ".report.md"), stem.with_name(stem.name + ".per_language.png")]
  files.atomic_write_text(paths[0], markdown(result))
  plot_per_language(result, paths[1])
  if "cross" in result["settings"]:
    paths.append(stem.with_name(stem.name + ".heatmap.png"))
    plot_heatmap(result, paths[-1])
  return paths
