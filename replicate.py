"""The hybrid-batch study in one command.

    python -m replicate --preset smoke --fold A --out runs/smoke

Trains the default model with each sampling strategy (X-X-mono, X-Y, hybrid at
alpha 0.5; `full` adds an alpha sweep and the "mixed" baseline) over several
seeds, evaluates every trained model and the untrained starting model on the
fold's LAReQA benchmark, TyDi QA GoldP (passages and sentences) and AfriQA; the
robustness arm (`--preset robust`, part of `full`, `--robust` for any preset) adds, for
the hybrid run of every seed, WiSE-FT interpolations toward the start (no training) and
an L2-SP run, evaluated the same way. It writes into --out:

  results.json   every number of every run and seed, plus the summary the report shows
  report.md      paper-style table, robustness sections (TyDi passages and sentences,
                 AfriQA native vs translated), paired tests, robust fine-tuning
  *.png          per-language changes (TyDi, TyDi sentences, AfriQA), language bias,
                 mAP vs alpha (full), unseen-language change vs multi mAP (robust arm)
  runs/<id>/     each run's training workdir and evaluation JSON

Re-running the same command resumes: finished trainings and evaluations are
read back, an interrupted training resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import shlex
import sys
import time
from typing import Any

from data_pipelines import folds, sampler
from data_pipelines.errors import ProjectError
from eval import study

# Evaluated in every preset besides the fold's LAReQA benchmark (its first evaluation
# benchmark in `folds.FOLDS`; default splits: TyDi dev, AfriQA test).
ROBUSTNESS_BENCHMARKS = ("tydiqa_goldp", "tydiqa_goldp_sentences", "afriqa")
PROVENANCE_FILE = "provenance.json"  # per run: model, training config, evaluation settings
INTERPOLATION_FILE = "interpolation.json"  # WiSE-FT runs: lambda, endpoints, weight fingerprint


class StudyError(ProjectError):
  """A study that cannot go on as asked (e.g. an --out holding runs made otherwise)."""


@dataclasses.dataclass(frozen=True)
class Preset:
  """How big a study is: which strategies, how many seeds, how long each run.

  The fields of a configs/study/*.py preset (`load_preset`), typed.
  """
  name: str
  strategies: tuple[tuple[str, float], ...]   # (sampling, alpha)
  seeds: tuple[int, ...]
  train_overrides: dict[str, Any]             # applied on top of configs/default.py
  train_languages: dict[str, list[str]] | None  # per fold; None = all of the fold's
  eval_languages: dict[str, list[str]] | None   # per benchmark; None = all
  eval_max_length: int                          # tokens per text; longer texts are cut (counted)
  eval_batch_size: int
  eval_max_questions: int | None = None  # keep only N question ids per language (smoke)
  eval_max_documents: dict[str, int] | None = None  # per benchmark: keep N paragraphs/passages
  eval_max_lengths: dict[str, int] | None = None  # per benchmark: overrides eval_max_length
  note: str = ""
  # The robustness arm, built on the hybrid at `robust_alpha` of every seed: WiSE-FT
  # interpolations (no training) and hybrid runs trained with an L2-SP pull.
  wise_lambdas: tuple[float, ...] = ()
  l2sp: tuple[float, ...] = ()
  robust_alpha: float = 0.5
  # Strategies reported when their finished runs with these settings exist in --out
  # (e.g. a quick study's), never trained by this preset.
  adopt: tuple[tuple[str, float], ...] = ()

  def max_length(self, benchmark: str) -> int:
    return (self.eval_max_lengths or {}).get(benchmark, self.eval_max_length)

  def max_lengths(self, benchmarks) -> int | dict[str, int]:
    """What provenance records: the one cap, or the cap per benchmark."""
    if not self.eval_max_lengths:
      return self.eval_max_length
    return {b: self.max_length(b) for b in benchmarks}


def load_preset(name_or_path: str, overrides=()) -> Preset:
  """configs/study/NAME.py (or a config file path), with `KEY=VALUE` overrides applied
  (dotted keys reach into dicts: `train_overrides.total_steps=20`; values are Python
  literals, a bare word is a string)."""
  path = pathlib.Path(name_or_path)
  if path.suffix == ".py":
    if not path.is_file():
      raise StudyError(f"--preset {name_or_path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"study_preset_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  elif name_or_path in PRESETS:
    module = importlib.import_module(f"configs.study.{name_or_path}")
  else:
    raise StudyError(f"--preset {name_or_path!r}: expected one of {', '.join(PRESETS)} or a "
                     f"config file (configs/study/*.py)")
  values = module.get_config().to_dict()
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise StudyError(f"--set {item!r}: expected KEY=VALUE")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split(".")
    target = values
    for part in parents:
      if part in target and target[part] is None:
        target[part] = {}  # e.g. eval_max_documents=None, now one benchmark's cap
      if not isinstance(target.get(part), dict):
        raise StudyError(f"--set {key}: {part} is not a dict field of the preset")
      target = target[part]
    if not parents and leaf not in values:
      raise StudyError(f"--set {key}: the preset has no field {leaf!r} "
                       f"(fields: {', '.join(sorted(values))})")
    target[leaf] = value
  fields = {f.name for f in dataclasses.fields(Preset)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise StudyError(f"{name_or_path}: unknown preset fields {unknown}")
  tuples = ("strategies", "seeds", "wise_lambdas", "l2sp", "adopt")
  for key in tuples:
    if key in values and values[key] is not None:
      raw = values[key]
      raw = raw if isinstance(raw, (list, tuple)) else (raw,)
      values[key] = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in raw)
  return Preset(**values)


# The presets shipped in configs/study/ (a name; any other config file by path).
PRESETS = ("smoke", "quick", "robust", "gpu", "full")


def run_id(sampling: str, alpha: float, seed: int, l2sp: float = 0.0) -> str:
  """'mono-s0', 'hybrid-a0.5-s0', with L2-SP 'hybrid-a0.5-l2sp1-s0'."""
  if not sampler.SAMPLING_MODES[sampling].uses_alpha:
    return f"{sampling}-s{seed}" + (f"-l2sp{l2sp:g}" if l2sp else "")
  return f"{sampling}-a{alpha:g}" + (f"-l2sp{l2sp:g}" if l2sp else "") + f"-s{seed}"


def wise_run_id(alpha: float, seed: int, lam: float) -> str:
  """'hybrid-a0.5-s0-wise0.5': the hybrid run of that seed interpolated at lambda."""
  return f"{run_id('hybrid', alpha, seed)}-wise{lam:g}"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One model of a study: the start (sampling "none"), a trained run (l2sp > 0: with an
  L2-SP pull) or a WiSE-FT interpolation (`lam`) of the trained run `base`."""
  rid: str
  sampling: str
  alpha: float | None
  seed: int | None
  l2sp: float = 0.0
  lam: float | None = None
  base: str | None = None       # the trained run a WiSE-FT run interpolates
  adopted: bool = False         # reported only if finished in --out with these settings

  @property
  def method(self) -> str | None:
    return "wise" if self.lam is not None else ("l2sp" if self.l2sp else None)

  @property
  def trained(self) -> bool:
    return self.sampling != "none" and self.lam is None


def plan_runs(preset: Preset) -> list[PlannedRun]:
  """The start, every strategy x seed, then the robustness arm (L2-SP runs, WiSE-FT runs);
  adopted strategies last."""
  plan = [PlannedRun("start", "none", None, None)]
  plan += [PlannedRun(run_id(s, a, seed), s, a, seed) for seed in preset.seeds for s, a in preset.strategies]
  if preset.wise_lambdas or preset.l2sp:
    alpha = preset.robust_alpha
    if ("hybrid", alpha) not in preset.strategies:
      raise StudyError(f"preset {preset.name}: the robustness arm needs the hybrid at alpha "
                       f"{alpha:g} among its strategies")
    for seed in preset.seeds:
      plan += [PlannedRun(run_id("hybrid", alpha, seed, x), "hybrid", alpha, seed, l2sp=float(x))
               for x in preset.l2sp]
      plan += [PlannedRun(wise_run_id(alpha, seed, lam), "hybrid", alpha, seed, lam=float(lam),
                          base=run_id("hybrid", alpha, seed)) for lam in preset.wise_lambdas]
  plan += [PlannedRun(run_id(s, a, seed), s, a, seed, adopted=True)
           for seed in preset.seeds for s, a in preset.adopt]
  return plan


def _write_json(path: pathlib.Path, obj) -> None:
  """Write atomically so an interrupted run never leaves half a file behind."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=False))
  os.replace(tmp, path)


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

  def advance(self, units: float, what: str) -> None:
    self.bar.set_postfix_str(what)
    self.bar.update(round(units))

  def close(self):
    self.bar.close()


def train_config(preset: Preset, fold: str, sampling: str, alpha: float, seed: int,
                 model: str, data_dir: str | None, shards_dir: pathlib.Path,
                 train_files: str | None = None, l2sp: float = 0.0):
  """configs/default.py with the preset and this run's strategy applied (`train_files`:
  train on those files, data_source "files", instead of the fold's pairs; `l2sp` > 0: with
  that L2-SP pull toward the starting weights)."""
  from configs import default
  config = default.get_config()
  with config.unlocked():
    config.fold = fold
    config.model = model
    config.sampling = sampling
    config.alpha = float(alpha)
    config.seed = int(seed)
    config.data_dir = data_dir
    config.shards_dir = str(shards_dir)
    for key, value in preset.train_overrides.items():
      config[key] = value
    if l2sp:
      config.l2sp = float(l2sp)
    if train_files:
      config.data_source, config.train_files = "files", train_files  # all their languages
    elif preset.train_languages:
      config.train_languages = ",".join(preset.train_languages[fold])
  return config


def evaluate_into(model, benchmark: str, languages, preset: Preset, data_dir, out: pathlib.Path):
  """Evaluate once; return the saved JSON on later calls (resume)."""
  if out.exists():
    return json.loads(out.read_text())
  from eval import run as eval_run
  result = eval_run.evaluate(model, benchmark, languages=languages, data_dir=data_dir,
                             batch_size=preset.eval_batch_size,
                             max_length=preset.max_length(benchmark),
                             per_query=True, progress=False,
                             max_questions=preset.eval_max_questions,
                             max_documents=(preset.eval_max_documents or {}).get(benchmark))
  _write_json(out, result)
  return result


def model_identity(model: str) -> dict:
  """What a study's starting model is: its name, and for a local directory its resolved
  path and the size and modification time of its weights."""
  path = pathlib.Path(model).expanduser()
  if not path.exists():
    return {"name": model}
  identity = {"name": model, "path": str(path.resolve())}
  for weights in ("model.safetensors", "pytorch_model.bin"):
    if (path / weights).is_file():
      stat = (path / weights).stat()
      identity["weights"] = {"file": weights, "bytes": stat.st_size, "mtime": int(stat.st_mtime)}
  return identity


def run_provenance(preset: Preset, fold: str, sampling: str, alpha, seed, model: str,
                   data_dir, shards_dir, eval_languages: dict,
                   train_files: str | None = None, l2sp: float = 0.0) -> dict:
  """Everything a run's numbers depend on: model, training config (trained runs), evaluation."""
  from mlir_train import config_validation
  from eval import benchmarks
  provenance = {"model": model_identity(model),
                "eval": {"languages": eval_languages,
                         "splits": {b: benchmarks.get(b).default_split for b in eval_languages},
                         "max_length": preset.max_lengths(eval_languages),
                         "max_questions": preset.eval_max_questions,
                         "max_documents": preset.eval_max_documents}}
  if sampling != "none":
    config = train_config(preset, fold, sampling, alpha, seed, model, data_dir, shards_dir,
                          train_files, l2sp=l2sp)
    provenance["train_config"] = config_validation.training_config(
        config_validation.as_dict(config))
    if train_files:  # the files' contents: a changed file is a different run
      provenance["train_files"] = train_files_identity(train_files)
  return provenance


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


def wise_provenance(base_rid: str, base: dict, lam: float) -> dict:
  """A WiSE-FT run's provenance: the start model, the evaluation, lambda, and the
  provenance (model, training config, files) of the trained run it interpolates."""
  return {"model": base["model"], "eval": base["eval"],
          "interpolation": {"lambda": float(lam),
                            "formula": "(1 - lambda) * start + lambda * finetuned",
                            "finetuned_run": base_rid,
                            "finetuned": {k: v for k, v in base.items() if k != "eval"}}}


def train_files_identity(train_files: str) -> dict[str, str]:
  """{file: sha256} of every input of --train_files (every file of a datasets dir)."""
  from data_pipelines import datadir, train_files as train_files_lib
  paths = train_files_lib.hashed_files(train_files_lib.expand(train_files))
  return {str(p): datadir.sha256_file(p) for p in paths}


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _finished(run_dir: pathlib.Path, provenance: dict, eval_languages: dict) -> bool:
  """Whether a run made elsewhere (an adopted strategy) is finished with these settings:
  the same provenance, its training summary and every evaluation."""
  stored = run_dir / PROVENANCE_FILE
  if not stored.exists():
    return False
  same = json.loads(stored.read_text()) == json.loads(json.dumps(provenance))
  done = (run_dir / "train_summary.json").exists() and all(
      (run_dir / f"eval_{b}.json").exists() for b in eval_languages)
  if not (same and done):
    print(f"note: {run_dir.name} is not reported ({'unfinished' if same else 'made with other settings'})",
          file=sys.stderr)
  return same and done


def check_run_dirs(out: pathlib.Path, expected: dict[str, dict]) -> None:
  """Refuse to reuse a run directory whose results were made with other settings."""
  problems = []
  for rid, want in expected.items():
    run_dir = out / "runs" / rid
    stored_file = run_dir / PROVENANCE_FILE
    if stored_file.exists():
      have = _flat(json.loads(stored_file.read_text()))
      now = _flat(json.loads(json.dumps(want)))
      diff = [f"{k}: {have.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(have) | set(now))
              if have.get(k) != now.get(k)]
      if diff:
        problems.append(f"{rid} ({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''})")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
      problems.append(f"{rid} (made before settings were recorded)")
  if problems:
    raise StudyError(f"{out}: these runs were made with other settings, and their numbers "
                     f"would be reported under this command's: {', '.join(problems)}. Use a new "
                     f"--out, or delete those runs/ folders to redo them")


def main(argv=None) -> dict:
  """The command line; the project's errors end in one `error: ...` line and exit code 2."""
  from mlir_train import compile_cache
  compile_cache.enable()  # before the first compilation
  try:
    return _main(argv)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def _main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      prog="python -m replicate",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", default="smoke", metavar="NAME|FILE",
                      help="configs/study/NAME.py or your own preset file. smoke: ~10 min on a "
                           "2-core CPU, pipeline check only; quick: 3 seeds on a 2-core CPU, "
                           "full XQuAD-R (about 2 h); robust: quick's hybrid runs + WiSE-FT and L2-SP (reuses "
                           "a finished quick study in the same --out); gpu: the three strategies, 3 "
                           "seeds at batch 100, evaluated as quick is, minutes on one GPU "
                           "(benchmarks/gpu.sh runs it); full: alpha sweep + mixed + "
                           "the robustness arm, 5 seeds, a few GPU hours")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a preset field (repeatable), e.g. --set seeds=0,1 or "
                           "--set train_overrides.learning_rate=3e-5")
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
  args = parser.parse_args(argv)

  overrides = list(args.set)
  if args.seeds:
    overrides.append(f"seeds=({args.seeds},)")
  if args.steps:
    overrides.append(f"train_overrides.total_steps={args.steps}")
  preset = load_preset(args.preset, overrides)
  if args.robust and not (preset.wise_lambdas or preset.l2sp):
    from configs.study import robust
    preset = dataclasses.replace(preset, wise_lambdas=robust.WISE_LAMBDAS, l2sp=(robust.L2SP,))
  out = pathlib.Path(args.out)
  from mlir_train import config_validation
  config_validation.check_writable(out, "study directory")
  (out / "runs").mkdir(parents=True, exist_ok=True)
  command = "python -m replicate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  fold = folds.get_fold(args.fold)
  lareqa = fold.eval_benchmarks[0][0]  # the LAReQA benchmark the fold does not train on
  train_languages = (preset.train_languages or {}).get(args.fold) or list(fold.train_languages)
  if args.train_files:
    from data_pipelines import train_files as train_files_lib
    train_languages = list(train_files_lib.read_train_files(args.train_files).languages)
  eval_languages = {b: (preset.eval_languages or {}).get(b)
                    for b in (lareqa, *ROBUSTNESS_BENCHMARKS)}

  # --- plan: the starting model, every strategy x seed, the robustness arm ----------------
  plan = plan_runs(preset)
  provenance = {}
  for item in plan:
    if item.lam is not None:
      provenance[item.rid] = wise_provenance(item.base, provenance[item.base], item.lam)
    else:
      provenance[item.rid] = run_provenance(
          preset, args.fold, item.sampling, item.alpha, item.seed, args.model, args.data_dir,
          out / "shards", eval_languages, train_files=args.train_files, l2sp=item.l2sp)
  adopted = [item for item in plan if item.adopted]
  plan = [item for item in plan if not item.adopted]
  plan += [item for item in adopted
           if _finished(out / "runs" / item.rid, provenance[item.rid], eval_languages)]
  check_run_dirs(out, {item.rid: provenance[item.rid] for item in plan})
  steps = preset.train_overrides["total_steps"]
  eval_units = max(10.0, steps * 0.5)  # rough weight of one model's evaluation in train-step units
  progress = Progress(len(plan) * len(eval_languages) * eval_units
                      + sum(item.trained for item in plan) * steps)
  started = time.time()
  previous = {}
  if (out / "results.json").exists():
    previous = json.loads((out / "results.json").read_text())
  wall_before = float(previous.get("wall_time_s", 0.0)) if previous.get("preset") == preset.name else 0.0

  from mlir_train import models
  runs = []
  for item in plan:
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
    if not (run_dir / PROVENANCE_FILE).exists():
      _write_json(run_dir / PROVENANCE_FILE, provenance[rid])

    # --- train (resumes from the run's last checkpoint; skipped when finished) ----------
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
        config = train_config(preset, args.fold, item.sampling, item.alpha, item.seed, args.model,
                              args.data_dir, out / "shards", train_files=args.train_files,
                              l2sp=item.l2sp)
        summary = train_lib.train(config, str(workdir))
        _write_json(done_file, summary)
      record["train"] = json.loads(done_file.read_text())
      load = lambda: models.load_model(str(workdir))
    progress.advance(steps if item.trained else 0, f"trained {rid}")

    # --- evaluate the fold's LAReQA benchmark, TyDi (passages, sentences), AfriQA ------
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
      progress.advance(eval_units, f"evaluated {rid} on {benchmark}")
    if item.lam is not None and (run_dir / INTERPOLATION_FILE).exists():
      record["interpolation"] = {k: v for k, v in json.loads(
          (run_dir / INTERPOLATION_FILE).read_text()).items() if k != "leaf_sums"}
    runs.append(record)
  progress.close()

  # --- aggregate, report, plots --------------------------------------------------------------
  first = runs[0]["metrics"]
  results = {
      "preset": preset.name, "fold": args.fold, "model": args.model, "note": preset.note,
      "command": command, "machine": _machine(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "wall_time_s": wall_before + (time.time() - started),
      "seeds": list(preset.seeds), "train_languages": train_languages,
      "train_files": (train_files_identity(args.train_files) if args.train_files else None),
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
  results["paper_numbers"] = [list(row) for row in study.PAPER_NUMBERS]
  results["summary"] = study.summarize(runs, lareqa_benchmark=lareqa, train_languages=train_languages)
  results["plots"] = study.write_plots(results, out)
  _write_json(out / "results.json", results)
  (out / "report.md").write_text(study.render_markdown(results))
  print(f"wrote {out / 'report.md'} and {out / 'results.json'} "
        f"({results['wall_time_s'] / 60:.1f} min)")
  return results


if __name__ == "__main__":
  main()
