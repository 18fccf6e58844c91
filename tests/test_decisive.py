"""The decisive preset: its plan (a dry run, no training) and its answers on simulated runs
with planted effects: better, equivalent within the margin, inconclusive, the alpha trend."""
import numpy as np
import pytest

import replicate
from study import plan, render, summaries

pytestmark = [pytest.mark.fast]

ALPHAS = {"cross": 0.0, "hybrid@0.25": 0.25, "hybrid@0.5": 0.5, "hybrid@0.75": 0.75, "mono": 1.0}
TYDI = ("ar", "bn", "sw", "fi")


def test_the_preset_is_the_issues_design():
  p = plan.load_preset("decisive")
  assert p.seeds == tuple(range(20))
  assert sorted(a for _, a in p.strategies) == [0.0, 0.25, 0.5, 0.75, 1.0]
  assert p.wise_lambdas == (0.25, 0.5, 0.75) and p.robust_alpha == 0.5 and p.l2sp == ()
  assert p.eval_max_documents is None and p.eval_max_questions is None and p.eval_languages is None
  assert "ntrex128" in p.benchmarks and p.equivalence_margin == 0.01
  assert p.train_overrides["validation_every_steps"] < p.train_overrides["total_steps"] / 4


def test_a_dry_run_plans_every_run_without_training(tmp_path, capsys):
  result = replicate.main(["--preset", "decisive", "--fold", "A", "--model", "tiny-random",
                           "--out", str(tmp_path / "study"), "--dry_run"])
  counts = result["dry_run"]
  assert (counts["trainings"], counts["wise"], counts["runs"]) == (100, 60, 161)
  assert counts["evaluations"] == 161 * 5 and counts["trainings_done"] == 0
  assert set(counts["benchmarks"]) == {"xquad_r", "tydiqa_goldp", "tydiqa_goldp_sentences",
                                       "afriqa", "ntrex128"}
  assert "100 trainings" in capsys.readouterr().out
  assert not (tmp_path / "study" / "runs" / "mono-s0" / "train").exists()


def test_a_dry_run_shows_the_populations_the_trainings_form(tmp_path, capsys):
  """Every decisive training shares one program (they differ in seed, sampling, alpha):
  100 trainings at most 20 per population are 5 populations of 20; at 30, 30+30+30+10."""
  for cap, sizes in (("20", [20] * 5), ("30", [30, 30, 30, 10])):
    result = replicate.main(["--preset", "decisive", "--fold", "A", "--model", "tiny-random",
                             "--out", str(tmp_path / "study"), "--dry_run", "--population", cap])
    assert result["dry_run"]["populations"] == sizes
    assert f"{len(sizes)} populations" in capsys.readouterr().out


def _run(key, seed, rng, values):
  sampling = key.split("@")[0]
  alpha = ALPHAS.get(key)
  per_language = {l: {"map": values["tydi"][l]} for l in TYDI}
  return {"run_id": f"{key}-s{seed}", "sampling": sampling, "alpha": alpha,
          "seed": None if key == "none" else seed,
          "train": None if key == "none" else {"final_step": 200, "best_validation": {"step": 75}},
          "provenance": {"train_config": {"batch_size": 100}},
          "metrics": {
              "xquad_r": {"settings": {s: {"macro": {"map": values["multi"], "r@1": 0.5, "r@10": 0.5}}
                                       for s in ("mono", "cross", "multi")},
                          "language_bias": {"macro": 100.0}},
              "tydiqa_goldp": {"settings": {"mono": {"per_language": per_language,
                                                     "macro": {"map": np.mean([v["map"] for v in per_language.values()])}}}},
              "afriqa": {"settings": {s: {"per_language": {"hau": {"ndcg@10": values["afriqa"]}},
                                          "macro": {"ndcg@10": values["afriqa"]}}
                                      for s in ("native", "translated")},
                         "robustness_gap": {"per_language": {"hau": {"ndcg@10": 0.0}},
                                            "macro": {"ndcg@10": 0.0}}}},
          "per_query": {}}


def _study(rng):
  """20 seeds. multi mAP: hybrid 0.5 best by 0.03 (SD 0.005); TyDi low-resource (bn, sw):
  the same for all, SD 0.002 (equivalent within 0.01); TyDi fi (mid-resource): rising by
  0.05 per unit of alpha; AfriQA: pure noise of SD 0.05 (inconclusive)."""
  runs = [_run("none", 0, rng, {"multi": 0.3, "tydi": dict.fromkeys(TYDI, 0.5), "afriqa": 0.4})]
  for seed in range(20):
    for key, alpha in ALPHAS.items():
      multi = 0.5 + (0.03 if key == "hybrid@0.5" else 0.0) + 0.005 * rng.standard_normal()
      tydi = {l: 0.6 + (0.05 * alpha if l == "fi" else 0.0) + 0.002 * rng.standard_normal()
              for l in TYDI}
      runs.append(_run(key, seed, rng, {"multi": multi, "tydi": tydi,
                                        "afriqa": 0.4 + 0.05 * rng.standard_normal()}))
  return runs


def test_verdicts_trend_and_checkpoints_on_a_simulated_study():
  runs = _study(np.random.default_rng(3))
  s = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["ar"], margin=0.01)
  rows = {(r["baseline"], r["target"]): r for r in s["significance"]}
  low = "TyDi mono mAP, low-resource (bn sw te)"
  for baseline in ("mono", "cross"):
    assert rows[(baseline, "xquad_r multi mAP")]["verdict"] == "better"
    assert rows[(baseline, "xquad_r multi mAP")]["family"] == "planned"
    assert rows[(baseline, low)]["verdict"] == "equivalent"
    assert rows[(baseline, "AfriQA native nDCG@10 (macro)")]["verdict"] == "inconclusive"
    lo, hi = rows[(baseline, "xquad_r multi mAP")]["across_seeds"]["ci95"]
    assert lo < 0.03 < hi
  assert rows[("none", low)]["family"] == "vs start"  # trained vs start: its own family
  assert rows[("mono", "TyDi mono mAP, mid-resource (fi id ko ru)")]["family"] == "mid-resource"
  # The low-resource target's macro runs over the evaluated group languages (bn, sw) only.
  assert rows[("mono", low)]["languages"] == ["bn", "sw", "te"]
  trend = {t["target"]: t for t in s["alpha_trends"]}
  mid = trend["TyDi mono mAP, mid-resource (fi id ko ru)"]["trend"]
  assert mid["n_seeds"] == 20 and mid["ci95"][0] < 0.05 < mid["ci95"][1] and mid["p_holm"] < 0.05
  assert trend[low]["trend"]["p_value"] > 0.01  # flat
  assert trend["xquad_r multi mAP"]["best_alpha"]["best"] == 0.5
  assert trend["xquad_r multi mAP"]["trend"]["p_holm"] is not None
  assert s["checkpoints"]["mono-s0"] == {"step": 75, "final_step": 200, "pairs_seen": 7500}
  text = render.render_markdown({"preset": "decisive", "fold": "A", "model": "m", "seeds": list(range(20)),
                                 "train_languages": ["ar"], "train_overrides": {},
                                 "eval_languages": {"xquad_r": ["de"], "tydiqa_goldp": list(TYDI),
                                                    "afriqa": ["hau"]}, "summary": s})
  assert "| equivalent |" in text and "| better |" in text and "## The trend in alpha" in text
  assert "| mono-s0 | 75 | 200 | 7500 |" in text
