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
(`checkpoints.save`), so `models.load_model(workdir)` / `restore_for_inference` /
`export` read it like any other run, and `train.train` resumes it (or, finished,
returns at once).

Validation and early stopping are per member, as alone: its own fixed validation
batches, scored by the single run's validation step (`train.validation_scores`) every
`validation_every_steps` and at the end (validation_loss* in metrics.jsonl); with
early_stopping its best checkpoint (`checkpoints.save_best`), recorded as
best_validation in checkpoint meta and summary.

A member that reaches max_nonfinite_in_a_row non-finite losses stops as it would alone
(its last good checkpoint kept, `train.nonfinite_stop`'s message as its summary's
"failed") but stays in the program: the step's `active` mask holds its state fixed
while the others train on.

Resume (after SIGKILL): the same configs and workdirs continue from the latest step
that every member holds a usable checkpoint of; a member's later checkpoints (and best
checkpoints, metrics and batches lines) are dropped and redone. A member that failed
takes the population back to its last checkpoint (deterministic: it fails again there),
and a new workdir among finished ones takes every member back to step 0. Each
workdir's lock is held as `train.train` holds it.

Evaluation of many models in one pass is `eval.population`; the study trains and
evaluates its runs as populations with `--population` (`study.populations`).
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import sys
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
  agrees with the first on `shared_keys`."""
  if not configs:
    raise PopulationError("a population needs at least one config")
  values = [config_validation.as_dict(c) for c in configs]
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
    train_lib.check_run(config, path)  # config values, writable workdir (one line each)
    train_lib.check_provenance(config, path)  # a workdir to resume: the same training config
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
  """(shared, stacked, batches, learning_rates, active) -> (stacked, metrics), every leaf
  of `stacked`, `batches` and `metrics` with a leading runs axis.

  shared = {"frozen": frozen params[, "start_params": L2-SP anchor]};
  stacked = {"params": trainable params, "opt_state", "step", counters}. Each member
  is `train.make_update_step(module, tx, config)` on its own slice; `learning_rates`
  [K] is read only when `per_member_learning_rate`. A member whose `active` [K] is
  False (stopped) keeps its state as it was (its batch only fills the shapes).
  """
  def member(shared, state, batch, learning_rate, active):
    c = _WithLearningRate(config, learning_rate) if per_member_learning_rate else config
    update = train_lib.make_update_step(module, optimizer_lib.make_optimizer(c), c)
    full = {**state, "params": optimizer_lib.merge(state["params"], shared["frozen"])}
    if "start_params" in shared:
      full["start_params"] = shared["start_params"]
    new, metrics = update(full, batch)
    trainable = {k: v for k, v in new["params"].items() if k not in shared["frozen"]}
    new = {**{k: new[k] for k in BATCHED_STATE}, "params": trainable}
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

  return jax.vmap(member, in_axes=(None, 0, 0, 0, 0))


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
                      partitioning.replicated(mesh), partitioning.replicated(mesh)),
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


def member_state(shared: dict, stacked: dict, k: int, take) -> dict:
  """Member k's train state, as `train.train` holds (and checkpoints) it. `take`: the
  jitted slice (`member_taker`), not eager indexing, which on several processes is
  dispatched op by op and hung."""
  return full_state(shared, take(stacked, k))


def member_taker(member_sharding):
  """(stacked, k) -> member k's batched state in one jitted call, laid out as alone."""
  return jax.jit(lambda stacked, k: jax.tree.map(lambda x: x[k], stacked), static_argnums=1,
                 out_shardings=member_sharding)


def full_state(shared: dict, member: dict) -> dict:
  """`split_state`'s inverse: one member's batched part + the shared part -> train state."""
  state = {**member, "params": optimizer_lib.merge(member["params"], shared["frozen"])}
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
  """Train (or resume) the members in one program; returns one `train.train`-style
  summary per member (plus "population": size, mesh and aggregate pairs/s, and "failed":
  None or why the member stopped), and with `return_params` also each member's final
  parameters (host arrays). `runs_devices`: how many device groups the members spread
  over (`population_mesh`; None: the most that fit)."""
  check_compatible(configs)
  paths = _check_workdirs(configs, workdirs)
  with contextlib.ExitStack() as locks:
    for path in paths:  # one writer per workdir, as for a single run
      locks.enter_context(train_lib.workdir_lock(path))
    return _train_population(configs, paths, return_params, runs_devices)


