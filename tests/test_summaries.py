"""summarize / render_markdown / write_plots on synthetic runs with known answers."""
import re

import numpy as np
import pytest

from study import methods, plots, render, summaries

pytestmark = [pytest.mark.fast]

XQ = ["de", "en", "es"]
TY = {"ar": 5, "bn": 8, "sw": 12}  # language -> number of TyDi questions
N_XQ = 20


def _macro(table):
  return float(np.mean([np.mean(v) for v in table.values()]))


def _run(sampling, alpha, seed, shift, rng, qids=True, tydi_levels=None):
  """A run whose metrics are the macro averages of its per-query AP (like eval.protocols)."""
  def ap(n, base):
    return np.clip(base + shift + 0.1 * rng.standard_normal(n), 0, 1).tolist()
  xq = {"mono": {l: ap(N_XQ, 0.6) for l in XQ},
        "cross": {f"{a}-{b}": ap(N_XQ, 0.5) for a in XQ for b in XQ if a != b},
        "multi": {l: ap(N_XQ, 0.4) for l in XQ}}
  if qids:
    xq["qids"] = {s: {u: [f"q{i}" for i in range(N_XQ)] for u in xq[s]} for s in ("mono", "cross", "multi")}
  levels = tydi_levels or {l: 0.5 for l in TY}
  ty = {"mono": {l: ap(n, levels[l]) for l, n in TY.items()}, "multi": {l: ap(n, 0.3) for l, n in TY.items()}}
  xq_metrics = {"settings": {s: {"macro": {"map": _macro({u: xq[s][u] for u in xq[s]}),
                                           "r@1": 0.5, "r@10": 0.7}} for s in ("mono", "cross", "multi")},
                "language_bias": {"macro": 250.0 - 100 * shift}}
  ty_metrics = {"settings": {
      "mono": {"macro": {"map": _macro(ty["mono"])},
               "per_language": {l: {"map": float(np.mean(v))} for l, v in ty["mono"].items()}},
      "multi": {"macro": {"map": _macro(ty["multi"]), "top10_same_language": 0.8}}}}
  return {"sampling": sampling, "alpha": alpha, "seed": seed,
          "metrics": {"xquad_r": xq_metrics, "tydiqa_goldp": ty_metrics},
          "per_query": {"xquad_r": xq, "tydiqa_goldp": ty}}


def _runs(qids=True):
  rng = np.random.default_rng(0)
  runs = [_run("none", None, None, 0.0, rng, qids)]
  for sampling, alpha, shift in (("mono", 1.0, 0.02), ("cross", 0.0, 0.03), ("hybrid", 0.5, 0.05)):
    runs += [_run(sampling, alpha, seed, shift, rng, qids) for seed in range(3)]
  return runs


def test_query_test_statistic_is_the_rows_macro_difference_and_question_is_the_unit():
  runs = _runs()
  sig = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["de", "en"])["significance"]
  assert {r["baseline"] for r in sig} == {"none", "mono", "cross"}
  for row in sig:
    q, a = row["across_queries"], row["across_seeds"]
    # Per-query AP averaged over seeds, macro over languages == mean over seeds of macro scores.
    assert q["mean_diff"] == pytest.approx(a["mean_diff"], abs=1e-12)
    if row["target"].startswith("xquad_r cross"):
      assert (q["n"], q["groups"], q["unit"]) == (6 * N_XQ, N_XQ, "question id")
    if row["target"] == "TyDi mono mAP (macro)":
      assert (q["n"], q["groups"], q["unit"]) == (sum(TY.values()), sum(TY.values()), "query")
  # Without ids, XQuAD-R's parallel lists group by position: the same test.
  no_ids = summaries.summarize(_runs(qids=False), lareqa_benchmark="xquad_r", train_languages=["de"])
  for with_id, by_position in zip(sig, no_ids["significance"]):
    assert by_position["across_queries"]["p_value"] == with_id["across_queries"]["p_value"]


