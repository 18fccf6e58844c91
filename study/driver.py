"""The hybrid-batch study in one command.

    python -m study --preset smoke --fold A --out runs/smoke     (or: python -m replicate ...)

Trains the default model with each sampling strategy (X-X-mono, X-Y, hybrid at
alpha 0.5; `full` adds an alpha sweep and the "mixed" baseline) over several
seeds, evaluates every trained model and the untrained starting model on the
fold's LAReQA benchmark and the preset's other benchmarks (default: TyDi QA GoldP
passages and sentences, AfriQA; any registry entry with study sections, e.g.
`--set benchmarks=tydiqa_goldp,ntrex128`); the robustness arm (`--preset robust`, part
of `full`, `--robust` for any preset) adds, for the hybrid run of every seed, WiSE-FT
interpolations toward the start (no training) and an L2-SP run, evaluated the same way.
It writes into --out:

  results.json   every number of every run and seed, plus the summary the report shows
  report.md      paper-style table, a section per benchmark, paired tests, robust fine-tuning
  *.png          per-language changes, language bias, mAP vs alpha (full), unseen-language
                 change vs multi mAP (robust arm)
  runs/<id>/     each run's training workdir and evaluation JSON

Re-running the same command resumes: finished trainings and evaluations are
read back, an interrupted training resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import sys
import time
from typing import Any

from data_pipelines import files, folds
from data_pipelines.errors import ProjectError
from study import plan as plan_lib
from study import plots, populations, render, summaries
from study.plan import PROVENANCE_FILE, PlannedRun, Preset

INTERPOLATION_FILE = "interpolation.json"  # WiSE-FT runs: lambda, endpoints, weight fingerprint
WALL_TIME_FILE = "wall_time.json"  # every invocation's start and seconds spent in runs


class WallClock:
  """The study's wall time over invocations: this one's seconds are recorded in
  `wall_time.json` after every finished run (so a killed invocation counts up to its last
  run), beside those of the earlier invocations."""

  def __init__(self, path: pathlib.Path):
    self.path, self.started = path, time.time()
    self.earlier = json.loads(path.read_text())["invocations"] if path.exists() else []
    self.start_text = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

  def record(self) -> dict:
    this = {"started": self.start_text, "seconds": time.time() - self.started}
    invocations = self.earlier + [this]
    _write_json(self.path, {"invocations": invocations})
    return {"wall_time_s": sum(i["seconds"] for i in invocations),
            "wall_time_last_s": this["seconds"], "invocations": len(invocations)}


def _write_json(path: pathlib.Path, obj) -> None:
  """Whole or not at all (an interrupted run never leaves half a file; a full disk is one
  `error:` line naming the file)."""
  files.atomic_write_json(path, obj, indent=1)


def _machine() -> str:
  import jax
  dev = jax.devices()[0]
  return f"{platform.node() or 'host'}: {os.cpu_count()} CPU cores, jax {jax.__version__} on {dev.platform} ({dev.device_kind})"


class Progress:
  """Overall progress over weighted work units with an estimate of time left."""

  def __init__(self, total_units: float):
    from tqdm import tqdm
    self.bar = tqdm(total=round(total_units), desc="study", unit="u", dynamic_ncols=True,
                    file=sys.stderr, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
    self.counted: set = set()  # rid (trained) and (rid, benchmark) (evaluated) counted already

  def advance(self, units: float, what: str) -> None:
    self.bar.set_postfix_str(what)
    self.bar.update(round(units))

  def close(self):
    self.bar.close()


def eval_options(benchmark: str, languages, preset: Preset, data_dir) -> dict:
  """`eval.run.evaluate`'s options for one benchmark of the study (also population passes)."""
  return dict(languages=languages, data_dir=data_dir, batch_size=preset.eval_batch_size,
              max_length=preset.max_length(benchmark), per_query=True, progress=False,
              max_questions=preset.eval_max_questions,
              max_documents=(preset.eval_max_documents or {}).get(benchmark))


def evaluate_into(model, benchmark: str, languages, preset: Preset, data_dir, out: pathlib.Path):
  """Evaluate once; return the saved JSON on later calls (resume)."""
  if out.exists():
    return json.loads(out.read_text())
  from eval import run as eval_run
  result = eval_run.evaluate(model, benchmark, **eval_options(benchmark, languages, preset,
                                                              data_dir))
  _write_json(out, result)
  return result


