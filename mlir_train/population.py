"""Many training runs in one program: a population of K runs in one jitted step (issue 30).

  summaries = population.train_population([config_0, config_1, ...], [workdir_0, ...])

The members share everything the update step's program depends on (model, batch size,
lengths, dtype, hard negatives, optimizer settings, ...: every config key the step
functions read, `train.NOT_READ_BY_STEPS` aside, plus "model") and may differ in what
only the data or the bookkeeping read (seed, sampling, alpha, language sampling, data,
prompts, logging / checkpoint intervals) and in `learning_rate` (`PER_MEMBER_STEP_KEYS`).

Layout: the trainable parameters, the optimizer state and the counters of every member
are stacked along a leading `runs` axis; the frozen subtrees (`optimizer.split_frozen`:
the embeddings with `freeze_embeddings`, lower `freeze_layers` layers) and L2-SP's
anchor are held once and shared. One update is `jax.vmap` of `train.make_update_step`
(the single run's step, unchanged) over the runs axis, on a ("data", "runs", "fsdp")
mesh (`population_mesh`): the members are spread over the "runs" device groups, each
member's batch over its group's "data" x "fsdp" devices as in `train` (one device: vmap
only; 8 devices and 4 members: e.g. 4 runs x 2 data).
With equal learning rates the member's step is traced exactly as alone; with different
ones each member's rate enters as a traced scalar of its own schedule.

Each member draws the batches it would draw alone (`train.input_data`, its own stream)
and writes into its own workdir what `train.train` writes: config.json,
provenance.json, metrics.jsonl, batches.jsonl, tensorboard/ and Orbax checkpoints
(`checkpoints.save`), so `models.load_model(workdir)` / `restore_for_inference` read it
like any other run (and `train.train` could resume it).

Not yet (issue 30): validation and early stopping (refused), resuming a population
(a workdir with checkpoints is refused), population evaluation,
the study's use of it.
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from data_pipelines.errors import ProjectError
from mlir_train import checkpoints
from mlir_train import config_validation
from mlir_train import metrics_writer
from mlir_train import models
from mlir_train import optimizer as optimizer_lib
from mlir_train import partitioning
from mlir_train import prompts as prompts_lib
from mlir_train import train as train_lib

# Keys the step reads that members may still set each their own way.
PER_MEMBER_STEP_KEYS = frozenset({"learning_rate"})
# Keys outside the step that the members must still share: the frozen parameters are
# held once, so every member starts from the same model.
SHARED_KEYS_BEYOND_STEPS = frozenset({"model"})
RUNS_AXIS = "runs"  # the mesh axis the members are spread over
BATCHED_STATE = ("params", "opt_state", "step", "nonfinite_in_a_row", "skipped_nonfinite")


class PopulationError(ProjectError, ValueError):
  """Configs or workdirs that cannot train together as one population."""


# ----------------------------------------------------------------------------
# Which configs train together
# ----------------------------------------------------------------------------
def shared_keys(keys) -> list[str]:
  """The config keys every member must agree on (see the module docstring)."""
  return sorted(k for k in keys if k not in PER_MEMBER_STEP_KEYS and (
      k not in train_lib.NOT_READ_BY_STEPS or k in SHARED_KEYS_BEYOND_STEPS))


def check_compatible(configs: Sequence) -> None:
  """`PopulationError` (one line, naming the first differing key) unless every config
  agrees with the first on `shared_keys`; also refuses what populations lack yet."""
  if not configs:
    raise PopulationError("a population needs at least one config")
  values = [config_validation.as_dict(c) for c in configs]
  for i, v in enumerate(values):
    if v.get("validation_fraction") or v.get("early_stopping"):
      raise PopulationError(
          f"population member {i}: validation and early stopping are not supported in a "
          f"population yet (config.validation_fraction={v.get('validation_fraction')}, "
          f"config.early_stopping={v.get('early_stopping')}); train it alone")
  for i, v in enumerate(values[1:], 1):
    for key in shared_keys(set(values[0]) | set(v)):
      if values[0].get(key) != v.get(key):
        raise PopulationError(
            f"population member {i} differs from member 0 in config.{key} "
            f"({v.get(key)!r} vs {values[0].get(key)!r}): members must share the model and "
            f"every key the update step's shapes and program read; train it in another "
            f"population")


def _check_workdirs(configs, workdirs) -> list[pathlib.Path]:
  if len(workdirs) != len(configs):
    raise PopulationError(f"{len(configs)} configs but {len(workdirs)} workdirs")
  paths = [pathlib.Path(w) for w in workdirs]
  resolved = [p.resolve() for p in paths]
  if len(set(resolved)) != len(resolved):
    raise PopulationError(f"population workdirs must differ: {[str(p) for p in paths]}")
  for config, path in zip(configs, paths):
    train_lib._validate(config, path)  # config values, writable workdir (one line each)
    if any((path / checkpoints.CHECKPOINT_DIR).glob("*")):
      raise PopulationError(f"{path} already holds checkpoints: resuming a population is not "
                            f"supported yet; resume it alone with mlir_train.train or use a "
                            f"new workdir")
    train_lib.check_provenance(config, path)
  return paths


# ----------------------------------------------------------------------------
# The population's update step
# ----------------------------------------------------------------------------
class _WithLearningRate:
  """`config` whose learning_rate is `value` (a member's traced rate inside the vmap)."""

  def __init__(self, config, value):
    self._config, self._value = config, value

  def __getattr__(self, name):
    return self._value if name == "learning_rate" else getattr(self._config, name)

  def __getitem__(self, name):
    return self._value if name == "learning_rate" else self._config[name]

  def get(self, name, default=None):
    return self._value if name == "learning_rate" else self._config.get(name, default)


def make_population_step(module, config, per_member_learning_rate: bool):
  """(shared, stacked, batches, learning_rates) -> (stacked, metrics), every leaf of
  `stacked`, `batches` and `metrics` with a leading runs axis.

  shared = {"frozen": frozen params[, "start_params": L2-SP anchor]};
  stacked = {"params": trainable params, "opt_state", "step", counters}. Each member
  is `train.make_update_step(module, tx, config)` on its own slice; `learning_rates`
  [K] is read only when `per_member_learning_rate`.
  """
  def member(shared, state, batch, learning_rate):
    c = _WithLearningRate(config, learning_rate) if per_member_learning_rate else config
    update = train_lib.make_update_step(module, optimizer_lib.make_optimizer(c), c)
    full = {**state, "params": optimizer_lib.merge(state["params"], shared["frozen"])}
    if "start_params" in shared:
      full["start_params"] = shared["start_params"]
    new, metrics = update(full, batch)
    trainable = {k: v for k, v in new["params"].items() if k not in shared["frozen"]}
    return {**{k: new[k] for k in BATCHED_STATE}, "params": trainable}, metrics

  return jax.vmap(member, in_axes=(None, 0, 0, 0))


_STEPS: collections.OrderedDict = collections.OrderedDict()
_STEPS_KEPT = 2


def _jitted_step(module, config, mesh, size: int, per_member_learning_rate: bool,
                 shared_sharding, stacked_sharding, batch_sharding):
  """The jitted population step, reused by a later population of the same shapes."""
  values = {k: v for k, v in config.to_dict().items()
            if k in shared_keys(config.keys()) or (k in PER_MEMBER_STEP_KEYS
                                                   and not per_member_learning_rate)}
  key = (module, tuple(d.id for d in mesh.devices.flat), mesh.devices.shape, mesh.axis_names, size,
         per_member_learning_rate, json.dumps(values, sort_keys=True, default=repr))
  if key not in _STEPS:
    import ml_collections
    frozen_config = ml_collections.ConfigDict(config.to_dict())
    _STEPS[key] = jax.jit(
        make_population_step(module, frozen_config, per_member_learning_rate),
        in_shardings=(shared_sharding, stacked_sharding, batch_sharding,
                      partitioning.replicated(mesh)),
        out_shardings=(stacked_sharding, partitioning.replicated(mesh)), donate_argnums=1)
    while len(_STEPS) > _STEPS_KEPT:
      _STEPS.popitem(last=False)
  _STEPS.move_to_end(key)
  return _STEPS[key]


def stacked_sharding(tree, mesh):
  """A single run's sharding of every leaf (`partitioning.tree_shardings`) behind a
  leading runs axis split over the mesh's "runs" devices; `tree` holds one member's shapes."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(
      mesh, P(RUNS_AXIS, *partitioning.fsdp_spec(tuple(np.shape(x)), fsdp))), tree)


def population_mesh(size: int, config, runs_devices: int | None = None):
  """The ("data", "runs", "fsdp") mesh of a population of `size` members: `runs_devices`
  device groups (None: the most that divide the members, the devices and the batch,
  `partitioning.runs_axis_size`), each holding whole members."""
  fsdp, batch = int(config.fsdp), int(config.batch_size)
  runs = (partitioning.runs_axis_size(size, batch, fsdp) if runs_devices is None
          else int(runs_devices))
  if runs < 1 or size % runs:
    raise PopulationError(f"{size} members do not split evenly over runs_devices={runs} "
                          f"device groups; choose a divisor of {size}")
  mesh = partitioning.make_population_mesh(runs, fsdp)
  partitioning.check_batch_divisible(batch, mesh)
  return mesh


def split_state(state: dict, config) -> tuple[dict, dict]:
  """A single run's train state -> (shared, one member's batched part)."""
  trainable, frozen = optimizer_lib.split_frozen(state["params"], config.freeze_embeddings,
                                                 config.get("freeze_layers", 0))
  shared = {"frozen": frozen}
  if "start_params" in state:
    shared["start_params"] = state["start_params"]
  return shared, {**{k: state[k] for k in BATCHED_STATE}, "params": trainable}


def member_state(shared: dict, stacked: dict, k: int) -> dict:
  """Member k's train state, as `train.train` holds (and checkpoints) it."""
  state = jax.tree.map(lambda x: x[k], stacked)
  state["params"] = optimizer_lib.merge(state["params"], shared["frozen"])
  if "start_params" in shared:
    state["start_params"] = shared["start_params"]
  return state