def test_parallel_lists_of_unequal_length_without_ids_give_no_p_value():
  runs = _runs(qids=False)
  for r in runs:  # MLQA-R-like: languages hold different subsets of the questions
    r["per_query"]["xquad_r"]["multi"]["es"] = r["per_query"]["xquad_r"]["multi"]["es"][:15]
  sig = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["de"])["significance"]
  row = next(r for r in sig if r["target"] == "xquad_r multi mAP")
  assert row["across_queries"]["p_value"] is None and "question ids" in row["across_queries"]["note"]


def test_planned_family_and_holm_columns():
  s = summaries.summarize(_runs(), lareqa_benchmark="xquad_r", train_languages=["de"])
  planned = [r for r in s["significance"] if r["family"] == "planned"]
  # The planned family: the strategy contrasts on the low-resource TyDi group (bn, sw here)
  # and the in-domain multi mAP; the start in its own family; the mid-resource group has
  # no evaluated language, so no row.
  assert {r["target"] for r in planned} == {"TyDi mono mAP, low-resource (bn sw te)", "xquad_r multi mAP"}
  assert {r["baseline"] for r in planned} == {"mono", "cross"} and len(planned) == 4
  assert len(s["significance"]) == 15
  assert {r["baseline"] for r in s["significance"] if r["family"] == "vs start"} == {"none"}
  for family in ("planned", "exploratory", "vs start"):
    rows = [r for r in s["significance"] if r["family"] == family]
    raw = np.array([r["across_queries"]["p_value"] for r in rows])
    # Holm by hand: sorted p times (m - rank), running maximum, capped at 1.
    order = np.argsort(raw)
    want = np.minimum(1, np.maximum.accumulate(raw[order] * (len(raw) - np.arange(len(raw)))))
    assert [rows[i]["across_queries"]["p_holm"] for i in order] == pytest.approx(list(want))


def test_worst_language_is_the_worst_of_the_means():
  # Each seed's own minimum is ar or bn; the lowest mean is sw, which no seed has as its minimum.
  rng = np.random.default_rng(1)
  levels = [{"ar": 0.1, "bn": 0.5, "sw": 0.3}, {"ar": 0.5, "bn": 0.2, "sw": 0.3},
            {"ar": 0.6, "bn": 0.25, "sw": 0.3}]
  runs = [_run("mono", 1.0, seed, 0.0, rng, tydi_levels=lv) for seed, lv in enumerate(levels)]
  for r, lv in zip(runs, levels):  # exact levels, no noise
    r["metrics"]["tydiqa_goldp"]["settings"]["mono"]["per_language"] = {l: {"map": v} for l, v in lv.items()}
  e = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["ar"])["tydi"]["per_strategy"]["mono"]
  assert e["worst_language"] == "sw"
  assert e["worst_score"]["mean"] == pytest.approx(0.3) and e["worst_score"]["ci95"] == pytest.approx(0.0)


def _results(runs):
  summary = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["ar"])
  return {"preset": "synthetic", "fold": "A", "model": "m", "train_languages": ["ar"], "seeds": [0, 1, 2],
          "train_overrides": {}, "eval_languages": {"xquad_r": XQ, "tydiqa_goldp": list(TY)},
          "summary": summary, "plots": []}


def _numbers_in(obj, out):
  if isinstance(obj, dict):
    for v in obj.values():
      _numbers_in(v, out)
  elif isinstance(obj, list):
    for v in obj:
      _numbers_in(v, out)
  elif isinstance(obj, float):
    out.update(f.format(obj) for f in ("{:.1f}", "{:.3f}", "{:.4f}", "{:+.3f}", "{:+.4f}"))
  elif isinstance(obj, int) and not isinstance(obj, bool):
    out.add(str(obj))
  return out