def interpolation_record(model, item: PlannedRun, out: pathlib.Path) -> dict:
  """What a WiSE-FT run evaluated: lambda, the two endpoints, and the float64 sum of every
  parameter array of the evaluated model (a fingerprint to check the weights against)."""
  import jax
  import numpy as np
  return {"lambda": item.lam, "start": item.base and json.loads(
              (out / "runs" / item.base / "train" / "config.json").read_text())["model"],
          "finetuned": str(out / "runs" / item.base / "train"),
          "formula": "(1 - lambda) * start + lambda * finetuned",
          "leaf_sums": {jax.tree_util.keystr(path): float(np.asarray(leaf, np.float64).sum())
                        for path, leaf in jax.tree_util.tree_leaves_with_path(model.params)}}


def main(argv=None) -> dict:
  """The command line; the project's errors end in one `error: ...` line and exit code 2."""
  from mlir_train import compile_cache
  compile_cache.enable()  # before the first compilation
  try:
    return _main(argv)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m study",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", default="smoke", metavar="NAME|FILE",
                      help="configs/study/NAME.py or your own preset file. smoke: ~10 min on a "
                           "2-core CPU, pipeline check only; quick: 3 seeds on a 2-core CPU, "
                           "full XQuAD-R (about 2 h); robust: quick's hybrid runs + WiSE-FT and L2-SP (reuses "
                           "a finished quick study in the same --out); gpu: the three strategies, 3 "
                           "seeds at batch 100, evaluated as quick is, minutes on one GPU "
                           "(perf/gpu.sh runs it); full: alpha sweep + mixed + "
                           "the robustness arm, 5 seeds, a few GPU hours; decisive: 20 seeds x "
                           "alpha 0, 0.25, 0.5, 0.75, 1 + WiSE-FT, every benchmark whole, NTREX-128 "
                           "(an accelerator)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a preset field (repeatable), e.g. --set seeds=0,1 or "
                           "--set train_overrides.learning_rate=3e-5 or "
                           "--set benchmarks=tydiqa_goldp,ntrex128")
  parser.add_argument("--fold", choices=["A", "B"], default="A",
                      help="A: train on MLQA-R, evaluate XQuAD-R + TyDi; B: train XQuAD-R, evaluate MLQA-R + TyDi")
  parser.add_argument("--out", required=True, help="output directory (re-use it to resume)")
  parser.add_argument("--model", default="e5-small",
                      help="starting model: e5-small (offline default), a local Hugging Face dir, or tiny-random (tests)")
  parser.add_argument("--data_dir", default=None, help="raw data directory (default: $MLIR_DATA_DIR or ../shared/data)")
  parser.add_argument("--seeds", default=None, help="comma-separated seeds overriding the preset's")
  parser.add_argument("--steps", type=int, default=None, help="training steps per run overriding the preset's")
  parser.add_argument("--robust", action="store_true",
                      help="add the robustness arm to the preset: WiSE-FT of each hybrid (alpha "
                           "0.5) run at lambda 0.25, 0.5, 0.75 and the hybrid trained with L2-SP "
                           "of configs/study/robust.py (the robust and full presets have it)")
  parser.add_argument("--train_files", default=None, metavar="PATHS",
                      help="train on your own files (comma-separated paths or globs: JSON Lines, "
                           "Parquet, datasets dirs; see data_pipelines.train_files) instead of the "
                           "fold's pairs, on all their languages; still evaluated on the fold's "
                           "evaluation side, and checked against it for overlap")
  parser.add_argument("--population", default="auto", metavar="K|auto",
                      help="train runs that share one update program (same model, shapes, "
                           "optimizer; any seed, strategy, alpha) together, at most K per "
                           "population (mlir_train.population); auto: 20 on an accelerator, 1 "
                           "(one by one) on a CPU, where populations were not faster")
  parser.add_argument("--dry_run", action="store_true",
                      help="plan only: print the runs, trainings and evaluations the command would "
                           "do (and which are already finished in --out), then stop")
  return parser.parse_args(argv)


