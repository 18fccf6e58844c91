r"""Train a multilingual dual encoder with mono / cross / hybrid batches.

  python -m mlir_train.train --config configs/default.py --workdir /tmp/run \
      [--config.sampling=mono --config.total_steps=100 ...]

Multi-host: pass --coordinator_address=HOST:PORT --num_processes=N
--process_id=I (or run under SLURM / on TPU, where JAX finds them itself).

The workdir holds checkpoints/ (Orbax), config.json, metrics.jsonl (one
JSON line per logged step: loss, accuracy, learning rate, throughput, ...) and
batches.jsonl (one JSON line per step: which batch it trained on, see
`batch_record`). Running again on the same workdir resumes from the latest
checkpoint and ends where an uninterrupted run would: batches are a
deterministic function of (config, seed, step) and the step is checkpointed;
lines of both files past that checkpoint are dropped and redone.

`train(config, workdir) -> summary` is the same thing as a Python call.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import split_list
from data_pipelines import files
from data_pipelines.errors import ProjectError

from mlir_train import checkpoints
from mlir_train import config_validation
from mlir_train import console as console_lib
from mlir_train import encoder as encoder_lib
from mlir_train import gradcache
from mlir_train import loss as loss_lib
from mlir_train import metrics_writer
from mlir_train import models
from mlir_train import optimizer as optimizer_lib
from mlir_train import partitioning
from mlir_train import prompts as prompts_lib

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
PROVENANCE_FILE = "provenance.json"          # the first start's training config + hash
CONFIG_HISTORY_FILE = "config_history.jsonl"  # allowed changes, one line each
BATCH_FIELDS = ("query_ids", "query_mask", "passage_ids", "passage_mask", "group_id")
# With config.hard_negatives_per_pair = n > 0: [host_batch, n, Lp] ids / mask, [host_batch, n]
# validity (0 = missing, masked out of the loss) and source group (-1 = none).
NEGATIVE_FIELDS = ("negative_ids", "negative_mask", "negative_valid", "negative_group_id")
# How a full disk reads in Orbax's and TensorStore's errors.
DISK_FULL = ("No space left on device", "os_error_code='28'")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainingError(ProjectError, RuntimeError):
  """A run that cannot start or must stop (bad config, repeated non-finite loss)."""


# ----------------------------------------------------------------------------
# Update step
# ----------------------------------------------------------------------------
def make_update_step(module: encoder_lib.Encoder, tx: optax.GradientTransformation, config):
  """(state, batch) -> (state, metrics), one AdamW update on the global batch.

  state = {"params", "opt_state", "step", "nonfinite_in_a_row", "skipped_nonfinite"}
  (+ "start_params" when config.l2sp > 0, see `init_state`).
  A non-finite loss or gradient leaves params and optimizer state unchanged
  (inside the step, with `jnp.where`) and is counted.

  Frozen subtrees (`optimizer.split_frozen`: embeddings, lower freeze_layers
  layers) get no gradient. With config.l2sp > 0 the L2-SP gradient
  l2sp * (theta - theta_start) is added to the loss gradient before clipping
  (`optimizer` module docstring); metrics["loss"] stays the InfoNCE loss and
  metrics["l2sp_penalty"] is the added term. With l2sp = 0 the step is traced
  exactly as without L2-SP.
  """
  schedule = optimizer_lib.learning_rate_schedule(config)
  l2sp = optimizer_lib.check_l2sp(config.get("l2sp", 0.0))
  freeze_layers = config.get("freeze_layers", 0)

  def update(state, batch):
    trainable, frozen = optimizer_lib.split_frozen(state["params"], config.freeze_embeddings,
                                                   freeze_layers)

    def embed(trainable_params, ids, mask):  # [n, length] -> [n, hidden]
      params = optimizer_lib.merge(trainable_params, frozen)
      return module.apply({"params": params}, ids, mask)

    (loss, accuracy), grads = batch_value_and_grad(embed, batch, config)(trainable)
    if l2sp:
      penalty, penalty_grads = optimizer_lib.l2sp_penalty_and_grad(
          trainable, state["start_params"], l2sp)
      grads = jax.tree.map(jnp.add, grads, penalty_grads)

    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state["opt_state"], trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    keep_if_bad = lambda new, old: jnp.where(finite, new, old)
    new_state = {
        "params": optimizer_lib.merge(
            jax.tree.map(keep_if_bad, new_trainable, trainable), frozen),
        "opt_state": jax.tree.map(keep_if_bad, new_opt_state, state["opt_state"]),
        "step": state["step"] + 1,
        "nonfinite_in_a_row": jnp.where(finite, 0, state["nonfinite_in_a_row"] + 1),
        "skipped_nonfinite": state["skipped_nonfinite"] + (~finite).astype(jnp.int32),
    }
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm,
               "learning_rate": schedule(state["step"]),
               "skipped_nonfinite": new_state["skipped_nonfinite"]}
    if l2sp:
      new_state["start_params"] = state["start_params"]
      metrics["l2sp_penalty"] = penalty
    return new_state, metrics

  return update


def batch_value_and_grad(embed, batch, config):
  """trainable params -> ((InfoNCE loss, accuracy), grads) of the global `batch`.

  `embed(params, ids, mask) -> [n, hidden]`. With config.hard_negatives_per_pair
  = n > 0 the batch also holds negative_ids / negative_mask [batch, n, Lp],
  negative_valid and negative_group_id [batch, n]: they are embedded as
  [batch * n] rows (row-major, `loss.pair_negatives`) and every query is scored
  against all global passages and all global hard negatives, its label its own
  passage; missing negatives (valid 0) get -inf, and a negative whose group is
  a query's own group is masked for that query. GradCache chunks them too.
  With n = 0 the computation is the in-batch loss alone, as before.
  """
  chunk_size = int(config.gradcache_chunk_size)
  n_hard = hard_negatives_per_pair(config)
  inputs = [batch["query_ids"], batch["query_mask"], batch["passage_ids"], batch["passage_mask"]]
  negative_kwargs = {}
  if n_hard:
    shape = batch["negative_ids"].shape  # [batch, n, Lp]
    inputs += [batch["negative_ids"].reshape(shape[0] * shape[1], shape[2]),
               batch["negative_mask"].reshape(shape[0] * shape[1], shape[2])]
    negative_kwargs = dict(group_id=batch["negative_group_id"], valid=batch["negative_valid"])

  def loss_from_embeddings(query, passage, *negatives):
    extra = {}
    if negatives:
      flat = negatives[0]  # [batch * n, hidden]
      extra = loss_lib.pair_negatives(flat.reshape(query.shape[0], -1, flat.shape[-1]),
                                      **negative_kwargs)
    out = loss_lib.info_nce(query, passage, batch["group_id"],
                            temperature=config.temperature,
                            symmetric=config.symmetric_loss, **extra)
    return out.loss, out.accuracy

  if chunk_size:
    value_and_grad = gradcache.value_and_grad(embed, loss_from_embeddings, chunk_size)
  else:
    def full_loss(p, q_ids, q_mask, p_ids, p_mask, *negative):
      return loss_from_embeddings(embed(p, q_ids, q_mask), embed(p, p_ids, p_mask),
                                  *([embed(p, *negative)] if negative else []))
    value_and_grad = jax.value_and_grad(full_loss, has_aux=True)
  return lambda trainable: value_and_grad(trainable, *inputs)


def hard_negatives_per_pair(config) -> int:
  """config.hard_negatives_per_pair (0 = off; older configs lack the key)."""
  return int(config.get("hard_negatives_per_pair", 0) or 0)


def batch_fields(config) -> tuple[str, ...]:
  """The Batch fields the update step reads: BATCH_FIELDS (+ NEGATIVE_FIELDS with
  hard negatives)."""
  return BATCH_FIELDS + (NEGATIVE_FIELDS if hard_negatives_per_pair(config) else ())


def make_validation_step(module: encoder_lib.Encoder, config):
  """(params, batch) -> InfoNCE loss of the batch (as in training, without gradients)."""
  def validation_loss(params, batch):
    query = module.apply({"params": params}, batch["query_ids"], batch["query_mask"])
    passage = module.apply({"params": params}, batch["passage_ids"], batch["passage_mask"])
    return loss_lib.info_nce(query, passage, batch["group_id"], temperature=config.temperature,
                             symmetric=config.symmetric_loss).loss
  return validation_loss


def init_state(params, tx, config) -> dict:
  """The train state at step 0 of a run starting from `params`.

  Frozen subtrees get no optimizer state. With config.l2sp > 0 the state also
  holds "start_params", a copy of the trainable starting weights (L2-SP's
  anchor; checkpointed and restored with the rest of the state). A freezing or
  L2-SP setting that does not fit the model raises `TrainingError`.
  """
  try:
    l2sp = optimizer_lib.check_l2sp(config.get("l2sp", 0.0))
    trainable, _ = optimizer_lib.split_frozen(params, config.freeze_embeddings,
                                              config.get("freeze_layers", 0))
  except optimizer_lib.FreezeError as e:
    raise TrainingError(str(e)) from None
  zero = jnp.zeros((), jnp.int32)
  state = {"params": params, "opt_state": tx.init(trainable), "step": zero,
           "nonfinite_in_a_row": zero, "skipped_nonfinite": zero}
  if l2sp:
    state["start_params"] = jax.tree.map(jnp.copy, trainable)
  return state


# ----------------------------------------------------------------------------
# Step functions, reused by later runs in the same process
# ----------------------------------------------------------------------------
# Config fields the step functions (`make_update_step`, `make_validation_step`,
# `init_state`, `optimizer_lib.make_optimizer`) never read: runs that differ only in
# these (a study's seeds, strategies, data and schedules of saving) share one traced and
# compiled update step instead of tracing it again (~6 s per run on a CPU host, plus
# loading the programs from the compilation cache). Every other field is part of the
# key, so a field added later is safe by default;
# tests/test_train.py::test_step_functions_read_no_field_left_out_of_the_key checks this set.
NOT_READ_BY_STEPS = frozenset({
    "seed", "sampling", "alpha", "mono_language_sampling", "language_temperature", "fold",
    "train_languages", "positive", "data_source", "train_files", "strict_data", "data_dir",
    "shards_dir", "validation_fraction", "validation_every_steps", "validation_batches",
    "early_stopping", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps",
    "model", "query_prompt", "passage_prompt"})
_STEP_FUNCTIONS: collections.OrderedDict = collections.OrderedDict()  # key -> (update, validation)
_STEP_FUNCTIONS_KEPT = 4


def step_functions(module: encoder_lib.Encoder, config, mesh, state_sharding,
                   update_sharding, batch_sharding):
  """(jitted update step, jitted validation step) for this module, config and mesh: the ones
  an earlier run in this process built when they agree on everything the steps read.

  "model" is left out of the key because the module (its architecture and dtype) is in
  it and the weights are arguments; the prompts only change the data.
  """
  values = {k: v for k, v in config.to_dict().items() if k not in NOT_READ_BY_STEPS}
  key = (module, tuple(d.id for d in mesh.devices.flat), mesh.devices.shape, mesh.axis_names,
         json.dumps(values, sort_keys=True, default=repr))
  if key in _STEP_FUNCTIONS:
    _STEP_FUNCTIONS.move_to_end(key)
    return _STEP_FUNCTIONS[key]
  import ml_collections
  frozen = ml_collections.ConfigDict(config.to_dict())  # later edits of `config` do not leak in
  tx = optimizer_lib.make_optimizer(frozen)
  update_step = jax.jit(make_update_step(module, tx, frozen),
                        in_shardings=(state_sharding, update_sharding),
                        out_shardings=(state_sharding, partitioning.replicated(mesh)),
                        donate_argnums=0)
  validation_step = jax.jit(make_validation_step(module, frozen),
                            in_shardings=(state_sharding["params"], batch_sharding),
                            out_shardings=partitioning.replicated(mesh))
  _STEP_FUNCTIONS[key] = (update_step, validation_step)
  while len(_STEP_FUNCTIONS) > _STEP_FUNCTIONS_KEPT:
    _STEP_FUNCTIONS.popitem(last=False)
  return update_step, validation_step


# ----------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------
def input_data(config, tokenizer, vocab_size: int, start_step: int,
               prompts=None, on_data=None) -> tuple[Iterator[Any], list]:
  """(this process's training batches from `start_step` on, its fixed validation batches).

  With `config.validation_fraction` > 0, whole parallel groups are held out of the
  training pairs (`sampler.hold_out`) and scored on fixed batches of every kind;
  synthetic data get fixed batches of their own random stream. [] without validation.
  `on_data(training data, held out or None)`, if given, sees the pairs once read.
  """
  fraction = float(config.get("validation_fraction", 0.0))
  per_kind = int(config.get("validation_batches", 1))
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if config.data_source == "synthetic":
    from mlir_train import synthetic
    validation = (synthetic.validation_batches(config, vocab_size, per_kind, **where)
                  if fraction else [])
    return synthetic.batch_stream(config, vocab_size, start_step=start_step, **where), validation
  from data_pipelines import sampler
  training_data, sampler_config = _training_data(config, tokenizer, prompts)
  try:
    training_data, held_out = sampler.hold_out(training_data, fraction)
  except ValueError as e:
    raise TrainingError(str(e)) from None
  validation = (sampler.validation_batches(held_out, int(config.batch_size), per_kind, **where)
                if held_out is not None else [])
  if on_data is not None:
    on_data(training_data, held_out)
  if held_out is not None and jax.process_index() == 0:
    log.info("validation: %d groups held out (%d pairs), %d fixed batches",
             len(np.unique(held_out.table.group_id)), len(held_out.table.group_id),
             len(validation))
  return sampler.batch_stream(training_data, sampler_config, start_step=start_step,
                              **where), validation


def batch_stream(config, tokenizer, vocab_size: int, start_step: int,
                 prompts=None) -> Iterator[Any]:
  """This process's training batches from `start_step` on (see `input_data`)."""
  return input_data(config, tokenizer, vocab_size, start_step, prompts)[0]


def _training_data(config, tokenizer, prompts=None):
  """(sampler.TrainingData, the config as the sampler reads it) for real data sources.

  `prompts`: the model's {"query", "passage"} prompts for tokenising (None: E5's)."""
  if config.data_source in ("pairs", "files"):  # files: data_pipelines.train_files
    from data_pipelines import sampler
    import ml_collections
    # The sampler takes train_languages as a sequence; the command line gives "en,de".
    values = config.to_dict()
    values["train_languages"] = tuple(split_list(config.train_languages))
    sampler_config = ml_collections.ConfigDict(values)
    training_data = sampler.build_training_data(sampler_config, tokenizer,
                                                progress=jax.process_index() == 0,
                                                prompts=prompts)
    return training_data, sampler_config
  raise TrainingError(f"config.data_source must be 'pairs', 'files' or 'synthetic', "
                      f"got {config.data_source!r}")


def kind_name(batch) -> str:
  return getattr(batch.kind, "name", str(batch.kind)).lower()


def language_pairs(batch) -> dict[str, int]:
  """{"de-en": n, ...}: (query language, passage language) counts of the global batch.

  Empty for sources without languages (synthetic batches).
  """
  return dict(getattr(batch, "language_pairs", None) or {})


def batch_record(step: int, batch) -> dict:
  """The batches.jsonl line of the update that made `step` (1-based, as in metrics.jsonl).

  {"step": 5, "batch_kind": "cross", "languages": "x",
   "language_pairs": {"de-en": 3, "en-de": 4, ...}}; `languages` is the MONO
  language ("de"), "x" for X-Y, "mixed" for mixed batches.
  """
  return {"step": step, "batch_kind": kind_name(batch), "languages": batch.languages,
          "language_pairs": language_pairs(batch)}


def global_validation_batches(validation, mesh) -> list[tuple[str, dict]]:
  """[(batch kind, global arrays)] of this process's fixed validation batches."""
  return [(kind_name(b), partitioning.global_batch(
      {f: getattr(b, f) for f in BATCH_FIELDS}, mesh)) for b in validation]


def validation_scores(validation_step, params, validation_arrays) -> dict[str, float]:
  """Mean InfoNCE loss per batch kind over the fixed validation batches, and their mean:
  the validation_loss* keys of metrics.jsonl."""
  by_kind = collections.defaultdict(list)
  for kind, arrays in validation_arrays:
    by_kind[kind].append(float(validation_step(params, arrays)))
  out = {f"validation_loss_{k}": float(np.mean(v)) for k, v in sorted(by_kind.items())}
  return {"validation_loss": float(np.mean(list(out.values()))), **out}


def nonfinite_stop(step: int, in_a_row: int, config, last_checkpoint: int | None,
                   workdir: pathlib.Path) -> str:
  """Why a run stops after config.max_nonfinite_in_a_row non-finite losses in a row."""
  return (f"stopping at step {step}: {in_a_row} non-finite losses "
          f"in a row (config.max_nonfinite_in_a_row={config.max_nonfinite_in_a_row}); "
          f"lower the learning rate or use compute_dtype=float32. Last checkpoint: "
          f"step {last_checkpoint} in {workdir / checkpoints.CHECKPOINT_DIR}")


def batch_counts(path: pathlib.Path | None) -> tuple[collections.Counter, ...]:
  """(batches per kind, per `languages` label, pairs per language pair) of the steps
  batches.jsonl at `path` records (empty counters for None)."""
  kinds, languages, pairs = (collections.Counter() for _ in range(3))
  for line in (path.read_text().splitlines() if path is not None else []):
    record = json.loads(line)
    kinds[record["batch_kind"]] += 1
    languages[record["languages"]] += 1
    pairs.update(record["language_pairs"])
  return kinds, languages, pairs


# ----------------------------------------------------------------------------
# Workdir files
# ----------------------------------------------------------------------------
def check_provenance(config, workdir: pathlib.Path, allow_change: bool = False) -> dict:
  """Compare `config` with the training config the workdir was started with
  (provenance.json, plus the allowed changes of config_history.jsonl).

  Returns {key: (recorded, now)} of training keys that differ (see
  `config_validation.NON_TRAINING_KEYS` for those that may change freely). A
  difference raises `TrainingError` listing the keys unless `allow_change`.
  Workdirs from before provenance.json compare against their config.json.
  """
  recorded = None
  if not has_checkpoint(workdir):
    return {}  # a run that failed before its first checkpoint fixes no config
  if (workdir / PROVENANCE_FILE).exists():
    recorded = dict(_read_json(workdir / PROVENANCE_FILE)["training_config"])
    history = workdir / CONFIG_HISTORY_FILE
    for line in (history.read_text().splitlines() if history.exists() else []):
      recorded.update({k: v["now"] for k, v in json.loads(line)["changed"].items()})
  elif (workdir / checkpoints.CONFIG_FILE).exists():
    recorded = _read_json(workdir / checkpoints.CONFIG_FILE)
  if recorded is None:
    return {}
  changed = config_validation.differences(recorded, config_validation.as_dict(config))
  if changed and not allow_change:
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
    raise TrainingError(
        f"{workdir} was trained with a different config ({listed}); resuming would mix "
        f"two runs. Use a new --workdir, or pass --allow_config_change to continue anyway "
        f"(recorded in {CONFIG_HISTORY_FILE})")
  return changed


def record_config(config, workdir: pathlib.Path, step: int, changed: dict) -> None:
  """After a successful restore: config.json (this start), provenance.json (the
  first start's training config and its hash, rewritten only by a start at step 0: a
  run that failed before its first checkpoint fixes no config) and, for an allowed
  change, one line of config_history.jsonl. Each file is written atomically."""
  values = config_validation.as_dict(config)
  if step == 0 or not (workdir / PROVENANCE_FILE).exists():
    legacy = workdir / checkpoints.CONFIG_FILE  # a workdir from before provenance.json
    first = _read_json(legacy) if step and legacy.exists() else values
    provenance = {"training_config": config_validation.training_config(first),
                  "config_hash": config_validation.config_hash(first),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    files.atomic_write_json(workdir / PROVENANCE_FILE, provenance, sort_keys=True)
  files.atomic_write_json(workdir / checkpoints.CONFIG_FILE, values, sort_keys=True)
  if changed:
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_from_step": step,
            "changed": {k: {"was": a, "now": b} for k, (a, b) in changed.items()},
            "config_hash": config_validation.config_hash(values)}
    with files.write_errors(workdir / CONFIG_HISTORY_FILE), \
        open(workdir / CONFIG_HISTORY_FILE, "a") as f:
      f.write(json.dumps(line) + "\n")
    log.warning("%s: config changed at step %d (allowed): %s", workdir, step, sorted(changed))


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise TrainingError(f"{path}: unreadable ({e})") from e


def has_checkpoint(workdir: pathlib.Path) -> bool:
  """Whether the workdir holds a saved step (a finalised Orbax step directory)."""
  directory = workdir / checkpoints.CHECKPOINT_DIR
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """Drop lines logged after the checkpoint we resume from (they will be redone).

  A line cut short by a killed process (not valid JSON) is dropped too.
  """
  if not path.exists():
    return
  keep = []
  lines = path.read_text().splitlines()
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):  # the last line, cut short when the run was killed
        break
      raise TrainingError(f"{path}: line {number} is not valid JSON: {line[:80]!r}") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
      raise TrainingError(f"{path}: line {number} has no integer \"step\": {line[:80]!r}")
    if record["step"] <= last_step:
      keep.append(line)
  files.atomic_write_text(path, "".join(line + "\n" for line in keep), fsync=False)