def test_report_names_planned_comparisons_prints_holm_and_na_from_results_only():
  runs = _runs()
  for r in runs:  # the hybrid's TyDi multi score moves in lock-step with X-Y's: zero variance
    if r["sampling"] == "hybrid":
      r["metrics"]["tydiqa_goldp"]["settings"]["multi"]["macro"]["map"] = 0.4 + 0.01 * r["seed"]
    if r["sampling"] == "cross":
      r["metrics"]["tydiqa_goldp"]["settings"]["multi"]["macro"]["map"] = 0.38 + 0.01 * r["seed"]
  results = _results(runs)
  report = render.render_markdown(results)
  assert "one family of tests per group of targets" in report and "Holm p (queries)" in report
  row = next(l for l in report.splitlines() if "| X-Y | TyDi multi mAP | exploratory |" in l)
  assert row.split("|")[7].strip() == "n/a"  # p (seeds)
  known = _numbers_in(results, set())
  table = report[report.index("## Hybrid against"):]
  for line in table.splitlines():
    if line.startswith("| Hybrid"):
      for cell in line.strip("|").split("|")[1:]:
        for number in re.findall(r"[-+]?\d+\.\d+|(?<![\w.@])\d+(?![\w.])", cell):
          assert number in known, (number, line)


def test_report_prints_each_benchmarks_recorded_settings_and_why_a_query_test_is_na():
  runs = _runs(qids=False)
  for r in runs:  # MLQA-R-like lists: the multi query test has no p-value
    r["per_query"]["xquad_r"]["multi"]["es"] = r["per_query"]["xquad_r"]["multi"]["es"][:15]
  runs[0]["metrics"]["xquad_r"]["languages"] = XQ
  runs[0]["metrics"]["xquad_r"]["options"] = {
      "split": "dev", "max_length": 512, "max_documents": None,
      "questions": {l: 7 for l in XQ}, "candidates": {l: 1000 for l in XQ},
      "truncated": {"questions": {"texts": 21, "truncated": 0},
                    "candidates": {"texts": 3000, "truncated": 12}}}
  runs[0]["metrics"]["tydiqa_goldp"]["options"] = {"max_length": 192, "max_documents": 120}
  results = _results(runs)
  results["runs"] = [{k: v for k, v in r.items() if k != "per_query"} for r in runs]
  report = render.render_markdown(results)
  lines = report.splitlines()
  xq = next(l for l in lines if l.startswith("| xquad_r | dev |"))
  assert [c.strip() for c in xq.strip("|").split("|")] == [
      "xquad_r", "dev", "3", "21", "3000", "512", "all",
      "questions 0 of 21, candidates 12 of 3000"]
  ty = next(l for l in lines if l.startswith("| tydiqa_goldp |"))
  assert "| 192 | 120 | not recorded |" in ty
  note = next(l for l in lines if l.startswith("- Query test n/a ("))
  assert "question ids" in note and "xquad_r multi mAP" in note
  planned = next(l for l in lines if "against each baseline on each target" in l)
  assert planned.startswith(f"{methods.strategy_label('hybrid@0.5')} against each baseline on "
                            "each target, one family of tests per group of targets (planned, ")


def test_per_language_plot_shows_change_against_start_with_legend_outside(tmp_path, saved_figures):
  figures = saved_figures
  results = _results(_runs())
  written = plots.write_plots(results, tmp_path)
  assert "tydi_per_language.png" in written and (tmp_path / "tydi_per_language.png").stat().st_size > 1000
  t = results["summary"]["tydi"]
  fig = figures["tydi_per_language.png"]
  ax = fig.axes[0]
  plotted = {text.get_text() for text in ax.get_legend().get_texts()}
  assert plotted == {"X-X-mono", "X-Y", "Hybrid (alpha=0.5)"}  # the start itself is the zero line
  means = [c.get_ydata() for c in ax.get_lines() if len(c.get_ydata()) == len(t["languages"])]
  want = [t["per_strategy"]["hybrid@0.5"]["delta_vs_start"][l]["mean"] for l in t["languages"]]
  assert any(np.allclose(m, want) for m in means)
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  for name in ("tydi_per_language.png", "map_vs_alpha.png"):
    f = figures[name]
    renderer = FigureCanvasAgg(f).get_renderer()
    a = f.axes[0]
    assert not a.get_legend().get_window_extent(renderer).overlaps(a.get_window_extent(renderer))