def build_preset(args) -> Preset:
  """The preset with the command line's overrides (--set, --seeds, --steps, --robust)."""
  overrides = list(args.set)
  if args.seeds:
    overrides.append(f"seeds=({args.seeds},)")
  if args.steps:
    overrides.append(f"train_overrides.total_steps={args.steps}")
  preset = plan_lib.load_preset(args.preset, overrides)
  if args.robust and not (preset.wise_lambdas or preset.l2sp):
    from configs.study import robust
    preset = dataclasses.replace(preset, wise_lambdas=robust.WISE_LAMBDAS, l2sp=(robust.L2SP,))
  from eval import benchmarks
  for name in preset.benchmarks:
    if not benchmarks.get(name).study:
      raise plan_lib.StudyError(f"preset {preset.name}: benchmark {name!r} declares no study "
                                f"sections in eval/benchmarks.py; those with sections: "
                                f"{', '.join(n for n, b in benchmarks.BENCHMARKS.items() if b.study)}")
  return preset


def prepare_run_dir(run_dir: pathlib.Path, provenance: dict) -> None:
  """The run's directory with its provenance.json (what `check_run_dirs` compares)."""
  run_dir.mkdir(parents=True, exist_ok=True)
  if not (run_dir / PROVENANCE_FILE).exists():
    _write_json(run_dir / PROVENANCE_FILE, provenance)


def train_config_of(item: PlannedRun, args, preset: Preset, out: pathlib.Path):
  """The training config of a planned trained run."""
  return plan_lib.train_config(preset, args.fold, item.sampling, item.alpha, item.seed,
                               args.model, args.data_dir, out / "shards",
                               train_files=args.train_files, l2sp=item.l2sp)


def run_one(item: PlannedRun, args, preset: Preset, out: pathlib.Path, provenance: dict,
            eval_languages: dict, progress: Progress, steps: int) -> dict:
  """Train (or interpolate, or load) one planned run and evaluate it on every benchmark;
  finished parts are read back. Returns its record for results.json (with per_query)."""
  from mlir_train import models
  rid = item.rid
  run_dir = out / "runs" / rid
  run_dir.mkdir(parents=True, exist_ok=True)
  record: dict[str, Any] = {"run_id": rid, "sampling": item.sampling, "alpha": item.alpha,
                            "seed": item.seed}
  if item.method:
    record["method"] = item.method
    record.update({"lambda": item.lam, "base_run": item.base} if item.method == "wise"
                  else {"l2sp": item.l2sp})
  record["provenance"] = provenance[rid]
  prepare_run_dir(run_dir, provenance[rid])

  # --- train (resumes from the run's last checkpoint; skipped when finished) ------------
  if item.sampling == "none":
    load = lambda: models.load_model(args.model)
  elif item.lam is not None:  # WiSE-FT: the trained base run's weights, interpolated
    from mlir_train import interpolate
    base_workdir = out / "runs" / item.base / "train"
    load = lambda: interpolate.interpolate(base_workdir, item.lam)
  else:
    workdir = run_dir / "train"
    done_file = run_dir / "train_summary.json"
    if not done_file.exists():
      from mlir_train import train as train_lib
      config = train_config_of(item, args, preset, out)
      _write_json(done_file, train_lib.train(config, str(workdir)))
    record["train"] = json.loads(done_file.read_text())
    load = lambda: models.load_model(str(workdir))
  if rid not in progress.counted:  # (populations count their members as they finish)
    progress.advance(steps if item.trained else 0, f"trained {rid}")

  # --- evaluate every benchmark (each result read back when already written) ------------
  model = None
  record["metrics"], record["per_query"] = {}, {}
  for benchmark in eval_languages:
    target = run_dir / f"eval_{benchmark}.json"
    if not target.exists() and model is None:
      model = load()
    if model is not None and item.lam is not None and not (run_dir / INTERPOLATION_FILE).exists():
      _write_json(run_dir / INTERPOLATION_FILE, interpolation_record(model, item, out))
    result = evaluate_into(model, benchmark, eval_languages[benchmark], preset, args.data_dir, target)
    record["per_query"][benchmark] = result.pop("per_query", {})
    record["metrics"][benchmark] = result
    if (rid, benchmark) not in progress.counted:
      progress.advance(max(10.0, steps * 0.5), f"evaluated {rid} on {benchmark}")
  if item.lam is not None and (run_dir / INTERPOLATION_FILE).exists():
    record["interpolation"] = {k: v for k, v in json.loads(
        (run_dir / INTERPOLATION_FILE).read_text()).items() if k != "leaf_sums"}
  return record