def _stack_batches(member_batches, fields, sharding) -> dict[str, jax.Array]:
  """K per-process batches -> {field: global array [K, global_batch, ...]}."""
  out = {}
  for name in fields:
    local = np.stack([np.asarray(getattr(b, name)) for b in member_batches])
    shape = (local.shape[0], local.shape[1] * jax.process_count()) + local.shape[2:]
    out[name] = jax.make_array_from_process_local_data(sharding, local, shape)
  return out


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------
def train_population(configs: Sequence, workdirs: Sequence[str | os.PathLike],
                     return_params: bool = False, runs_devices: int | None = None):
  """Train the members from step 0 in one program; returns one `train.train`-style
  summary per member (plus "population": size, mesh and aggregate pairs/s), and with
  `return_params` also each member's final parameters (host arrays). `runs_devices`:
  how many device groups the members spread over (`population_mesh`)."""
  check_compatible(configs)
  paths = _check_workdirs(configs, workdirs)
  is_chief = jax.process_index() == 0
  config, size = configs[0], len(configs)
  if is_chief:
    for c, path in zip(configs, paths):
      path.mkdir(parents=True, exist_ok=True)
      train_lib.record_config(c, path, 0, {})
      train_lib.truncate_metrics(path / train_lib.METRICS_FILE, 0)
      train_lib.truncate_metrics(path / train_lib.BATCHES_FILE, 0)

  # --- Mesh, model, state (as `train.train`) ------------------------------------
  mesh = population_mesh(size, config, runs_devices)
  model = models.load_model(config.model)
  base_is_run = models.is_training_workdir(config.model)
  if base_is_run:
    model.params = jax.device_get(model.params)
  module = model.module.clone(dtype=train_lib.COMPUTE_DTYPES[config.compute_dtype],
                              remat=bool(config.remat))
  tx = optimizer_lib.make_optimizer(config)
  init = lambda p: split_state(train_lib.init_state(p, tx, config), config)
  shared_shape, member_shape = jax.eval_shape(init, model.params)
  shared_sh = partitioning.tree_shardings(shared_shape, mesh)
  stacked_sh = stacked_sharding(member_shape, mesh)
  shared, one = jax.jit(init, out_shardings=(shared_sh, partitioning.tree_shardings(
      member_shape, mesh)))(model.params)
  stacked = jax.jit(lambda m: jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), m),
                    out_shardings=stacked_sh)(one)
  del one
  frozen = None if base_is_run else checkpoints.Frozen.of(
      model.params, optimizer_lib.frozen_names(model.params, config.freeze_embeddings,
                                               config.get("freeze_layers", 0)))
  model.params = None

  rates = [float(c.learning_rate) for c in configs]
  per_member_rate = len(set(rates)) > 1
  fields = train_lib.batch_fields(config)
  batch_sh = NamedSharding(mesh, P(RUNS_AXIS, partitioning.BATCH_AXES))  # [K, batch, ...]
  step_fn = _jitted_step(module, config, mesh, size, per_member_rate, shared_sh, stacked_sh,
                         batch_sh)
  learning_rates = jax.device_put(np.asarray(rates, np.float32), partitioning.replicated(mesh))

  # --- Each member's batches, as it would draw them alone -------------------------
  streams = []
  for c in configs:
    try:
      member_prompts = prompts_lib.from_config(model.prompts, c)
    except prompts_lib.PromptError as e:
      raise train_lib.TrainingError(str(e)) from None
    streams.append(train_lib.input_data(c, model.tokenizer, model.config.vocab_size, 0,
                                        member_prompts)[0])

  # --- Loop -----------------------------------------------------------------------
  members = [_Member(c, p, is_chief) for c, p in zip(configs, paths)]
  total_steps = int(config.total_steps)
  started = time.perf_counter()
  step = 0
  try:
    while step < total_steps:
      batches = [next(s) for s in streams]
      for k, b in enumerate(batches):
        if b.step != step:
          raise train_lib.TrainingError(
              f"{paths[k]}: batch stream out of step: expected {step}, got {b.step}")
      stacked, metrics = step_fn(shared, stacked, _stack_batches(batches, fields, batch_sh),
                                 learning_rates)
      step += 1
      host_metrics = None
      for k, (member, batch) in enumerate(zip(members, batches)):
        member.count(step, batch)
        if member.logs(step, total_steps):
          if host_metrics is None:
            host_metrics = jax.device_get(metrics)
          member.log(step, batch, {name: float(v[k]) for name, v in host_metrics.items()})
      in_a_row = np.asarray(jax.device_get(stacked["nonfinite_in_a_row"]))
      for k, member in enumerate(members):
        if in_a_row[k] >= int(config.max_nonfinite_in_a_row):
          raise train_lib.TrainingError(
              f"{paths[k]}: stopping the population at step {step}: {int(in_a_row[k])} "
              f"non-finite losses in a row (config.max_nonfinite_in_a_row="
              f"{config.max_nonfinite_in_a_row}); lower its learning rate or train it alone")
        if step % int(member.config.checkpoint_every_steps) == 0 or step == total_steps:
          member.save(step, member_state(shared, stacked, k), frozen)
  finally:
    for member in members:
      member.close()
  seconds = time.perf_counter() - started
  pairs_per_sec = step * size * int(config.batch_size) / max(seconds, 1e-9)
  summaries = [{**m.summary(step), "population": {"size": size, "member": k,
                                                  "mesh": dict(mesh.shape),
                                                  "pairs_per_sec": pairs_per_sec}}
               for k, m in enumerate(members)]
  if not return_params:
    return summaries
  return summaries, [jax.device_get(member_state(shared, stacked, k)["params"])
                     for k in range(size)]