def check_run(config, workdir: pathlib.Path) -> None:
  """Every check that needs no model or data: config keys and values, the workdir
  (`TrainingError`, one line). `train` and `population.train_population` call it first."""
  try:
    config_validation.validate(config)
  except config_validation.ConfigError as e:
    raise TrainingError(str(e)) from None
  if config.batch_size % jax.process_count():
    raise TrainingError(f"config.batch_size={config.batch_size} is not divisible by the "
                        f"{jax.process_count()} processes")
  if hard_negatives_per_pair(config) and config.data_source == "pairs":
    raise TrainingError(
        f"config.hard_negatives_per_pair={hard_negatives_per_pair(config)} needs "
        "data_source 'files' (records with negatives, e.g. from eval.mine_negatives) "
        "or 'synthetic'; the folds' pairs have no hard negatives")
  if config.data_source == "pairs" and config.train_languages:
    from data_pipelines import folds
    try:
      folds.train_languages(folds.get_fold(config.fold), config.train_languages)
    except ValueError as e:
      raise TrainingError(f"config.train_languages={config.train_languages!r}: {e}") from None
  try:
    config_validation.check_writable(workdir, "workdir")
  except config_validation.ConfigError as e:
    raise TrainingError(str(e)) from None


def check_lengths(config, model) -> None:
  """`TrainingError` (one line) for a max_query_len / max_passage_len above what the model's
  position table holds: refused, not capped, right after the model is loaded and before any
  text is tokenised (a longer row would read past the table: NaN losses, or a huge shard)."""
  from mlir_train import encode
  limit = encode.model_max_length(model, 2**62)
  too_long = [f"config.{key}={int(config[key])}" for key in ("max_query_len", "max_passage_len")
              if int(config[key]) > limit]
  if too_long:
    raise TrainingError(
        f"{' and '.join(too_long)} exceed{'s' if len(too_long) == 1 else ''} the {limit} "
        f"tokens that model {config.model!r} can hold (its position table); use at most {limit}")