def print_plan(plan: list[PlannedRun], preset: Preset, eval_languages: dict, out: pathlib.Path,
               population_sizes: list[int] | None = None) -> dict:
  """--dry_run: what the study would do, and what --out already holds; returns the counts
  (`population_sizes`: the members of each population the pending trainings form)."""
  trained = [i for i in plan if i.trained]
  wise = [i for i in plan if i.lam is not None]
  done = {i.rid for i in plan if (out / "runs" / i.rid / "train_summary.json").exists()}
  evaluations = len(plan) * len(eval_languages)
  finished = sum((out / "runs" / i.rid / f"eval_{b}.json").exists() for i in plan for b in eval_languages)
  counts = {"runs": len(plan), "trainings": len(trained), "wise": len(wise),
            "trainings_done": len(done & {i.rid for i in trained}),
            "evaluations": evaluations, "evaluations_done": finished,
            "benchmarks": {b: (langs or "all") for b, langs in eval_languages.items()}}
  print(f"preset {preset.name}: {len(plan)} models ({len(trained)} trainings of "
        f"{preset.train_overrides['total_steps']} steps, {len(wise)} WiSE-FT, the start), "
        f"{len(preset.seeds)} seeds; {evaluations} evaluations")
  for b, langs in eval_languages.items():
    print(f"  {b}: {', '.join(langs) if langs else 'every language'}"
          f" (max {preset.max_length(b)} tokens"
          + (f", first {preset.eval_max_documents[b]} passages" if (preset.eval_max_documents or {}).get(b) else "")
          + (f", first {preset.eval_max_questions} question ids" if preset.eval_max_questions else "") + ")")
  print(f"already in {out}: {counts['trainings_done']} of {len(trained)} trainings, "
        f"{finished} of {evaluations} evaluations")
  if population_sizes:
    counts["populations"] = population_sizes
    print(f"pending trainings as {len(population_sizes)} populations of "
          f"{', '.join(map(str, population_sizes))} members (--population)")
  return {"dry_run": counts, "plan": [i.rid for i in plan]}


def _main(argv=None) -> dict:
  # --- settings: preset, fold, languages ------------------------------------------------
  args = parse_args(argv)
  preset = build_preset(args)
  out = pathlib.Path(args.out)
  from mlir_train import config_validation
  config_validation.check_writable(out, "study directory")
  out.mkdir(parents=True, exist_ok=True)
  if args.dry_run:  # reads only: no lock
    return _study(args, preset, out, argv)
  with files.DirectoryLock(out, "study"):  # one study process per --out, before any work
    return _study(args, preset, out, argv)


