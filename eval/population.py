"""Evaluation of many models of one architecture on one benchmark in one pass (issue 30).

  python -m eval.population --models runs/m0,runs/m1,runs/m2 --benchmark xquad_r \
      --out_dir results/population

The members of a population (or any models of one base: same architecture and tokenizer)
are scored on the same texts. Here the benchmark's sets are read once, each kind of text
(questions, candidates, translated questions) is tokenised once into the batches
`mlir_train.encode.embed` makes, and every batch goes through all K parameter sets in
one forward pass (`encode.embed_many`: `jax.vmap` over a leading parameter axis, leaves
equal in every model held once). Each model's protocol and search then run on its own
vectors (`eval.run.score`), so its result JSON, report and plots are those `eval.run`
writes for it alone; only the timings differ (each model's are its share of the pass).
The stacked pass gives each model's vectors up to float round-off (XLA's batched matmuls
may sum in another order: on a CPU in float32 within ~1e-7), which moves a metric only
where two scores tie to that precision; `--one_by_one` (`stacked=False`) runs the models
one after another on the same tokenised batches instead, bit-identical to `eval.run`.

Models whose architecture or tokenizer differ are refused (one `error:` line); models
whose prompts differ are fine (their texts are tokenised once per prompt).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import re
import sys
import time
from typing import Sequence

from configs import split_list
from data_pipelines.errors import ProjectError
from eval import report, run
from mlir_train import config_validation

log = logging.getLogger(__name__)


class PopulationEvalError(run.EvalError):
  """Bad population evaluation request (no models, two models writing one file)."""


def evaluate_many(models_or_names: Sequence, benchmark: str,
                  languages: Sequence[str] | None = None, data_dir=None,
                  out_dir: str | os.PathLike | None = None, stacked: bool = True,
                  **options) -> list[dict]:
  """`eval.run.evaluate` of each model (a `LoadedModel`, or a name/path for `load_model`)
  on one benchmark, in one pass; returns one result dict per model, in order.

  `options` are `evaluate`'s (batch_size, max_length, max_questions, split, files, ...;
  not `out` or `trec_run`). With `out_dir`, each result is also written as
  `<out_dir>/<model name>.json` with its report and plots (`result_paths`).

  `stacked`: all models in one forward pass per batch (vmap): each model's vectors equal
  its own up to float round-off (`encode.embed_many`), so a score can move only where two
  candidates' scores lie within that round-off; `stacked=False`: the models one after
  another on the same tokenised batches, bit-identical to `evaluate`.
  """
  if not models_or_names:
    raise PopulationEvalError("no models to evaluate")
  req = run.request(benchmark, languages, data_dir, **options)
  outs = result_paths(models_or_names, out_dir) if out_dir is not None else None
  started = time.perf_counter()
  models = [run.load(m) for m in models_or_names]
  from mlir_train import encode
  try:
    encode.check_stackable(models)
  except encode.StackError as e:
    raise PopulationEvalError(str(e)) from None
  loaded = time.perf_counter()
  sets, merged = run.read(req)
  encoded = run.encode_sets_many(models, sets, req.batch_size, req.max_length, req.progress,
                                 req.batch_tokens, stacked)
  n = len(models)
  timing = {"load_model": (loaded - started) / n, "encode": (time.perf_counter() - loaded) / n}
  results = []
  for model, (model_encoded, seconds, truncation) in zip(models, encoded):
    results.append(run.score(req, model.name, model_encoded, sets, merged, truncation,
                             {**timing, "encode_per_language": seconds}))
  if outs is not None:
    for result, out in zip(results, outs):
      run.write(result, out)
  return results


def result_name(model_or_name) -> str:
  """A model's result file stem: the last part of its name or path ("runs/pop/m0" -> "m0"),
  characters other than letters, digits, '.', '_' and '-' as '_'."""
  name = str(getattr(model_or_name, "name", model_or_name)).rstrip("/\\")
  return re.sub(r"[^A-Za-z0-9._-]", "_", pathlib.PurePath(name).name or name) or "model"


def result_paths(models_or_names: Sequence, out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """`<out_dir>/<result_name>.json` per model; `PopulationEvalError` if two would be one file."""
  paths, seen = [], {}
  for model in models_or_names:
    name = result_name(model)
    if name in seen:
      raise PopulationEvalError(
          f"{getattr(model, 'name', model)} and {seen[name]} would both write {name}.json; "
          f"give each model once, from directories with distinct names")
    seen[name] = getattr(model, "name", model)
    paths.append(pathlib.Path(out_dir) / f"{name}.json")
  return paths


def main_metric(result: dict) -> tuple[str, float | None]:
  """("<setting> <metric>", value) of the benchmark's main score (`eval.benchmarks`)."""
  from eval import benchmarks
  bench = benchmarks.get(result["benchmark"])
  table = result["settings"].get(bench.main_setting, {}).get("macro", {})
  return f"{bench.main_setting} {bench.main_metric}", table.get(bench.main_metric)


def table(results: Sequence[dict], paths: Sequence[os.PathLike]) -> str:
  """One line per model: its main score and its result file."""
  label = main_metric(results[0])[0]
  width = max(len("model"), *(len(r["model"]) for r in results))
  lines = [f"{'model':<{width}}  {label:>12}  result"]
  for result, path in zip(results, paths):
    lines.append(f"{result['model']:<{width}}  {report.fmt(main_metric(result)[1]):>12}  {path}")
  return "\n".join(lines)


def main(argv=None) -> None:
  """The command line; the project's errors end in one `error: ...` line and exit code 2."""
  from mlir_train import compile_cache
  compile_cache.enable()  # before the first compilation
  try:
    _main(argv)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def _main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m eval.population",
      description="Evaluate several models of one architecture and tokenizer (e.g. the "
                  "members of a population, or runs trained from one base model) on one "
                  "benchmark in one pass: the texts are read and tokenised once and encoded "
                  "by every model in one stacked forward pass; each model's result JSON, "
                  "report and plots are those `python -m eval.run` writes for it alone. "
                  + run.PROTOCOLS_HELP + " Prints each model's main score.")
  parser.add_argument("--models", required=True, metavar="A,B,...",
                      help="comma-separated models: training workdirs, Hugging Face model "
                           "directories, \"e5-small\" or \"tiny-random-SEED\"; all of one "
                           "architecture and tokenizer")
  run.add_evaluation_options(parser)
  parser.add_argument("--one_by_one", action="store_true",
                      help="encode the models one after another on the same tokenised batches "
                           "(results bit-identical to eval.run's) instead of in one stacked "
                           "forward pass (the default: the point on a GPU/TPU; equal to "
                           "eval.run's up to float round-off)")
  parser.add_argument("--out_dir", required=True,
                      help="writes <out_dir>/<model>.json (+ .report.md and plots) per model, "
                           "<model> the last part of its name or path")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  names = split_list(args.models)
  if not names:
    raise PopulationEvalError("--models names no model")
  paths = result_paths(names, args.out_dir)  # before any work
  config_validation.check_writable(pathlib.Path(args.out_dir))
  pathlib.Path(args.out_dir).mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()
  with contextlib.ExitStack() as locks:
    for path in paths:
      locks.enter_context(run.output_lock(path))
    results = evaluate_many(names, args.benchmark, out_dir=args.out_dir,
                            stacked=not args.one_by_one, **run.evaluation_options(args))
  run.print_dropped(results[0])  # the same records for every model
  print(table(results, paths))
  print(f"wrote {len(results)} results in {args.out_dir} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
  main()