def _check_data(config) -> None:
  """The sampling mode against the training data's language pairs (`sampler.check_sampling`),
  right after reading the files and before the model is loaded: one `DataError` line."""
  from data_pipelines import sampler
  sampler.check_data_fits(config)


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def train(config, workdir: str | os.PathLike, allow_config_change: bool = False,
          console: bool = False) -> dict:
  """Train (or resume) in `workdir`; returns a summary of the run.

  `console` (the command line): print what the run trains before the first step and,
  when stderr is not a terminal, one line per `log_every_steps` (`mlir_train.console`);
  a terminal gets a progress bar either way.

  Resuming with a different training config raises `TrainingError` unless
  `allow_config_change` (see `check_provenance`). A workdir another live process
  trains in raises `files.LockError` naming it, before anything is read or written.
  """
  workdir = pathlib.Path(workdir)
  check_run(config, workdir)
  with workdir_lock(workdir), _write_failures(workdir):
    return _train(config, workdir, allow_config_change, console)


@contextlib.contextmanager
def _write_failures(workdir: pathlib.Path):
  """A full disk or a denied write while training (a metrics line, an Orbax save): one
  `TrainingError` line saying what is kept, instead of the library's tracebacks."""
  # Installed first: a failed save's late reports can come before the error reaches us.
  checkpoints.drop_late_reports()
  try:
    with checkpoints.quiet_orbax(DISK_FULL):
      yield
  except ProjectError:
    raise
  except Exception as e:  # Orbax / TensorStore wrap the OSError in their own kinds
    full = any(m in str(e) for m in DISK_FULL) or getattr(e, "errno", None) == errno.ENOSPC
    if not (full or isinstance(e, OSError)):
      raise
    reason = ("no space left on the device" if full
              else getattr(e, "strerror", None) or str(e).splitlines()[0][:200])
    steps = sorted(int(p.name) for p in (workdir / checkpoints.CHECKPOINT_DIR).glob("*")
                   if p.name.isdigit())
    kept = (f"the checkpoint of step {steps[-1]} is kept: free space and run the same command "
            f"to resume from it" if steps else "no checkpoint was saved yet")
    where = getattr(e, "filename", None) or workdir
    raise TrainingError(f"{where}: cannot write ({reason}); {kept}") from None