def _train_population(configs, paths, return_params, runs_devices):
  is_chief = jax.process_index() == 0
  config, size = configs[0], len(configs)
  if is_chief:
    for path in paths:
      path.mkdir(parents=True, exist_ok=True)

  # --- Mesh, model, state (as `train.train`) ------------------------------------
  mesh = population_mesh(size, config, runs_devices)
  model = models.load_model(config.model)
  train_lib.check_lengths(config, model)
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
  member_sh = partitioning.tree_shardings(member_shape, mesh)
  take = member_taker(member_sh)
  shared, one = jax.jit(init, out_shardings=(shared_sh, member_sh))(model.params)
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
  # The single run's validation step (it reads no per-member key), shared with `train`.
  state_sh = partitioning.tree_shardings(full_state(shared_shape, member_shape), mesh)
  validation_step = train_lib.step_functions(
      module, config, mesh, state_sh,
      {f: partitioning.batch_sharding(mesh) for f in fields},
      {f: partitioning.batch_sharding(mesh) for f in train_lib.BATCH_FIELDS})[1]

  # --- Restore: the latest step every member has a checkpoint of ------------------
  members = [_Member(c, p, is_chief) for c, p in zip(configs, paths)]
  try:
    start_step, restored = _restore(members, full_state(shared, one), frozen)
    if restored is None:
      stacked = jax.jit(lambda m: jax.tree.map(
          lambda x: jnp.broadcast_to(x, (size,) + x.shape), m), out_shardings=stacked_sh)(one)
    else:
      stacked = jax.jit(lambda ms: jax.tree.map(lambda *xs: jnp.stack(xs), *ms),
                        out_shardings=stacked_sh)(
          [split_state(state, c)[1] for state, c in zip(restored, configs)])
      if is_chief:
        print(f"resuming the population of {size} from step {start_step}", file=sys.stderr)
    del one, restored
    for member in members:
      member.start(start_step)

    # --- Each member's batches, as it would draw them alone ---------------------
    streams = []
    for member in members:
      try:
        member_prompts = prompts_lib.from_config(model.prompts, member.config)
      except prompts_lib.PromptError as e:
        raise train_lib.TrainingError(str(e)) from None
      stream, validation = train_lib.input_data(member.config, model.tokenizer,
                                                model.config.vocab_size, start_step,
                                                member_prompts)
      streams.append(stream)
      member.validation = train_lib.global_validation_batches(validation, mesh)

    # --- Loop -------------------------------------------------------------------
    total_steps = int(config.total_steps)
    step_delay_s = float(os.environ.get("MLIR_TRAIN_STEP_DELAY_S", "0") or 0)  # crash tests
    active = np.ones(size, bool)
    active_on_device = jax.device_put(active, partitioning.replicated(mesh))
    started = time.perf_counter()
    step = start_step
    while step < total_steps and active.any():
      batches = [next(s) for s in streams]
      for k, b in enumerate(batches):
        if b.step != step:
          raise train_lib.TrainingError(
              f"{paths[k]}: batch stream out of step: expected {step}, got {b.step}")
      stacked, metrics = step_fn(shared, stacked, _stack_batches(batches, fields, batch_sh),
                                 learning_rates, active_on_device)
      step += 1
      host_metrics = None
      for k, (member, batch) in enumerate(zip(members, batches)):
        if not active[k]:
          continue
        member.count(step, batch)
        scores = None
        if member.validates(step, total_steps):
          params = jax.device_put(member_state(shared, stacked, k, take)["params"],
                                  state_sh["params"])
          scores = member.validate(step, params, validation_step, frozen)
        if member.logs(step, total_steps) or scores:
          if host_metrics is None:
            host_metrics = jax.device_get(metrics)
          member.log(step, batch, {name: float(v[k]) for name, v in host_metrics.items()},
                     scores)
      in_a_row = np.asarray(jax.device_get(stacked["nonfinite_in_a_row"]))
      for k, member in enumerate(members):
        if not active[k]:
          continue
        if in_a_row[k] >= int(config.max_nonfinite_in_a_row):
          member.fail(step, int(in_a_row[k]))  # held fixed from now on: its last checkpoint stays
          active[k] = False
          active_on_device = jax.device_put(active, partitioning.replicated(mesh))
        elif step % int(member.config.checkpoint_every_steps) == 0 or step == total_steps:
          member.save(step, member_state(shared, stacked, k, take), frozen)
      if step_delay_s:
        time.sleep(step_delay_s)
  finally:
    for member in members:
      member.close()
  seconds = time.perf_counter() - started
  pairs_per_sec = (step - start_step) * size * int(config.batch_size) / max(seconds, 1e-9)
  summaries = [{**m.summary(step), "population": {"size": size, "member": k,
                                                  "mesh": dict(mesh.shape),
                                                  "pairs_per_sec": pairs_per_sec}}
               for k, m in enumerate(members)]
  if not return_params:
    return summaries
  return summaries, [jax.device_get(member_state(shared, stacked, k, take)["params"])
                     for k in range(size)]


