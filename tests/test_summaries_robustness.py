"""Study robustness sections (TyDi sentences, AfriQA) and the tests on their targets,
on synthetic runs whose answers are worked out from the inputs."""
import re

import numpy as np
import pytest

from study import plots, render, statistics, summaries
from tests.test_summaries import XQ, _numbers_in, _run

pytestmark = [pytest.mark.fast]

SENT = {"ar": 6, "en": 9, "sw": 7}          # TyDi sentences: language -> questions
AFRI = {"hau": 8, "swa": 5, "yor": 6}       # AfriQA: language -> questions (ids from "0" each)


def _with_robustness(run, rng, shift):
  """Add tydiqa_goldp_sentences and afriqa, their metrics being the means of their per-query values."""
  def vals(n, base):
    return np.clip(base + shift + 0.15 * rng.standard_normal(n), 0, 1).tolist()
  sent = {"mono": {l: vals(n, 0.4) for l, n in SENT.items()}, "multi": {l: vals(n, 0.3) for l, n in SENT.items()}}
  sent["qids"] = {s: {l: [f"{l}-{i}" for i in range(n)] for l, n in SENT.items()} for s in ("mono", "multi")}
  ndcg = {"native": {l: vals(n, 0.3) for l, n in AFRI.items()},
          "translated": {l: vals(n, 0.6) for l, n in AFRI.items()}}
  afri = {s: {l: vals(n, 0.3) for l, n in AFRI.items()} for s in ("native", "translated")}  # AP
  afri["qids"] = {s: {l: [str(i) for i in range(n)] for l, n in AFRI.items()} for s in ("native", "translated")}
  afri["by_metric"] = {"ndcg@10": ndcg}
  per_lang = {s: {l: {"ndcg@10": float(np.mean(v))} for l, v in ndcg[s].items()} for s in ndcg}
  gap = {l: {"ndcg@10": per_lang["native"][l]["ndcg@10"] - per_lang["translated"][l]["ndcg@10"]} for l in AFRI}
  macro = lambda t: {"ndcg@10": float(np.mean([v["ndcg@10"] for v in t.values()]))}
  run["metrics"]["tydiqa_goldp_sentences"] = {"settings": {
      s: {"macro": {"map": float(np.mean([np.mean(v) for v in sent[s].values()])),
                    "top10_same_language": 0.9},
          "per_language": {l: {"map": float(np.mean(v))} for l, v in sent[s].items()}}
      for s in ("mono", "multi")}}
  run["metrics"]["afriqa"] = {
      "settings": {s: {"macro": macro(per_lang[s]), "per_language": per_lang[s]} for s in per_lang},
      "robustness_gap": {"macro": macro(gap), "per_language": gap}}
  run["per_query"]["tydiqa_goldp_sentences"] = sent
  run["per_query"]["afriqa"] = afri
  return run


def _runs(seed=0):
  rng = np.random.default_rng(seed)
  runs = [_with_robustness(_run("none", None, None, 0.0, rng), rng, 0.0)]
  for sampling, alpha, shift in (("mono", 1.0, 0.02), ("cross", 0.0, 0.03), ("hybrid", 0.5, 0.05)):
    runs += [_with_robustness(_run(sampling, alpha, s, shift, rng), rng, shift) for s in range(3)]
  return runs


def _summary(runs):
  return summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["ar", "en"])


