"""Check a training config before any model or data is loaded; say what changes a model.

`validate(config)` raises `ConfigError` with one line naming the key and the
problem: unknown keys (with the closest known key), enum values, ranges and
intervals. The schema is `configs/default.py`: every key a run may set is there.

`training_config(config)` is the part of a config that changes the trained model
(everything but bookkeeping and layout keys, `NON_TRAINING_KEYS`); the trainer
records it with its hash at a workdir's first start and refuses to resume with
a different one (see `mlir_train.train`).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Mapping

from configs import default
from data_pipelines import folds, pairs, sampler
from data_pipelines.errors import ProjectError

# Keys that do not change the trained model: where files go, how often to log or
# save, and how the same computation is laid out on devices ("step_delay_s": a key
# of older workdirs, now $MLIR_TRAIN_STEP_DELAY_S).
NON_TRAINING_KEYS = frozenset({
    "data_dir", "shards_dir", "checkpoint_every_steps", "keep_checkpoints",
    "log_every_steps", "step_delay_s", "fsdp", "remat", "gradcache_chunk_size", "strict_data"})

COMPUTE_DTYPES = ("float32", "bfloat16")
DATA_SOURCES = ("pairs", "files", "synthetic")  # files: config.train_files (data_pipelines.train_files)

# key -> allowed values
CHOICES: dict[str, tuple] = {
    "compute_dtype": COMPUTE_DTYPES,
    "data_source": DATA_SOURCES,
    "fold": tuple(folds.FOLDS),
    "positive": pairs.POSITIVE_KINDS,
    "sampling": tuple(sampler.SAMPLING_MODES),
    "mono_language_sampling": sampler.LANGUAGE_SAMPLING,
}

# key -> (low, high, what): low <= value <= high (None: unbounded)
RANGES: dict[str, tuple[Any, Any, str]] = {
    "alpha": (0.0, 1.0, "a probability"),
    "batch_size": (1, None, "pairs per global batch"),
    "total_steps": (1, None, "steps"),
    "warmup_steps": (0, None, "steps"),
    "learning_rate": (0.0, None, "a learning rate"),
    "weight_decay": (0.0, None, "a decay factor"),
    "max_grad_norm": (0.0, None, "a norm"),
    "max_query_len": (1, None, "tokens"),
    "max_passage_len": (1, None, "tokens"),
    "gradcache_chunk_size": (0, None, "pairs (0 = off)"),
    "max_nonfinite_in_a_row": (1, None, "steps"),
    "fsdp": (1, None, "devices"),
    "checkpoint_every_steps": (1, None, "an interval in steps"),
    "keep_checkpoints": (1, None, "checkpoints"),
    "log_every_steps": (1, None, "an interval in steps"),
    "l2sp": (0.0, None, "a penalty strength"),
    "validation_fraction": (0.0, 0.5, "a share of the parallel groups"),
    "validation_every_steps": (1, None, "an interval in steps"),
    "validation_batches": (1, None, "batches per kind"),
    "freeze_layers": (0, None, "layers"),
    "hard_negatives_per_pair": (0, None, "negatives per pair (0 = off)"),
}
POSITIVE = {"temperature": "a softmax temperature", "language_temperature": "a sampling temperature"}


class ConfigError(ProjectError, ValueError):
  """A config key that is unknown, of the wrong kind, or out of range."""


def _suggest(key: str, known) -> str:
  close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
  return f" (did you mean {close[0]!r}?)" if close else ""


def check_key(key: str) -> None:
  """`ConfigError` for a key configs/default.py does not have, with the closest one."""
  known = set(default.get_config().keys())
  if key not in known:
    raise ConfigError(f"unknown config key {key!r}{_suggest(key, known)}; the keys are "
                      f"those of configs/default.py")


def validate(config) -> None:
  """Raise `ConfigError` (one line) for the first bad key of `config`."""
  for key in sorted(config.keys()):
    check_key(key)
  for key, allowed in CHOICES.items():
    if key in config and config[key] not in allowed:
      raise ConfigError(f"config.{key}={config[key]!r}: must be one of {', '.join(map(str, allowed))}")
  for key, (low, high, what) in RANGES.items():
    if key not in config:
      continue
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"config.{key}={value!r}: must be a number ({what})")
    if (low is not None and value < low) or (high is not None and value > high):
      bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
      raise ConfigError(f"config.{key}={value!r}: must be {bound} ({what})")
  for key, what in POSITIVE.items():
    if key in config and not (isinstance(config[key], (int, float)) and config[key] > 0):
      raise ConfigError(f"config.{key}={config[key]!r}: must be > 0 ({what})")
  if config.warmup_steps > config.total_steps:
    raise ConfigError(f"config.warmup_steps={config.warmup_steps} exceeds "
                      f"config.total_steps={config.total_steps}")
  if config.get("early_stopping") and not config.get("validation_fraction"):
    raise ConfigError("config.early_stopping needs a validation set: set "
                      "config.validation_fraction > 0")
  chunk = int(config.gradcache_chunk_size)
  if chunk and config.batch_size % chunk:
    raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by "
                      f"config.gradcache_chunk_size={chunk}")


def as_dict(config) -> dict:
  """The config as plain JSON values (what config.json holds)."""
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else json.loads(json.dumps(dict(config)))


def training_config(values: Mapping) -> dict:
  """The keys that change the trained model, sorted."""
  return {k: values[k] for k in sorted(values) if k not in NON_TRAINING_KEYS}


def config_hash(values: Mapping) -> str:
  """sha256 of the training config (canonical JSON), 16 hex digits."""
  text = json.dumps(training_config(values), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
  """{key: (old, new)} over the training keys that differ.

  A key missing on one side counts as its configs/default.py value (a key added to
  the project later, with a default that keeps behaviour, is no change).
  """
  defaults = as_dict(default.get_config())
  a, b = training_config({**defaults, **old}), training_config({**defaults, **new})
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_writable(directory, what: str = "output directory") -> None:
  """`ConfigError` unless `directory` can be created or written (tried with a probe file),
  so that a long run never fails at its last step for a path it could have checked first."""
  import os
  import pathlib
  import tempfile
  directory = pathlib.Path(directory)
  existing = directory
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    raise ConfigError(f"{directory}: cannot be the {what} ({existing} is not a directory)")
  try:
    if existing == directory:
      with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
        pass
    elif not os.access(existing, os.W_OK | os.X_OK):
      raise PermissionError(f"{existing} is not writable")
  except OSError as e:
    raise ConfigError(f"{directory}: cannot write the {what} there ({e})") from None
