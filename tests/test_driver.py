"""The study driver end to end on a tiny random model: structure, provenance, resume."""
import dataclasses
import json
import os
import pathlib
import re
import shutil

import pytest

import replicate
from study import driver, plan


def _numbers_in(obj, out):
  """Every way the report may print a number held in results.json."""
  if isinstance(obj, dict):
    for v in obj.values():
      _numbers_in(v, out)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      _numbers_in(v, out)
  elif isinstance(obj, bool) or obj is None:
    pass
  elif isinstance(obj, int):
    out.add(str(obj))
  elif isinstance(obj, float):
    for f in ("{:.1f}", "{:.3f}", "{:.4f}", "{:+.3f}", "{:+.4f}"):
      out.add(f.format(obj))
  return out


EVAL_LANGUAGES = {"xquad_r": ["de", "en"], "tydiqa_goldp": ["en", "sw", "te"],
                  "tydiqa_goldp_sentences": ["en", "sw", "te"], "afriqa": ["hau", "swa"]}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, data_dir):
  out = tmp_path_factory.mktemp("study")
  replicate.main(["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
                  "--data_dir", str(data_dir), "--out", str(out)])
  return out


def test_results_hold_every_run_with_its_strategy(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  runs = {(r["sampling"], r["alpha"], r["seed"]) for r in results["runs"]}
  assert runs == {("none", None, None), ("mono", 1.0, 0), ("cross", 0.0, 0), ("hybrid", 0.5, 0)}
  for run in results["runs"]:
    assert set(run["metrics"]) == set(EVAL_LANGUAGES)
    for benchmark, languages in EVAL_LANGUAGES.items():
      assert run["metrics"][benchmark]["languages"] == languages
    assert run["metrics"]["afriqa"]["options"]["split"] == "test"
    if run["sampling"] != "none":
      assert run["train"]["final_step"] == 4
      assert sum(run["train"]["kind_counts"].values()) == 4
  # The mono run trained only on X-X batches, the cross run only on X-Y ones.
  kinds = {r["sampling"]: r["train"]["kind_counts"] for r in results["runs"] if r["sampling"] != "none"}
  assert set(kinds["mono"]) == {"mono"} and set(kinds["cross"]) == {"cross"}


def check_report_numbers(results: dict, report: str) -> int:
  """Every number in a table row of the report is one of results.json's; returns how many."""
  known = _numbers_in(results, set())
  lines = report.splitlines()
  rows = [l for l in lines if l.startswith("|") and not l.startswith("|---")]
  header_rows = {l for l, after in zip(lines, lines[1:]) if after.startswith("|---")}
  checked = 0
  for row in rows:
    if row in header_rows:
      continue
    for cell in row.strip("|").split("|")[1:]:  # the first column is a label
      for number in re.findall(r"[-+]?\d+\.\d+|(?<![\w.@])\d+(?![\w.])", cell):
        assert number in known, f"{number!r} in report row {row!r} is not in results.json"
        checked += 1
  return checked


def test_report_structure_and_every_number_comes_from_results(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  report = (study_dir / "report.md").read_text()
  for heading in ("paper-style table", "TyDi QA GoldP: robustness", "Change against the starting model",
                  "## TyDi QA GoldP sentences: robustness", "## AfriQA: native against translated",
                  "Gap native - translated", "Hybrid against each baseline", "Plots"):
    assert heading in report
  assert "## Robust fine-tuning" not in report and results["robust"] is None
  assert {"tydi_per_language.png", "tydi_sentences_per_language.png",
          "afriqa_per_language.png"} <= set(results["plots"])
  for plot in results["plots"]:
    assert (study_dir / plot).stat().st_size > 1000
  assert check_report_numbers(results, report) > 100


def test_rerun_resumes_without_redoing_work(study_dir, data_dir):
  before = {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/*/*.json")}
  replicate.main(["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
                  "--data_dir", str(data_dir), "--out", str(study_dir)])
  after = {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/*/*.json")}
  # per run: 4 evaluations + provenance; the 3 trained runs also train_summary.json
  assert before == after and len(before) == 4 * 5 + 3


@pytest.mark.parametrize("change", [["--steps", "5"], ["--model", "tiny-random-1"]])
def test_rerun_with_other_settings_is_refused_before_any_work(study_dir, data_dir, change, capsys):
  """A study dir never reports numbers made with other settings under this command's."""
  args = {"--steps": "4", "--model": "tiny-random"}
  args[change[0]] = change[1]
  before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
  with pytest.raises(SystemExit) as exit_info:
    replicate.main(["--preset", "smoke", "--fold", "A", "--model", args["--model"],
                    "--steps", args["--steps"], "--data_dir", str(data_dir),
                    "--out", str(study_dir)])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "other settings" in err[0]
  if change[0] == "--steps":  # only trained runs depend on the steps
    assert "mono-s0" in err[0] and "total_steps: 4 -> 5" in err[0] and "start" not in err[0]
  else:
    assert "start (model.name: 'tiny-random' -> 'tiny-random-1')" in err[0]
  after = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
  assert after == before


def test_each_run_records_its_config_and_model(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  for run in results["runs"]:
    stored = json.loads((study_dir / "runs" / run["run_id"] / "provenance.json").read_text())
    assert run["provenance"] == stored and stored["model"] == {"name": "tiny-random"}
    if run["sampling"] != "none":
      config = stored["train_config"]
      assert (config["sampling"], config["seed"], config["total_steps"]) == (
          run["sampling"], run["seed"], 4)
      workdir_config = json.loads((study_dir / "runs" / run["run_id"] / "train" /
                                   "config.json").read_text())
      assert {k: workdir_config[k] for k in config} == config


def test_robustness_sections_come_from_the_runs(study_dir):
  """The sentence and AfriQA sections hold the runs' own per-language numbers, seen / unseen
  split by the smoke preset's training languages, and the new targets are tested per question."""
  results = json.loads((study_dir / "results.json").read_text())
  report = (study_dir / "report.md").read_text()
  s = results["summary"]
  start = next(r for r in results["runs"] if r["sampling"] == "none")
  hybrid = next(r for r in results["runs"] if r["sampling"] == "hybrid")
  t = s["tydi_sentences"]
  assert (t["languages"], t["seen"], t["unseen"]) == (["en", "sw", "te"], ["en"], ["sw", "te"])
  for language in t["languages"]:
    score = lambda r: r["metrics"]["tydiqa_goldp_sentences"]["settings"]["mono"]["per_language"][language]["map"]
    assert t["per_strategy"]["hybrid@0.5"]["per_language"][language]["mean"] == pytest.approx(score(hybrid))
    assert t["per_strategy"]["hybrid@0.5"]["delta_vs_start"][language]["mean"] == pytest.approx(
        score(hybrid) - score(start))
  a = s["afriqa"]
  assert a["languages"] == a["unseen"] == ["hau", "swa"]
  gap = hybrid["metrics"]["afriqa"]["robustness_gap"]["per_language"]["hau"]["ndcg@10"]
  assert a["per_strategy"]["hybrid@0.5"]["gap"]["per_language"]["hau"]["mean"] == pytest.approx(gap)
  row = next(l for l in report[report.index("Gap native - translated"):].splitlines()
             if l.startswith("| Hybrid"))
  assert row.split("|")[2].strip() == f"{gap:+.3f}"
  planned = {r["target"] for r in s["significance"] if r["family"] == "planned"}
  assert {"TyDi sentences mono mAP, low-resource (bn sw te)", "AfriQA native nDCG@10 (macro)"} <= planned
  for r in s["significance"]:  # every target is grouped by paragraphs (with parallel copies)
    assert r["across_queries"]["unit"] == "paragraph", r["target"]
    assert r["across_queries"]["p_value"] is not None
    assert f"| {r['target']} | {r['family']} |" in report
  # per-query lists in the runs' evaluation files carry their question ids
  stored = json.loads((study_dir / "runs" / "start" / "eval_afriqa.json").read_text())
  assert {l: len(v) for l, v in stored["per_query"]["qids"]["native"].items()} == {
      l: len(v) for l, v in stored["per_query"]["by_metric"]["ndcg@10"]["native"].items()}


def test_changed_evaluation_of_a_new_benchmark_is_refused(study_dir):
  stored = json.loads((study_dir / "runs" / "start" / "provenance.json").read_text())
  assert stored["eval"]["languages"] == EVAL_LANGUAGES
  assert stored["eval"]["splits"]["afriqa"] == "test"
  changed = json.loads(json.dumps(stored))
  changed["eval"]["languages"]["afriqa"] = ["hau"]
  with pytest.raises(plan.StudyError, match=r"start \(eval\.languages\.afriqa: \['hau', 'swa'\] -> \['hau'\]"):
    plan.check_run_dirs(study_dir, {"start": changed})
  plan.check_run_dirs(study_dir, {"start": stored})  # the same settings pass


# ----------------------------------------------------------------------------
# The robustness arm (--robust): WiSE-FT and L2-SP runs beside the smoke study's runs

ROBUST_IDS = {"hybrid-a0.5-l2sp1-s0", "hybrid-a0.5-s0-wise0.25", "hybrid-a0.5-s0-wise0.5",
              "hybrid-a0.5-s0-wise0.75"}


@pytest.fixture(scope="module")
def robust_dir(study_dir, tmp_path_factory, data_dir):
  """A copy of the smoke study's runs, then the same command with --robust on it."""
  out = tmp_path_factory.mktemp("robust")
  shutil.copytree(study_dir / "runs", out / "runs")
  if (study_dir / "shards").is_dir():
    shutil.copytree(study_dir / "shards", out / "shards")
  before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.glob("runs/*/*.json")}
  replicate.main(["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
                  "--data_dir", str(data_dir), "--out", str(out), "--robust"])
  return out, before


def test_robust_arm_adds_its_runs_and_reuses_the_finished_ones(robust_dir):
  out, before = robust_dir
  results = json.loads((out / "results.json").read_text())
  ids = {r["run_id"] for r in results["runs"]}
  assert ids == {"start", "mono-s0", "cross-s0", "hybrid-a0.5-s0"} | ROBUST_IDS
  after = {p.relative_to(out): p.stat().st_mtime_ns for p in out.glob("runs/*/*.json")}
  assert {p: after[p] for p in before} == before  # nothing of the smoke study was redone
  assert results["robust"] == {"alpha": 0.5, "wise_lambdas": [0.25, 0.5, 0.75], "l2sp": [1.0]}
  runs = {r["run_id"]: r for r in results["runs"]}
  hybrid_provenance = json.loads((out / "runs" / "hybrid-a0.5-s0" / "provenance.json").read_text())
  for lam in (0.25, 0.5, 0.75):
    run = runs[f"hybrid-a0.5-s0-wise{lam:g}"]
    assert (run["method"], run["lambda"], run["base_run"], run["seed"]) == ("wise", lam, "hybrid-a0.5-s0", 0)
    assert "train" not in run and not (out / "runs" / run["run_id"] / "train").exists()
    interpolation = run["provenance"]["interpolation"]
    assert interpolation["lambda"] == lam and interpolation["finetuned_run"] == "hybrid-a0.5-s0"
    # the interpolated run's provenance is the hybrid run's (model, training config)
    assert interpolation["finetuned"] == {k: v for k, v in hybrid_provenance.items() if k != "eval"}
    assert run["provenance"]["eval"] == hybrid_provenance["eval"]
    assert set(run["metrics"]) == set(EVAL_LANGUAGES)
  l2sp = runs["hybrid-a0.5-l2sp1-s0"]
  assert (l2sp["method"], l2sp["l2sp"]) == ("l2sp", 1.0)
  config = l2sp["provenance"]["train_config"]
  assert config["l2sp"] == 1.0 and config["sampling"] == "hybrid" and config["alpha"] == 0.5
  assert runs["hybrid-a0.5-s0"]["provenance"]["train_config"]["l2sp"] == 0.0
  workdir = out / "runs" / "hybrid-a0.5-l2sp1-s0" / "train"
  assert json.loads((workdir / "config.json").read_text())["l2sp"] == 1.0
  penalties = [json.loads(l).get("l2sp_penalty") for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(p for p in penalties if p is not None) > 0  # the pull acted
  assert l2sp["train"]["final_step"] == 4


def test_wise_run_evaluated_the_interpolated_weights(robust_dir, data_dir, tmp_path):
  """(1 - lambda) * start + lambda * hybrid, recomputed here in float64 from the two
  checkpoints, is the model the wise run evaluated: its stored leaf sums, the interpolated
  float32 weights (to float32 rounding) and, for those weights, the same XQuAD-R per-query
  values. (A float32 recomputation here that rounds differently, by one unit in the last
  place, reorders near-ties: 3 of 900 per-query APs moved by up to 2.8e-4 with jaxlib
  0.10.2.)"""
  import jax
  import numpy as np
  from mlir_train import models
  out, _ = robust_dir
  start = models.tiny_random_model(0)
  hybrid = models.restore_for_inference(out / "runs" / "hybrid-a0.5-s0" / "train")
  flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(v)
                       for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  a, b = flat(start.params), flat(hybrid.params)
  assert any(not np.array_equal(a[k], b[k]) for k in a)  # training changed the weights
  for lam in (0.25, 0.75):
    rid = f"hybrid-a0.5-s0-wise{lam:g}"
    mixed = {k: ((1 - lam) * a[k].astype(np.float64) + lam * b[k].astype(np.float64)) for k in a}
    # mlir_train.interpolate's float32 weights are the formula's, to float32 rounding
    from mlir_train import interpolate
    model = interpolate.mix(start, hybrid, lam)
    got = flat(model.params)
    for k in mixed:
      np.testing.assert_allclose(got[k], mixed[k], rtol=1e-6, atol=1e-7, err_msg=k)
    preset = plan.load_preset("smoke")
    mine = driver.evaluate_into(model, "xquad_r", EVAL_LANGUAGES["xquad_r"], preset,
                                   str(data_dir), tmp_path / f"{lam}.json")
    theirs = json.loads((out / "runs" / rid / "eval_xquad_r.json").read_text())
    # the same weights give the same rankings: per-query AP equal (and the start's and the
    # hybrid's differ: 4 steps of training move the tiny model's AP only a little)
    flat_ap = lambda result: np.concatenate([result["per_query"][s][u] for s in ("mono", "cross", "multi")
                                             for u in sorted(result["per_query"][s])])
    distance = np.abs(flat_ap(theirs) - flat_ap(mine))
    assert distance.max() == 0, lam
    for other in ("start", "hybrid-a0.5-s0"):
      stored = json.loads((out / "runs" / other / "eval_xquad_r.json").read_text())
      assert distance.sum() < 0.2 * np.abs(flat_ap(stored) - flat_ap(mine)).sum(), (lam, other)


def test_wise_endpoints_reproduce_start_and_hybrid(robust_dir, data_dir, tmp_path):
  from mlir_train import interpolate
  out, _ = robust_dir
  workdir = out / "runs" / "hybrid-a0.5-s0" / "train"
  for lam, rid in ((0.0, "start"), (1.0, "hybrid-a0.5-s0")):
    mine = driver.evaluate_into(interpolate.interpolate(workdir, lam), "xquad_r",
                                   EVAL_LANGUAGES["xquad_r"], plan.load_preset("smoke"),
                                   str(data_dir), tmp_path / f"{lam}.json")
    theirs = json.loads((out / "runs" / rid / "eval_xquad_r.json").read_text())
    assert mine["per_query"] == theirs["per_query"] and mine["settings"] == theirs["settings"]


def test_robust_report_section_and_tradeoff_plot(robust_dir):
  import numpy as np
  out, _ = robust_dir
  results = json.loads((out / "results.json").read_text())
  report = (out / "report.md").read_text()
  assert "## Robust fine-tuning" in report and "robust_tradeoff.png" in results["plots"]
  assert (out / "robust_tradeoff.png").stat().st_size > 1000
  assert check_report_numbers(results, report) > 150
  r = results["summary"]["robust"]
  assert r["base"] == "hybrid@0.5"
  assert r["methods"] == ["none", "mono", "cross", "hybrid@0.5", "wise@0.25", "wise@0.5",
                          "wise@0.75", "l2sp@1"]
  section = report[report.index("## Robust fine-tuning"):]
  for label in ("Hybrid + WiSE-FT (lambda=0.25)", "Hybrid + WiSE-FT (lambda=0.75)",
                "Hybrid + L2-SP (strength 1)", "X-X-mono", "X-Y"):
    assert f"| {label} |" in section
  # numbers recomputed from the runs' metrics (one seed: the mean is the run's value)
  runs = {r_["run_id"]: r_ for r_ in results["runs"]}
  def mono(run, languages):
    per = run["metrics"]["tydiqa_goldp"]["settings"]["mono"]["per_language"]
    return float(np.mean([per[l]["map"] for l in languages]))
  unseen, seen = ["sw", "te"], ["en"]
  assert r["languages"]["tydi"] == {"seen": seen, "unseen": unseen}
  wise = runs["hybrid-a0.5-s0-wise0.5"]
  cell = r["per_method"]["wise@0.5"]["tydi_unseen"]
  assert cell["score"]["mean"] == pytest.approx(mono(wise, unseen))
  assert cell["delta_vs_start"]["mean"] == pytest.approx(mono(wise, unseen) - mono(runs["start"], unseen))
  assert r["per_method"]["l2sp@1"]["tydi_seen"]["delta_vs_start"]["mean"] == pytest.approx(
      mono(runs["hybrid-a0.5-l2sp1-s0"], seen) - mono(runs["start"], seen))
  native = lambda run: run["metrics"]["afriqa"]["settings"]["native"]["macro"]["ndcg@10"]
  assert r["per_method"]["wise@0.25"]["afriqa_native"]["delta_vs_start"]["mean"] == pytest.approx(
      native(runs["hybrid-a0.5-s0-wise0.25"]) - native(runs["start"]))
  multi = lambda run: run["metrics"]["xquad_r"]["settings"]["multi"]["macro"]["map"]
  assert r["per_method"]["wise@0.75"]["multi mAP"]["mean"] == pytest.approx(multi(runs["hybrid-a0.5-s0-wise0.75"]))
  # the exploratory family: each robust method against the hybrid on two targets
  assert len(r["tests"]) == 4 * 2 and {t["family"] for t in r["tests"]} == {"robust (exploratory)"}
  for t in r["tests"]:
    assert t["across_queries"]["p_value"] is not None and t["across_queries"]["unit"] == "paragraph"
    assert t["across_queries"]["p_holm"] >= t["across_queries"]["p_value"]
    assert f"| {t['target']} |" in section
  # the main hybrid-vs-baselines tests are unchanged by the arm
  assert {row["baseline"] for row in results["summary"]["significance"]} == {"none", "mono", "cross"}


def test_robust_preset_adopts_finished_runs_without_redoing_them(robust_dir, data_dir, tmp_path):
  """A robust-style preset (hybrid + the arm, mono / cross adopted) on a finished study does
  no work and reports the finished mono / cross runs; an adopted run made otherwise is left out."""
  out = tmp_path / "robust"  # a copy: the fixture's report stays the robust command's
  shutil.copytree(robust_dir[0], out)
  before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.json")}
  results = replicate.main([  # the smoke preset made robust-style from the command line
      "--preset", "smoke", "--set", "name=smoke-robust", "--set", "strategies=(('hybrid', 0.5),)",
      "--set", "adopt=(('mono', 1.0), ('cross', 0.0))", "--set", "wise_lambdas=(0.25, 0.5, 0.75)",
      "--set", "l2sp=(1.0,)", "--fold", "A", "--model", "tiny-random",
      "--steps", "4", "--data_dir", str(data_dir), "--out", str(out)])
  assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.json")} == before
  assert {r["run_id"] for r in results["runs"]} == {"start", "mono-s0", "cross-s0", "hybrid-a0.5-s0"} | ROBUST_IDS
  assert results["summary"]["robust"]["methods"][:3] == ["none", "mono", "cross"]
  mono = json.loads((out / "runs" / "mono-s0" / "provenance.json").read_text())
  assert plan.finished(out / "runs" / "mono-s0", mono, EVAL_LANGUAGES)
  other = json.loads(json.dumps(mono))
  other["train_config"]["total_steps"] = 5
  assert not plan.finished(out / "runs" / "mono-s0", other, EVAL_LANGUAGES)


def test_smoke_study_numbers_match_the_golden_record(study_dir):
  """The tiny-model smoke study pins the study's behaviour for refactors: every macro metric
  of every run, the training loss and batch kinds (tests/golden/smoke_study_tiny.json, made
  by this fixture's command; tolerance for float round-off across machines)."""
  golden = json.loads((pathlib.Path(__file__).parent / "golden" / "smoke_study_tiny.json").read_text())
  results = json.loads((study_dir / "results.json").read_text())
  runs = {r["run_id"]: r for r in results["runs"] if not r.get("method")}
  assert set(runs) == set(golden)
  for rid, want in golden.items():
    run = runs[rid]
    for key, value in want.items():
      if key == "train/kind_counts":
        assert run["train"]["kind_counts"] == value, rid
      elif key == "train/final_loss":
        assert run["train"]["final_metrics"]["loss"] == pytest.approx(value, rel=1e-3), rid
      else:
        benchmark, setting, metric = key.split("/")
        got = run["metrics"][benchmark]["settings"][setting]["macro"][metric]
        assert got == pytest.approx(value, abs=0.01), (rid, key)


GOLDEN = pathlib.Path(__file__).parent / "golden"
# Lines that name the machine, the time or the command of one invocation.
_VOLATILE = ("- machine:", "- command:")


def _report_shape(report: str, out) -> str:
  """The report with every number (and its sign) masked as '#' and the run's own path and
  machine removed:
  what the study prints and where, independent of float round-off and of the machine."""
  lines = [l for l in report.replace(str(out), "OUT").splitlines() if not l.startswith(_VOLATILE)]
  return "\n".join(re.sub(r"[-+]?\d+(\.\d+)?", "#", l) for l in lines) + "\n"


def _key_paths(obj, prefix="") -> list[str]:
  """Every key path of a JSON tree (list items as [])."""
  if isinstance(obj, dict):
    return [p for k, v in obj.items() for p in [f"{prefix}/{k}", *_key_paths(v, f"{prefix}/{k}")]]
  if isinstance(obj, list):
    return sorted({p for v in obj for p in _key_paths(v, f"{prefix}[]")})
  return []


@pytest.mark.parametrize("which", ["smoke", "robust"])
def test_report_and_results_shape_match_the_golden_record(which, request):
  """The tiny smoke study's report.md (numbers masked) and results.json (every key path) are
  pinned for refactors (tests/golden/smoke_study_tiny.{report.md,keys.json}; the numbers are
  pinned by the golden above). MLIR_REGEN_GOLDEN=1 rewrites them."""
  out = request.getfixturevalue("study_dir") if which == "smoke" else request.getfixturevalue("robust_dir")[0]
  shape = _report_shape((out / "report.md").read_text(), out)
  keys = sorted(set(_key_paths(json.loads((out / "results.json").read_text()))))
  report_file, keys_file = GOLDEN / f"{which}_study_tiny.report.md", GOLDEN / f"{which}_study_tiny.keys.json"
  if os.environ.get("MLIR_REGEN_GOLDEN"):
    report_file.write_text(shape)
    keys_file.write_text(json.dumps(keys, indent=0) + "\n")
  assert shape == report_file.read_text()
  assert keys == json.loads(keys_file.read_text())


def test_wall_time_counts_every_invocation_including_an_interrupted_one(study_dir, tmp_path, data_dir,
                                                                        monkeypatch):
  """A resumed study reports the sum over invocations and the last one's time; an invocation
  killed after its first run still counts the time it spent."""
  from study import driver as driver_lib
  out = tmp_path / "study"
  shutil.copytree(study_dir, out)
  first = json.loads((out / "wall_time.json").read_text())["invocations"]
  assert first and first[0]["seconds"] > 0  # the fixture's (and any re-run of it)
  argv = ["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
          "--data_dir", str(data_dir), "--out", str(out)]
  calls = []
  real = driver_lib.run_one

  def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(driver_lib, "run_one", interrupted)
  with pytest.raises(KeyboardInterrupt):
    replicate.main(argv)
  assert len(json.loads((out / "wall_time.json").read_text())["invocations"]) == len(first) + 1
  monkeypatch.setattr(driver_lib, "run_one", real)
  results = replicate.main(argv)
  invocations = json.loads((out / "wall_time.json").read_text())["invocations"]
  assert results["invocations"] == len(first) + 2 == len(invocations)
  assert results["wall_time_s"] == pytest.approx(sum(i["seconds"] for i in invocations))
  assert results["wall_time_last_s"] == pytest.approx(invocations[-1]["seconds"])
  assert results["wall_time_s"] > first[0]["seconds"] + results["wall_time_last_s"]
  assert f"over {len(first) + 2} invocations (the last" in (out / "report.md").read_text()