def test_sentence_and_afriqa_sections_hold_means_changes_worst_and_seen_split():
  runs = _runs()
  s = _summary(runs)
  t = s["tydi_sentences"]
  assert (t["seen"], t["unseen"]) == (["ar", "en"], ["sw"])
  start = {l: float(np.mean(runs[0]["per_query"]["tydiqa_goldp_sentences"]["mono"][l])) for l in SENT}
  hybrid = [r for r in runs if r["sampling"] == "hybrid"]
  per_seed = [{l: float(np.mean(r["per_query"]["tydiqa_goldp_sentences"]["mono"][l])) for l in SENT}
              for r in hybrid]
  e = t["per_strategy"]["hybrid@0.5"]
  for l in SENT:
    assert e["per_language"][l]["mean"] == pytest.approx(np.mean([x[l] for x in per_seed]))
    d = [x[l] - start[l] for x in per_seed]
    assert e["delta_vs_start"][l]["mean"] == pytest.approx(np.mean(d))
    assert e["delta_vs_start"][l]["ci95"] == pytest.approx(4.302652729749464 * np.std(d, ddof=1) / np.sqrt(3))
  means = {l: np.mean([x[l] for x in per_seed]) for l in SENT}
  assert e["worst_language"] == min(means, key=means.get)
  assert e["unseen_mean"]["mean"] == pytest.approx(means["sw"])
  assert e["seen_mean"]["mean"] == pytest.approx((means["ar"] + means["en"]) / 2)

  a = s["afriqa"]
  assert a["unseen"] == list(AFRI) and a["seen"] == []
  ndcg = lambda r, v: {l: float(np.mean(r["per_query"]["afriqa"]["by_metric"]["ndcg@10"][v][l])) for l in AFRI}
  for view in ("native", "translated"):
    want = {l: np.mean([ndcg(r, view)[l] for r in hybrid]) for l in AFRI}
    got = a["per_strategy"]["hybrid@0.5"][view]["per_language"]
    assert {l: got[l]["mean"] for l in AFRI} == pytest.approx(want)
  gap = a["per_strategy"]["hybrid@0.5"]["gap"]
  start_gap = {l: ndcg(runs[0], "native")[l] - ndcg(runs[0], "translated")[l] for l in AFRI}
  for l in AFRI:
    per = [ndcg(r, "native")[l] - ndcg(r, "translated")[l] for r in hybrid]
    assert gap["per_language"][l]["mean"] == pytest.approx(np.mean(per))
    assert gap["delta_vs_start"][l]["mean"] == pytest.approx(np.mean(per) - start_gap[l])
  assert gap["macro"]["mean"] < 0  # native is built about 0.3 below translated


def test_new_planned_targets_and_query_units():
  s = _summary(_runs())
  planned = {r["target"] for r in s["significance"] if r["family"] == "planned"}
  assert planned == {"TyDi mono mAP, low-resource (bn sw te)", "xquad_r multi mAP",
                     "TyDi sentences mono mAP, low-resource (bn sw te)", "AfriQA native nDCG@10 (macro)"}
  exploratory = {r["target"] for r in s["significance"] if r["family"] == "exploratory"}
  assert {"TyDi sentences multi mAP", "AfriQA gap nDCG@10 (native - translated)"} <= exploratory
  targets = {r["target"] for r in s["significance"]}
  assert len(s["significance"]) == len(targets) * 3  # targets x baselines (start, X-X-mono, X-Y)
  for row in s["significance"]:
    q, a = row["across_queries"], row["across_seeds"]
    # per-query values averaged over seeds, macro over languages == mean of per-seed macro scores
    assert q["mean_diff"] == pytest.approx(a["mean_diff"], abs=1e-12), row["target"]
    if row["target"].startswith("AfriQA"):
      # ids "0".."n" repeat across languages but are different questions: one unit each
      assert (q["n"], q["groups"], q["unit"]) == (sum(AFRI.values()), sum(AFRI.values()), "question id")
      assert q["p_value"] is not None
    if row["target"].startswith("TyDi sentences"):  # the low-resource group: sw only here
      assert q["groups"] == (SENT["sw"] if "low-resource" in row["target"] else sum(SENT.values()))
  # Holm within the planned family: the four targets x two baselines (X-X-mono, X-Y) and the
  # four targets' trends in alpha (three alphas: X-Y 0, hybrid 0.5, X-X-mono 1)
  tests = [r["across_seeds"] for r in s["significance"] if r["family"] == "planned"]
  tests += [t["trend"] for t in s["alpha_trends"] if t["family"] == "planned"]
  assert len(tests) == 4 * 2 + 4
  raw = np.array([t["p_value"] for t in tests])
  order = np.argsort(raw)
  want = np.minimum(1, np.maximum.accumulate(raw[order] * (len(raw) - np.arange(len(raw)))))
  assert [tests[i]["p_holm"] for i in order] == pytest.approx(list(want))


