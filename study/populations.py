"""The study's trainings as populations: runs that share one update program train together.

`python -m study ... --population K` groups the planned trainings whose configs share the
update step's program (`mlir_train.population.shared_keys`: the model, shapes, optimizer;
they differ in seed, sampling, alpha, learning rate) into populations of at most K members,
in plan order, and trains each in one program (`population.train_population`); then the
trained runs are evaluated K at a time (`eval.population.evaluate_many`: texts tokenised
once, one stacked forward pass). Each member's workdir, `train_summary.json` and
`eval_<benchmark>.json` are what a run alone leaves, so the rest of the study reads them
unchanged; a killed population is continued by the re-run (the same unfinished runs form
the same population, which resumes from its members' checkpoints).

Default ("auto"): on an accelerator populations of up to `ACCELERATOR_SIZE`; on a CPU one
run at a time unless measured faster (perf/results/population.md).
"""
from __future__ import annotations

import json
import pathlib
from typing import Callable, Sequence

from data_pipelines.errors import ProjectError
from study.plan import PlannedRun, StudyError

class PopulationTrainingError(ProjectError):
  """A member of a population stopped (non-finite losses), as its run alone would have."""


ACCELERATOR_SIZE = 20  # members per population on a GPU / TPU (memory: --population caps it)
CPU_SIZE = 1           # on a CPU: one by one (perf/results/population.md)
SUMMARY_FILE = "train_summary.json"


def size(requested: str | int | None) -> int:
  """Members per population: `requested` (an int >= 1), or "auto"/None by the backend."""
  if requested in (None, "auto"):
    import jax
    return CPU_SIZE if jax.default_backend() == "cpu" else ACCELERATOR_SIZE
  try:
    value = int(requested)
  except ValueError:
    value = 0
  if value < 1:
    raise StudyError(f"--population must be a whole number >= 1 or auto, got {requested!r}")
  return value


def program_key(config) -> str:
  """What members of one population must share, as one string (equal keys: one program)."""
  from mlir_train import config_validation, population
  values = config_validation.as_dict(config)
  return json.dumps({k: values.get(k) for k in population.shared_keys(values)},
                    sort_keys=True, default=repr)


def groups(items: Sequence, key: Callable, cap: int) -> list[list]:
  """`items` in plan order, split by `key` into runs of at most `cap` (first-seen order)."""
  by_key: dict[str, list] = {}
  for item in items:
    by_key.setdefault(key(item), []).append(item)
  return [members[i:i + cap] for members in by_key.values()
          for i in range(0, len(members), cap)]


def train_populations(pending: Sequence[PlannedRun], config_of: Callable[[PlannedRun], object],
                      run_dir: Callable[[PlannedRun], pathlib.Path], cap: int,
                      write_json: Callable, on_trained: Callable[[PlannedRun], None]) -> int:
  """Train every pending run (trained, no summary yet) in populations of at most `cap`;
  writes each member's `train_summary.json`; returns the number of populations trained.
  A group of one trains alone (`train.train`), as without populations."""
  from mlir_train import population
  from mlir_train import train as train_lib
  configs = {item.rid: config_of(item) for item in pending}
  trained = 0
  for members in groups(pending, lambda item: program_key(configs[item.rid]), cap):
    workdirs = [run_dir(item) / "train" for item in members]
    if len(members) == 1:
      summaries = [train_lib.train(configs[members[0].rid], str(workdirs[0]))]
    else:
      summaries = population.train_population([configs[item.rid] for item in members], workdirs)
      trained += 1
    failed = []
    for item, summary in zip(members, summaries):
      if summary.get("failed"):  # held fixed in its population; alone it would have stopped
        failed.append(f"{item.rid}: {summary['failed']}")
        continue
      write_json(run_dir(item) / SUMMARY_FILE, summary)
      on_trained(item)
    if failed:
      raise PopulationTrainingError(
          f"{len(failed)} run(s) of a population stopped (the others are saved): "
          + "; ".join(failed))
  return trained


def evaluate_populations(items: Sequence[PlannedRun], run_dir: Callable[[PlannedRun], pathlib.Path],
                         benchmarks: Sequence[str], cap: int, evaluate_many: Callable,
                         write_json: Callable, on_evaluated: Callable[[PlannedRun, str], None]) -> int:
  """Evaluate the trained `items` lacking an `eval_<benchmark>.json`, at most `cap` models
  per pass (`evaluate_many(models, benchmark) -> [result]`), each model loaded once for all
  its benchmarks; returns the number of passes."""
  from mlir_train import models as models_lib
  missing = lambda item: [b for b in benchmarks
                          if not (run_dir(item) / f"eval_{b}.json").exists()]
  todo = [item for item in items if missing(item)]
  passes = 0
  for members in (todo[i:i + cap] for i in range(0, len(todo), cap)):
    loaded = {item.rid: models_lib.load_model(str(run_dir(item) / "train")) for item in members}
    for benchmark in benchmarks:
      these = [item for item in members if benchmark in missing(item)]
      if not these:
        continue
      results = evaluate_many([loaded[item.rid] for item in these], benchmark)
      passes += 1
      for item, result in zip(these, results):
        write_json(run_dir(item) / f"eval_{benchmark}.json", result)
        on_evaluated(item, benchmark)
  return passes
