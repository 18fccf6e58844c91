"""A study's plan: presets, the runs they hold, and what each run's numbers depend on.

`load_preset` reads configs/study/*.py into a typed `Preset`; `plan_runs` lists its runs
(the start, every strategy x seed, the robustness arm, adopted strategies); `train_config`
and `run_provenance` say how each run is trained and evaluated; `check_run_dirs` refuses
an --out whose runs were made otherwise.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import json
import pathlib
import sys
from typing import Any

from data_pipelines import sampler
from data_pipelines.errors import ProjectError

PROVENANCE_FILE = "provenance.json"  # per run: model, training config, evaluation settings
# Evaluated by default besides the fold's LAReQA benchmark (`Preset.benchmarks`; any
# registry entry with study sections may be named there).
ROBUSTNESS_BENCHMARKS = ("tydiqa_goldp", "tydiqa_goldp_sentences", "afriqa")


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
  # The benchmarks evaluated besides the fold's LAReQA one (registry names).
  benchmarks: tuple[str, ...] = ROBUSTNESS_BENCHMARKS
  # "Equivalent" only within +-margin (TOST), stated before the data (mAP, nDCG, accuracy).
  equivalence_margin: float = 0.01

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
  for field in dataclasses.fields(Preset):  # fields a preset file leaves out: their defaults
    if field.name not in values and field.default is not dataclasses.MISSING:
      values[field.name] = field.default
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
  tuples = ("strategies", "seeds", "wise_lambdas", "l2sp", "adopt", "benchmarks")
  for key in tuples:
    if key in values and values[key] is not None:
      raw = values[key]
      if key == "benchmarks" and isinstance(raw, str):  # --set benchmarks=tydiqa_goldp,ntrex128
        raw = [b.strip() for b in raw.split(",") if b.strip()]
      raw = raw if isinstance(raw, (list, tuple)) else (raw,)
      values[key] = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in raw)
  return Preset(**values)


# The presets shipped in configs/study/ (a name; any other config file by path).
PRESETS = ("smoke", "quick", "robust", "gpu", "full", "decisive")


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


def finished(run_dir: pathlib.Path, provenance: dict, eval_languages: dict) -> bool:
  """Whether a run made elsewhere (an adopted strategy) is finished with these settings:
  the same provenance, its training summary and every evaluation."""
  stored = run_dir / PROVENANCE_FILE
  if not stored.exists():
    return False
  same = (_with_defaults(json.loads(stored.read_text()))
          == _with_defaults(json.loads(json.dumps(provenance))))
  done = (run_dir / "train_summary.json").exists() and all(
      (run_dir / f"eval_{b}.json").exists() for b in eval_languages)
  if not (same and done):
    print(f"note: {run_dir.name} is not reported ({'unfinished' if same else 'made with other settings'})",
          file=sys.stderr)
  return same and done


def _with_defaults(tree):
  """A provenance with every `train_config` filled with configs/default.py's values, the
  rule `config_validation.differences` applies: a training key added to the project after
  a run was made, at its default, is no difference."""
  from mlir_train import config_validation
  if not isinstance(tree, dict):
    return tree
  defaults = config_validation.as_dict(config_validation.default.get_config())
  return {k: (config_validation.training_config({**defaults, **v})
              if k == "train_config" and isinstance(v, dict) else _with_defaults(v))
          for k, v in tree.items()}


def check_run_dirs(out: pathlib.Path, expected: dict[str, dict]) -> None:
  """Refuse to reuse a run directory whose results were made with other settings."""
  problems = []
  for rid, want in expected.items():
    run_dir = out / "runs" / rid
    stored_file = run_dir / PROVENANCE_FILE
    if stored_file.exists():
      have = _flat(_with_defaults(json.loads(stored_file.read_text())))
      now = _flat(_with_defaults(json.loads(json.dumps(want))))
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