def test_gap_query_test_flips_native_minus_translated_per_question():
  runs = _runs()
  hybrid = [r for r in runs if r["sampling"] == "hybrid"]
  cross = [r for r in runs if r["sampling"] == "cross"]
  def gaps(rs):  # per query native - translated, averaged over seeds, languages in sorted order
    pq = [r["per_query"]["afriqa"]["by_metric"]["ndcg@10"] for r in rs]
    return np.mean([np.concatenate([np.subtract(p["native"][l], p["translated"][l]) for l in sorted(AFRI)])
                    for p in pq], axis=0)
  strata = np.repeat(np.arange(3), [AFRI[l] for l in sorted(AFRI)])
  want = statistics.paired_query_test(gaps(hybrid), gaps(cross), np.arange(strata.size), strata)
  row = next(r for r in _summary(runs)["significance"]
             if r["target"].startswith("AfriQA gap") and r["baseline"] == "cross")
  assert row["across_queries"]["p_value"] == want["p_value"]
  assert row["across_queries"]["mean_diff"] == pytest.approx(want["mean_diff"])


def test_mlqa_like_unequal_id_sets_with_ids_give_a_p_value():
  runs = _runs()
  for r in runs:  # es holds only 15 of the 20 questions, and not the first five
    pq = r["per_query"]["xquad_r"]
    pq["multi"]["es"] = pq["multi"]["es"][5:]
    pq["qids"]["multi"]["es"] = pq["qids"]["multi"]["es"][5:]
  row = next(r for r in _summary(runs)["significance"]
             if r["target"] == "xquad_r multi mAP" and r["baseline"] == "mono")
  q = row["across_queries"]
  assert q["p_value"] is not None and q["unit"] == "question id"
  assert (q["n"], q["groups"]) == (2 * 20 + 15, 20)
  # the statistic: macro over languages of the per-query difference averaged over seeds
  def mean_ap(sampling, language):
    return np.mean([np.mean(r["per_query"]["xquad_r"]["multi"][language]) for r in runs
                    if r["sampling"] == sampling])
  assert q["mean_diff"] == pytest.approx(np.mean([mean_ap("hybrid", l) - mean_ap("mono", l) for l in XQ]))


def _results(runs):
  return {"preset": "synthetic", "fold": "A", "model": "m", "train_languages": ["ar", "en"],
          "seeds": [0, 1, 2], "train_overrides": {},
          "eval_languages": {"xquad_r": XQ, "tydiqa_goldp": ["ar", "bn", "sw"],
                             "tydiqa_goldp_sentences": list(SENT), "afriqa": list(AFRI)},
          "summary": _summary(runs), "plots": []}


def test_report_sections_print_only_numbers_from_results():
  results = _results(_runs())
  report = render.render_markdown(results)
  for heading in ("## TyDi QA GoldP sentences: robustness across languages",
                  "## AfriQA: native against translated questions", "Gap native - translated",
                  "Change of native ndcg@10 against the starting model", "AfriQA native nDCG@10 (macro)"):
    assert heading in report
  known = _numbers_in(results, set())
  section = report[report.index("## TyDi QA GoldP sentences"):report.index("## Hybrid against")]
  checked = 0
  for line in section.splitlines():
    if line.startswith("| ") and "strategy" not in line:
      for cell in line.strip("|").split("|")[1:]:
        for number in re.findall(r"[-+]?\d+\.\d+|(?<![\w.@])\d+(?![\w.])", cell):
          assert number in known, (number, line)
          checked += 1
  assert checked > 100
  # the hybrid's AfriQA native hau cell is its mean ± interval
  cell = results["summary"]["afriqa"]["per_strategy"]["hybrid@0.5"]["native"]["per_language"]["hau"]
  assert f"| Hybrid (alpha=0.5) | {render.fmt(cell)} |" in report


def test_per_language_plots_for_sentences_and_afriqa(tmp_path, saved_figures):
  figures = saved_figures
  results = _results(_runs())
  written = plots.write_plots(results, tmp_path)
  s = results["summary"]
  for name, cells in (("tydi_sentences_per_language.png",
                       s["tydi_sentences"]["per_strategy"]["hybrid@0.5"]["delta_vs_start"]),
                      ("afriqa_per_language.png",
                       s["afriqa"]["per_strategy"]["hybrid@0.5"]["native"]["delta_vs_start"])):
    assert name in written and (tmp_path / name).stat().st_size > 1000
    ax = figures[name].axes[0]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"X-X-mono", "X-Y", "Hybrid (alpha=0.5)"}
    want = [c["mean"] for c in cells.values()]
    assert any(np.allclose(line.get_ydata(), want) for line in ax.get_lines()
               if len(line.get_ydata()) == len(want))
    assert [t.get_text() for t in ax.get_xticklabels()] == list(cells)