def _restore(members, state_like, frozen) -> tuple[int, list | None]:
  """(start step, each member's restored train state, or None to start from step 0).

  The population resumes from the latest step that every member holds a usable
  checkpoint of: a member's later checkpoints are deleted (they are redone), and a
  member whose checkpoint there is damaged (`checkpoints.restore_latest` moves it aside)
  takes every member back to its previous one."""
  bound = max(set.intersection(*(set(m.mngr.all_steps()) for m in members)), default=0)
  while True:
    for member in members:
      member.drop_after(bound)
    if bound == 0:
      return 0, None
    found = [checkpoints.restore_latest(m.mngr, state_like, frozen) for m in members]
    steps = [int(f[1]["step"]) if f else 0 for f in found]
    if min(steps) == bound:
      for member, (_, meta) in zip(members, found):
        member.resume_meta = meta
      return bound, [state for state, _ in found]
    bound = min(steps)


class _Member:
  """One member's bookkeeping: its files, counters, validation, checkpoints (as in
  `train.train`)."""

  def __init__(self, config, workdir: pathlib.Path, is_chief: bool):
    self.config, self.workdir, self.is_chief = config, workdir, is_chief
    self.mngr = checkpoints.manager(workdir, max_to_keep=int(config.keep_checkpoints))
    self.early_stopping = bool(config.get("early_stopping", False))
    self.best_mngr = checkpoints.best_manager(workdir) if self.early_stopping else None
    self.resume_meta, self.validation = {"step": 0}, []
    self.metrics_file = self.batches_file = self.tensorboard = None
    self.last_metrics, self.skipped, self.failed, self.final_step = None, 0, None, None

  def drop_after(self, step: int) -> None:
    """Delete checkpoints saved after `step`, the population's resume step (every process
    calls Orbax's delete: it waits for all of them)."""
    for later in [s for s in self.mngr.all_steps() if s > step]:
      self.mngr.delete(later)

  def start(self, start_step: int) -> None:
    """As `train.train` after its restore: config files, files cut back to `start_step`,
    best checkpoints saved later dropped, counters of the steps before."""
    self.start_step, self.best = start_step, self.resume_meta.get("best_validation")
    self.skipped = int(self.resume_meta.get("skipped_nonfinite", 0))
    metrics, batches = (self.workdir / n for n in (train_lib.METRICS_FILE, train_lib.BATCHES_FILE))
    if self.is_chief:
      train_lib.record_config(self.config, self.workdir, start_step, {})
      train_lib.truncate_metrics(metrics, start_step)
      train_lib.truncate_metrics(batches, start_step)
    if self.best_mngr is not None:  # saved after the step we resume from: redone
      for later in [s for s in self.best_mngr.all_steps() if s > start_step]:
        self.best_mngr.delete(later)
    self.kinds, self.languages, self.pairs = train_lib.batch_counts(
        batches if self.is_chief and start_step else None)
    if self.is_chief:
      self.metrics_file, self.batches_file = open(metrics, "a"), open(batches, "a")
      self.tensorboard = metrics_writer.open_tensorboard(self.workdir, start_step)
    self.window_start, self.window_steps = time.perf_counter(), 0

  def count(self, step: int, batch) -> None:
    self.window_steps += 1
    self.kinds[train_lib.kind_name(batch)] += 1
    self.languages[batch.languages] += 1
    self.pairs.update(train_lib.language_pairs(batch))
    if self.batches_file:
      self.batches_file.write(json.dumps(train_lib.batch_record(step, batch)) + "\n")
      self.batches_file.flush()

  def validates(self, step: int, total_steps: int) -> bool:
    every = int(self.config.get("validation_every_steps", 50))
    return bool(self.validation) and (step % every == 0 or step == total_steps)

  def validate(self, step: int, params, validation_step, frozen) -> dict:
    """The validation_loss* scores; with early stopping a new lowest is saved as best."""
    scores = train_lib.validation_scores(validation_step, params, self.validation)
    if self.best_mngr is not None and (self.best is None
                                       or scores["validation_loss"] < self.best["loss"]):
      self.best = {"step": step, "loss": scores["validation_loss"]}
      checkpoints.save_best(self.best_mngr, step, params, self.best, frozen)
    return scores

  def logs(self, step: int, total_steps: int) -> bool:
    return step % int(self.config.log_every_steps) == 0 or step == total_steps

  def log(self, step: int, batch, m: dict, scores: dict | None) -> None:
    now = time.perf_counter()
    self.skipped = int(m["skipped_nonfinite"])
    self.last_metrics = {
        "step": step, "loss": m["loss"], "accuracy": m["accuracy"], "grad_norm": m["grad_norm"],
        "learning_rate": m["learning_rate"], "batch_kind": train_lib.kind_name(batch),
        "languages": batch.languages, "language_pairs": train_lib.language_pairs(batch),
        "skipped_nonfinite": self.skipped,
        **({"l2sp_penalty": m["l2sp_penalty"]} if "l2sp_penalty" in m else {}),
        "examples_per_sec": self.window_steps * self.config.batch_size / (now - self.window_start),
        **(scores or {})}
    self.window_start, self.window_steps = now, 0
    if self.metrics_file:
      self.metrics_file.write(json.dumps(self.last_metrics) + "\n")
      self.metrics_file.flush()
    if self.tensorboard:
      self.tensorboard.write(self.last_metrics)

  def fail(self, step: int, in_a_row: int) -> None:
    """Stopped as `train.train` would stop it alone (its message), at `step`."""
    self.failed = train_lib.nonfinite_stop(step, in_a_row, self.config, self.mngr.latest_step(),
                                           self.workdir)
    self.final_step = step
    if self.is_chief:
      print(f"population member {self.workdir}: {self.failed}", file=sys.stderr)

  def save(self, step: int, state: dict, frozen) -> None:
    self.skipped = int(state["skipped_nonfinite"])
    meta = {"step": step, "skipped_nonfinite": self.skipped,
            **({"best_validation": self.best} if self.best else {})}
    checkpoints.save(self.mngr, step, state, meta, frozen)

  def close(self) -> None:
    for mngr in (self.mngr, self.best_mngr):
      if mngr is not None:
        try:
          mngr.wait_until_finished()
        finally:
          mngr.close()
    for f in (self.metrics_file, self.batches_file, self.tensorboard):
      if f:
        f.close()

  def summary(self, final_step: int) -> dict:
    return {"workdir": str(self.workdir), "final_step": self.final_step or final_step,
            "resumed_from_step": self.start_step, "kind_counts": dict(self.kinds),
            "language_counts": dict(self.languages),
            "language_pair_counts": dict(sorted(self.pairs.items())),
            "skipped_nonfinite": self.skipped,
            "best_validation": self.best if self.early_stopping else None,
            "final_metrics": self.last_metrics, "failed": self.failed}
