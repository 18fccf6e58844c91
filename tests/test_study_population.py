"""The study with `--population K` (study.populations): the planned trainings that share
one update program train as one population, and the study's numbers are those of the
same runs trained one by one (tests/golden/smoke_study_tiny.json, made one by one)."""
import json
import pathlib

import pytest

import replicate
from study import populations

GOLDEN = pathlib.Path(__file__).parent / "golden" / "smoke_study_tiny.json"


@pytest.fixture(scope="module")
def population_study(tmp_path_factory, data_dir):
  out = tmp_path_factory.mktemp("study_population")
  argv = ["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
          "--data_dir", str(data_dir), "--out", str(out), "--population", "3",
          "--set", "benchmarks=()"]
  passes = []
  from eval import population as eval_population
  evaluate_many = eval_population.evaluate_many

  def spy(models, benchmark, **options):
    passes.append((len(models), benchmark))
    return evaluate_many(models, benchmark, **options)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(eval_population, "evaluate_many", spy)
    results = replicate.main(argv)
  return out, results, argv, passes


def test_the_three_strategies_train_and_evaluate_as_one_population(population_study):
  out, results, _, passes = population_study
  for rid in ("mono-s0", "cross-s0", "hybrid-a0.5-s0"):
    summary = json.loads((out / "runs" / rid / "train_summary.json").read_text())
    assert summary["population"]["size"] == 3, rid
  assert {r["run_id"] for r in results["runs"]} == {"start", "mono-s0", "cross-s0",
                                                    "hybrid-a0.5-s0"}
  assert passes == [(3, "xquad_r")]  # the start is evaluated alone


def test_numbers_equal_the_runs_trained_one_by_one(population_study):
  """Batch kinds exactly, training losses and every golden metric of the benchmarks run
  here to the golden's 4 decimals (half a last digit, 5e-5, plus float round-off: vmap
  reorders reductions; the golden's own test allows 0.01 across machines)."""
  _, results, _, _ = population_study
  golden = json.loads(GOLDEN.read_text())
  runs = {r["run_id"]: r for r in results["runs"]}
  compared = 0
  for rid, want in golden.items():
    for key, value in want.items():
      if key == "train/kind_counts":
        assert runs[rid]["train"]["kind_counts"] == value, rid
      elif key == "train/final_loss":
        assert runs[rid]["train"]["final_metrics"]["loss"] == pytest.approx(value, abs=6e-5), rid
      elif key.split("/")[0] in runs[rid]["metrics"]:
        benchmark, setting, metric = key.split("/")
        got = runs[rid]["metrics"][benchmark]["settings"][setting]["macro"][metric]
        assert got == pytest.approx(value, abs=6e-5), (rid, key)
        compared += 1
  assert compared >= 9


def test_rerun_reads_the_population_back(population_study, capsys):
  out, results, argv, _ = population_study
  before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train_summary.json")}
  again = replicate.main(argv)
  assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train_summary.json")} == before
  assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in results["runs"]]


@pytest.mark.fast
def test_groups_keep_plan_order_and_the_cap():
  items = ["a1", "b1", "a2", "a3", "b2", "a4"]
  assert populations.groups(items, lambda s: s[0], 3) == [["a1", "a2", "a3"], ["a4"],
                                                          ["b1", "b2"]]
  assert populations.groups(items, lambda s: s[0], 1) == [[i] for i in
                                                          ("a1", "a2", "a3", "a4", "b1", "b2")]
  for bad in ("0", "many"):
    with pytest.raises(populations.StudyError, match="--population"):
      populations.size(bad)


@pytest.mark.fast
def test_a_member_that_stopped_is_an_error_not_a_result(tmp_path, monkeypatch):
  """A member held fixed after non-finite losses ("failed" in its summary) gets no
  train_summary.json (so it is never evaluated as if trained) and the study stops with
  one error naming it, as the run alone would have; the others' summaries are kept."""
  from mlir_train import population
  from study.plan import PlannedRun
  items = [PlannedRun(f"r{k}", "mono", 1.0, k) for k in range(3)]
  monkeypatch.setattr(population, "train_population", lambda configs, workdirs: [
      {"final_step": 4, "failed": None}, {"final_step": 2, "failed": "stopping at step 2: "
                                           "3 non-finite losses in a row"},
      {"final_step": 4, "failed": None}])
  monkeypatch.setattr(populations, "program_key", lambda config: "one")
  written = []
  with pytest.raises(populations.PopulationTrainingError, match="r1: stopping at step 2"):
    populations.train_populations(items, lambda item: None, lambda item: tmp_path / item.rid, 3,
                                  lambda path, obj: written.append(path.parent.name),
                                  lambda item: None)
  assert written == ["r0", "r2"]


@pytest.mark.slow
def test_a_killed_study_continues_its_population(tmp_path, data_dir):
  """SIGKILL `python -m study --population 3` after its population's step-2 checkpoints,
  re-run: the same three runs form the same population, which resumes from step 2 and ends
  with the one-by-one golden's numbers (each member's batches.jsonl: 4 steps, none twice)."""
  import os
  import signal
  import subprocess
  import sys
  import time
  out = tmp_path / "study"
  argv = [sys.executable, "-m", "study", "--preset", "smoke", "--fold", "A", "--model",
          "tiny-random", "--steps", "4", "--data_dir", str(data_dir), "--out", str(out),
          "--population", "3", "--set", "benchmarks=tydiqa_goldp",
          "--set", "train_overrides.checkpoint_every_steps=2"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.Popen(argv, cwd=repo, env={**env, "MLIR_TRAIN_STEP_DELAY_S": "1"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = [out / "runs" / rid / "train" / "checkpoints" / "2"
                 for rid in ("mono-s0", "cross-s0", "hybrid-a0.5-s0")]
  deadline = time.time() + 600
  while not all(c.is_dir() for c in checkpoints):
    assert proc.poll() is None and time.time() < deadline, "no step-2 checkpoints"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not list(out.glob("runs/*/train_summary.json"))
  again = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming the population of 3 from step 2" in again.stderr
  results = json.loads((out / "results.json").read_text())
  golden = json.loads(GOLDEN.read_text())
  for run in results["runs"]:
    if run["run_id"] == "start":
      continue
    steps = [json.loads(l)["step"] for l in
             (out / "runs" / run["run_id"] / "train" / "batches.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], run["run_id"]
    assert run["train"]["resumed_from_step"] == 2
    for key, value in golden[run["run_id"]].items():
      if key.startswith("tydiqa_goldp/"):
        _, setting, metric = key.split("/")
        got = run["metrics"]["tydiqa_goldp"]["settings"][setting]["macro"][metric]
        assert got == pytest.approx(value, abs=6e-5), (run["run_id"], key)
