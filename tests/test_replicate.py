"""The study driver end to end on a tiny random model: structure, provenance, resume."""
import json
import re

import pytest

from mlir_train import replicate


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


def test_report_structure_and_every_number_comes_from_results(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  report = (study_dir / "report.md").read_text()
  for heading in ("paper-style table", "TyDi QA GoldP: robustness", "Change against the starting model",
                  "## TyDi QA GoldP sentences: robustness", "## AfriQA: native against translated",
                  "Gap native - translated", "Hybrid against each baseline", "Plots"):
    assert heading in report
  assert {"tydi_per_language.png", "tydi_sentences_per_language.png",
          "afriqa_per_language.png"} <= set(results["plots"])
  for plot in results["plots"]:
    assert (study_dir / plot).stat().st_size > 1000
  known = _numbers_in(results, set())
  rows = [l for l in report.splitlines() if l.startswith("|") and not l.startswith("|---")]
  header_rows = {l for l in rows if "strategy" in l or "hybrid | baseline" in l}
  checked = 0
  for row in rows:
    if row in header_rows:
      continue
    for cell in row.strip("|").split("|")[1:]:  # the first column is a label
      for number in re.findall(r"[-+]?\d+\.\d+|(?<![\w.@])\d+(?![\w.])", cell):
        assert number in known, f"{number!r} in report row {row!r} is not in results.json"
        checked += 1
  assert checked > 100


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
  assert {"TyDi sentences mono mAP (macro)", "AfriQA native nDCG@10 (macro)"} <= planned
  for r in s["significance"]:  # every target is grouped by real question ids now
    assert r["across_queries"]["unit"] == "question id", r["target"]
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
  with pytest.raises(replicate.StudyError, match=r"start \(eval\.languages\.afriqa: \['hau', 'swa'\] -> \['hau'\]"):
    replicate.check_run_dirs(study_dir, {"start": changed})
  replicate.check_run_dirs(study_dir, {"start": stored})  # the same settings pass