def workdir_lock(workdir: pathlib.Path):
  """One writer per workdir: its `files.DirectoryLock`, taken by the process that writes
  (the chief); a no-op on the other processes of a multi-host run."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return files.DirectoryLock(workdir, "training run")


def _train(config, workdir: pathlib.Path, allow_config_change: bool, console: bool) -> dict:
  """`train` holding the workdir's lock."""
  is_chief = jax.process_index() == 0
  _check_data(config)  # the sampling mode against the data's language pairs, before the model
  changed = check_provenance(config, workdir, allow_config_change)
  if is_chief:
    workdir.mkdir(parents=True, exist_ok=True)

  # --- Mesh -----------------------------------------------------------------
  mesh = partitioning.make_mesh(fsdp=int(config.fsdp))
  partitioning.check_batch_divisible(int(config.batch_size), mesh)

  # --- Model and optimizer --------------------------------------------------
  model = models.load_model(config.model)
  check_lengths(config, model)  # before any tokenisation
  base_is_run = models.is_training_workdir(config.model)
  if base_is_run:  # restored onto the first device; the mesh may span more
    model.params = jax.device_get(model.params)
  # The loaded model's own module (any architecture), at the run's dtype and remat.
  module = model.module.clone(dtype=COMPUTE_DTYPES[config.compute_dtype],
                              remat=bool(config.remat))
  # The base model's query / passage prompts, or config.query_prompt / passage_prompt.
  try:
    prompts = prompts_lib.from_config(model.prompts, config)
  except prompts_lib.PromptError as e:
    raise TrainingError(str(e)) from None
  tx = optimizer_lib.make_optimizer(config)

  # --- Sharding -------------------------------------------------------------
  state_shape = jax.eval_shape(lambda p: init_state(p, tx, config), model.params)
  state_sharding = partitioning.tree_shardings(state_shape, mesh)
  batch_sharding = {name: partitioning.batch_sharding(mesh) for name in BATCH_FIELDS}
  # The update step's batch: + the hard-negative fields with hard_negatives_per_pair > 0.
  update_sharding = {name: partitioning.batch_sharding(mesh) for name in batch_fields(config)}
  state = jax.jit(lambda p: init_state(p, tx, config), out_shardings=state_sharding)(
      model.params)
  # Parameters held out of training are not checkpointed: their names and the sha256 of
  # the start model's values are, and a restore takes them from the start model. Not when
  # the start model is another run's workdir, which may train on: then all are saved.
  frozen = None if base_is_run else checkpoints.Frozen.of(
      model.params, optimizer_lib.frozen_names(model.params, config.freeze_embeddings,
                                               config.get("freeze_layers", 0)))
  parameters = console_lib.parameter_counts(model.params, config) if console else None
  model.params = None  # the state holds them now

  # --- Update and validation steps (an earlier run's in this process when they agree) -----
  update_step, validation_step = step_functions(module, config, mesh, state_sharding,
                                                update_sharding, batch_sharding)

  # --- Restore --------------------------------------------------------------
  mngr = checkpoints.manager(workdir, max_to_keep=int(config.keep_checkpoints))
  meta = {"step": 0}
  restored = checkpoints.restore_latest(mngr, state, frozen)
  if restored is not None:
    state, meta = restored
    if is_chief:
      print(f"resuming {workdir} from step {meta['step']}", file=sys.stderr)
  start_step = int(meta["step"])
  if is_chief:
    record_config(config, workdir, start_step, changed)
    truncate_metrics(workdir / METRICS_FILE, start_step)
    truncate_metrics(workdir / BATCHES_FILE, start_step)
  # Batches per kind, batches per `languages` label ("de", "x", "mixed"), and
  # pairs per (query language, passage language) over the whole run: the steps
  # before a resume are counted from batches.jsonl (the chief's; other processes
  # count the steps they run).
  kind_counts, language_counts, pair_counts = batch_counts(
      workdir / BATCHES_FILE if is_chief and start_step else None)

  # --- Input ----------------------------------------------------------------
  seen = {}  # the training data and held-out pairs, for the console's summary
  batches, validation = input_data(config, model.tokenizer, model.config.vocab_size, start_step,
                                   prompts, on_data=lambda d, h: seen.update(data=d, held_out=h))
  if console and is_chief:
    console_lib.print_summary(console_lib.summary_lines(
        config, model, mesh.devices.flat, start_step, workdir, parameters=parameters, **seen))
  validation_arrays = global_validation_batches(validation, mesh)

  # --- Validation and early stopping ------------------------------------------
  def validate(params) -> dict[str, float]:
    return validation_scores(validation_step, params, validation_arrays)

  early_stopping = bool(config.get("early_stopping", False))
  best_mngr = checkpoints.best_manager(workdir) if early_stopping else None
  best = meta.get("best_validation")  # {"step", "loss"} of the best checkpoint so far
  if best_mngr is not None and is_chief:
    for later in [s for s in best_mngr.all_steps() if s > start_step]:
      best_mngr.delete(later)  # saved after the checkpoint we resume from: redone below
  validation_every = int(config.get("validation_every_steps", 50))

  # --- Loop -----------------------------------------------------------------
  total_steps = int(config.total_steps)
  # Crash/resume tests slow the loop down to kill it at a chosen moment.
  step_delay_s = float(os.environ.get("MLIR_TRAIN_STEP_DELAY_S", "0") or 0)
  # A bar on a terminal (step, loss, pairs/s, time left); with `console`, plain lines elsewhere.
  progress = console_lib.Progress(total_steps, start_step, int(config.batch_size),
                                  enabled=is_chief, plain=console)
  metrics_file = open(workdir / METRICS_FILE, "a") if is_chief else None
  batches_file = open(workdir / BATCHES_FILE, "a") if is_chief else None
  # TensorBoard curves of the metrics.jsonl records (<workdir>/tensorboard/).
  tensorboard = metrics_writer.open_tensorboard(workdir, start_step) if is_chief else None
  window_start, window_steps = time.perf_counter(), 0
  last_metrics = None
  step = start_step
  try:
    while step < total_steps:
      batch = next(batches)
      if batch.step != step:
        raise TrainingError(f"batch stream out of step: expected {step}, got {batch.step}")
      arrays = partitioning.global_batch({f: getattr(batch, f) for f in batch_fields(config)},
                                         mesh)
      state, metrics = update_step(state, arrays)
      step += 1
      window_steps += 1
      kind_counts[kind_name(batch)] += 1
      language_counts[batch.languages] += 1
      pair_counts.update(language_pairs(batch))
      if batches_file:
        batches_file.write(json.dumps(batch_record(step, batch)) + "\n")
        batches_file.flush()
      progress.step()

      scores = None
      if validation_arrays and (step % validation_every == 0 or step == total_steps):
        scores = validate(state["params"])
        if best_mngr is not None and (best is None or scores["validation_loss"] < best["loss"]):
          best = {"step": step, "loss": scores["validation_loss"]}
          checkpoints.save_best(best_mngr, step, state["params"], best, frozen)

      if step % int(config.log_every_steps) == 0 or step == total_steps or scores:
        now = time.perf_counter()
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        last_metrics = {"step": step, "loss": m["loss"], "accuracy": m["accuracy"],
                        "grad_norm": m["grad_norm"], "learning_rate": m["learning_rate"],
                        "batch_kind": kind_name(batch), "languages": batch.languages,
                        "language_pairs": language_pairs(batch),
                        "skipped_nonfinite": int(m["skipped_nonfinite"]),
                        **({"l2sp_penalty": m["l2sp_penalty"]} if "l2sp_penalty" in m else {}),
                        "examples_per_sec": window_steps * config.batch_size / (now - window_start),
                        **(scores or {})}
        window_start, window_steps = now, 0
        progress.log(last_metrics)
        if metrics_file:
          metrics_file.write(json.dumps(last_metrics) + "\n")
          metrics_file.flush()
        if tensorboard:
          tensorboard.write(last_metrics)

      if int(state["nonfinite_in_a_row"]) >= int(config.max_nonfinite_in_a_row):
        raise TrainingError(nonfinite_stop(step, int(state["nonfinite_in_a_row"]), config,
                                           mngr.latest_step(), workdir))

      if step % int(config.checkpoint_every_steps) == 0 or step == total_steps:
        meta = {"step": step, "skipped_nonfinite": int(state["skipped_nonfinite"]),
                **({"best_validation": best} if best else {})}
        checkpoints.save(mngr, step, state, meta, frozen)
      if step_delay_s:
        time.sleep(step_delay_s)
  finally:
    for m in (mngr, best_mngr):
      if m is not None:
        try:
          m.wait_until_finished()
        finally:  # also after a failed save: its threads end before the error goes on
          m.close()
    progress.close()
    for f in (metrics_file, batches_file, tensorboard):
      if f:
        f.close()

  summary = {"workdir": str(workdir), "final_step": step, "resumed_from_step": start_step,
             "kind_counts": dict(kind_counts), "language_counts": dict(language_counts),
             "language_pair_counts": dict(sorted(pair_counts.items())),
             "skipped_nonfinite": int(state["skipped_nonfinite"]),
             "best_validation": best if early_stopping else None,
             "final_metrics": last_metrics}
  if is_chief:
    log.info("batch kinds seen: %s", dict(sorted(kind_counts.items())))
    log.info("languages seen: %s", dict(sorted(language_counts.items())))
    log.info("pairs per query-passage language: %s", dict(sorted(pair_counts.items())))
  return summary