class _Member:
  """One member's bookkeeping: its files, counters, checkpoints (as in `train.train`)."""

  def __init__(self, config, workdir: pathlib.Path, is_chief: bool):
    self.config, self.workdir = config, workdir
    self.kinds, self.languages, self.pairs = (collections.Counter() for _ in range(3))
    self.mngr = checkpoints.manager(workdir, max_to_keep=int(config.keep_checkpoints))
    self.metrics_file = open(workdir / train_lib.METRICS_FILE, "a") if is_chief else None
    self.batches_file = open(workdir / train_lib.BATCHES_FILE, "a") if is_chief else None
    self.tensorboard = metrics_writer.open_tensorboard(workdir, 0) if is_chief else None
    self.window_start, self.window_steps = time.perf_counter(), 0
    self.last_metrics, self.skipped = None, 0

  def count(self, step: int, batch) -> None:
    self.window_steps += 1
    self.kinds[train_lib.kind_name(batch)] += 1
    self.languages[batch.languages] += 1
    self.pairs.update(train_lib.language_pairs(batch))
    if self.batches_file:
      self.batches_file.write(json.dumps(train_lib.batch_record(step, batch)) + "\n")
      self.batches_file.flush()

  def logs(self, step: int, total_steps: int) -> bool:
    return step % int(self.config.log_every_steps) == 0 or step == total_steps

  def log(self, step: int, batch, m: dict) -> None:
    now = time.perf_counter()
    self.skipped = int(m["skipped_nonfinite"])
    self.last_metrics = {
        "step": step, "loss": m["loss"], "accuracy": m["accuracy"], "grad_norm": m["grad_norm"],
        "learning_rate": m["learning_rate"], "batch_kind": train_lib.kind_name(batch),
        "languages": batch.languages, "language_pairs": train_lib.language_pairs(batch),
        "skipped_nonfinite": self.skipped,
        **({"l2sp_penalty": m["l2sp_penalty"]} if "l2sp_penalty" in m else {}),
        "examples_per_sec": self.window_steps * self.config.batch_size / (now - self.window_start)}
    self.window_start, self.window_steps = now, 0
    if self.metrics_file:
      self.metrics_file.write(json.dumps(self.last_metrics) + "\n")
      self.metrics_file.flush()
    if self.tensorboard:
      self.tensorboard.write(self.last_metrics)

  def save(self, step: int, state: dict, frozen) -> None:
    self.skipped = int(state["skipped_nonfinite"])
    checkpoints.save(self.mngr, step, state, {"step": step, "skipped_nonfinite": self.skipped},
                     frozen)

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()
    for f in (self.metrics_file, self.batches_file, self.tensorboard):
      if f:
        f.close()

  def summary(self, final_step: int) -> dict:
    return {"workdir": str(self.workdir), "final_step": final_step, "resumed_from_step": 0,
            "kind_counts": dict(self.kinds), "language_counts": dict(self.languages),
            "language_pair_counts": dict(sorted(self.pairs.items())),
            "skipped_nonfinite": self.skipped, "best_validation": None,
            "final_metrics": self.last_metrics}