def _study(args, preset: Preset, out: pathlib.Path, argv) -> dict:
  """The study in --out: plan, train and evaluate every run, aggregate and report."""
  (out / "runs").mkdir(exist_ok=True)
  command = "python -m replicate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  fold = folds.get_fold(args.fold)
  lareqa = fold.eval_benchmarks[0][0]  # the LAReQA benchmark the fold does not train on
  train_languages = (preset.train_languages or {}).get(args.fold) or list(fold.train_languages)
  if args.train_files:
    from data_pipelines import train_files as train_files_lib
    train_languages = list(train_files_lib.read_train_files(args.train_files).languages)
  eval_languages = {b: (preset.eval_languages or {}).get(b) for b in (lareqa, *preset.benchmarks)}

  # --- plan: the starting model, every strategy x seed, the robustness arm ----------------
  plan = plan_lib.plan_runs(preset)
  provenance = {}
  for item in plan:
    if item.lam is not None:
      provenance[item.rid] = plan_lib.wise_provenance(item.base, provenance[item.base], item.lam)
    else:
      provenance[item.rid] = plan_lib.run_provenance(
          preset, args.fold, item.sampling, item.alpha, item.seed, args.model, args.data_dir,
          out / "shards", eval_languages, train_files=args.train_files, l2sp=item.l2sp)
  adopted = [item for item in plan if item.adopted]
  plan = [item for item in plan if not item.adopted]
  plan += [item for item in adopted
           if plan_lib.finished(out / "runs" / item.rid, provenance[item.rid], eval_languages)]
  plan_lib.check_run_dirs(out, {item.rid: provenance[item.rid] for item in plan})
  cap = populations.size(args.population)
  pending = [item for item in plan if item.trained
             and not (out / "runs" / item.rid / populations.SUMMARY_FILE).exists()]
  if args.dry_run:
    sizes = None
    if cap > 1 and len(pending) > 1:
      keys = {item.rid: populations.program_key(train_config_of(item, args, preset, out))
              for item in pending}
      sizes = [len(g) for g in populations.groups(pending, lambda item: keys[item.rid], cap)]
    return print_plan(plan, preset, eval_languages, out, sizes)

  # --- train and evaluate every run (finished work is read back) --------------------------
  steps = preset.train_overrides["total_steps"]
  progress = Progress(len(plan) * len(eval_languages) * max(10.0, steps * 0.5)
                      + sum(item.trained for item in plan) * steps)
  clock = WallClock(out / WALL_TIME_FILE)

  # --- populations: trainings that share one update program train together ----------------
  if cap > 1 and len(pending) > 1:
    for item in pending:
      prepare_run_dir(out / "runs" / item.rid, provenance[item.rid])

    def trained(item):
      progress.advance(steps, f"trained {item.rid}")
      progress.counted.add(item.rid)
    populations.train_populations(pending, lambda item: train_config_of(item, args, preset, out),
                                  lambda item: out / "runs" / item.rid, cap, _write_json, trained)
    clock.record()
  if cap > 1:  # the trained runs' evaluations, K models per pass
    from eval import population as eval_population

    def evaluated(item, benchmark):
      progress.advance(max(10.0, steps * 0.5), f"evaluated {item.rid} on {benchmark}")
      progress.counted.add((item.rid, benchmark))
    populations.evaluate_populations(
        [item for item in plan if item.trained
         and (out / "runs" / item.rid / populations.SUMMARY_FILE).exists()],
        lambda item: out / "runs" / item.rid,
        list(eval_languages), cap,
        lambda models, b: eval_population.evaluate_many(
            models, b, **eval_options(b, eval_languages[b], preset, args.data_dir)),
        _write_json, evaluated)
    clock.record()
  runs = []
  for item in plan:
    runs.append(run_one(item, args, preset, out, provenance, eval_languages, progress, steps))
    clock.record()  # an interrupted invocation still counts up to its last finished run
  progress.close()

  # --- aggregate, report, plots --------------------------------------------------------------
  first = runs[0]["metrics"]
  results = {
      "preset": preset.name, "fold": args.fold, "model": args.model, "note": preset.note,
      "command": command, "machine": _machine(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **clock.record(),  # wall_time_s (every invocation), wall_time_last_s, invocations
      "seeds": list(preset.seeds), "train_languages": train_languages,
      "train_files": (plan_lib.train_files_identity(args.train_files) if args.train_files else None),
      "train_overrides": preset.train_overrides,
      "eval_languages": {b: first[b]["languages"] for b in first},
      "eval_options": {"max_length": preset.max_lengths(first),
                       "truncated": {b: first[b]["options"].get("truncated") for b in first},
                       "max_questions": preset.eval_max_questions,
                       "max_documents": preset.eval_max_documents,
                       "questions": {b: first[b]["options"].get("questions") for b in first},
                       "candidates": {b: first[b]["options"].get("candidates") for b in first}},
      "runs": [{k: v for k, v in r.items() if k != "per_query"} for r in runs],
      "robust": ({"alpha": preset.robust_alpha, "wise_lambdas": list(preset.wise_lambdas),
                  "l2sp": list(preset.l2sp)} if preset.wise_lambdas or preset.l2sp else None),
  }
  results["paper_numbers"] = [list(row) for row in render.PAPER_NUMBERS]
  results["summary"] = summaries.summarize(runs, lareqa_benchmark=lareqa, train_languages=train_languages,
                                           margin=preset.equivalence_margin)
  results["plots"] = plots.write_plots(results, out)
  _write_json(out / "results.json", results)
  files.atomic_write_text(out / "report.md", render.render_markdown(results))
  print(f"wrote {out / 'report.md'} and {out / 'results.json'} "
        f"({results['wall_time_last_s'] / 60:.1f} min; {results['wall_time_s'] / 60:.1f} min over "
        f"{results['invocations']} invocations)")
  return results