def maybe_initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                                 process_id: int | None) -> None:
  """`jax.distributed.initialize` from flags, or from the environment on SLURM / TPU."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
    jax.distributed.initialize()


def main(argv) -> None:
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  from mlir_train import compile_cache
  compile_cache.enable()  # before the first compilation
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax is chatty at INFO
  log.setLevel(logging.INFO)
  try:
    maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id)
    summary = train(FLAGS.config, FLAGS.workdir, FLAGS.allow_config_change, console=True)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(json.dumps(summary, indent=2))


def check_override_keys(argv: list[str]) -> None:
  """`--config.KEY=...` with a KEY that configs/default.py lacks: one error line, exit 2.

  (ml_collections would raise an AttributeError traceback while parsing flags.)
  """
  for arg in argv:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0]
      try:
        config_validation.check_key(key)
      except config_validation.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file(
      "config", None, "Python config file with get_config() (e.g. configs/default.py); "
      "override keys with --config.KEY=VALUE.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, config.json, "
                      "provenance.json, metrics.jsonl, batches.jsonl. An existing run there "
                      "is resumed (with the same training config).")
  flags.DEFINE_bool("allow_config_change", False,
                    "Resume although training-relevant config keys differ from the workdir's "
                    "first start (the change is recorded in config_history.jsonl).")
  flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  from absl import app
  check_override_keys(sys.argv[1:])
  _define_flags()
  if console_lib.wants_help(sys.argv[1:]):  # absl's --help exits 1 and lists no config key
    from absl import flags
    print(console_lib.help_text(__doc__, flags.FLAGS.main_module_help()))
    sys.exit(0)
  app.run(main)
