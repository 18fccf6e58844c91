"""The study's plots, drawn only from results.json: per-language change against the start
for every benchmark section that declares a plot, language bias per strategy, mAP against
alpha, and the robust arm's trade-off.
"""
from __future__ import annotations

import pathlib

import numpy as np

from data_pipelines import sampler
from study import summaries
from study.methods import key_kind, key_value


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
  out_dir = pathlib.Path(out_dir)
  s, written = results["summary"], []

  per_language = []
  for _, section in summaries.sections(results["eval_languages"]):
    t = s.get(section.key)
    if not (t and section.plot):
      continue
    if section.layout == "views":  # the first view's scores (AfriQA: the native questions)
      view = section.views[0]
      t = {"languages": t["languages"], "metric": f"{view} {t['metric']}",
           "per_strategy": {k: v[view] for k, v in t["per_strategy"].items()}}
    per_language.append((t, section.plot_title, section.plot))
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
