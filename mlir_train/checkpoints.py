"""Orbax checkpoints of a training run: params, optimizer state, data position.

A checkpoint at step s holds the state after s updates and a small JSON with
the position of the data stream (the next step is s: batches are a
deterministic function of (config, seed, step), so the step is the whole data
position) and the run's counters. Three items per step:

  params  the encoder parameters (all that inference needs)
  train   optimizer state and the non-finite-loss counters
  meta    JSON: step, skipped updates, the best validation so far (batch kinds and
          languages seen follow from batches.jsonl)

Saves are asynchronous (Orbax writes in a background thread and finalises the
step directory atomically, so a run killed mid-save resumes from the previous
complete checkpoint); `max_to_keep` bounds disk use.
"""
from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from data_pipelines.errors import ProjectError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"  # damaged steps moved aside on resume
BEST_DIR = "best_checkpoint"         # early stopping: lowest validation loss

log = logging.getLogger(__name__)


class CheckpointError(ProjectError, RuntimeError):
  pass


def manager(workdir: str | pathlib.Path, *, max_to_keep: int | None = 3,
            async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  extra = dict(max_to_keep=None, save_interval_steps=0) if read_only else dict(max_to_keep=max_to_keep)
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save, read_only=read_only, create=not read_only, **extra)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("params", "train", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state: dict, meta: dict) -> None:
  """Start an (async) save of `state` ({"params", "opt_state", counters...})."""
  train_part = {k: v for k, v in state.items() if k != "params"}
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state["params"]),
      train=ocp.args.StandardSave(train_part),
      meta=ocp.args.JsonSave(meta)))


def best_manager(workdir: str | pathlib.Path, read_only: bool = False) -> ocp.CheckpointManager:
  """Early stopping: the parameters with the lowest validation loss so far (one step kept)."""
  directory = pathlib.Path(workdir).resolve() / BEST_DIR
  options = ocp.CheckpointManagerOptions(
      read_only=read_only, create=not read_only,
      **(dict(max_to_keep=None, save_interval_steps=0) if read_only else dict(max_to_keep=1)))
  return ocp.CheckpointManager(directory, options=options, item_names=("params", "meta"))


def save_best(mngr: ocp.CheckpointManager, step: int, params, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                          meta=ocp.args.JsonSave(meta)))


def _abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings to restore into (arrays land where `tree`'s are)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> pathlib.Path:
  return pathlib.Path(mngr.directory) / str(step)


def _newest_first(mngr: ocp.CheckpointManager, restore_step, what: str):
  """Call `restore_step(step)` on the newest step that restores; returns (step, result).

  A step that fails (missing item, truncated data or metadata) is reported by
  step and path, and the previous one is tried. None when there is no step;
  `CheckpointError` naming the directory when none restores. `what` says which
  run this is for in messages.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None
  failures = []
  for step in steps:
    try:
      return step, restore_step(step)
    except Exception as e:  # Orbax/TensorStore raise many kinds for a damaged step
      reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      log.warning("%s: checkpoint at step %d (%s) is unusable, trying the previous one: %s",
                  what, step, _step_dir(mngr, step), reason)
      failures.append(f"step {step}: {type(e).__name__}: {reason}")
  raise CheckpointError(f"{mngr.directory}: no usable checkpoint ({'; '.join(failures)})")


def restore_latest(mngr: ocp.CheckpointManager, state_like: dict) -> tuple[dict, dict] | None:
  """(state, meta) of the newest usable checkpoint, with `state_like`'s shardings; None if none.

  Damaged newer steps are moved to `<workdir>/corrupt_checkpoints/` (so that the
  run can save those steps again) and reported; see `_newest_first`.
  """
  train_like = {k: v for k, v in state_like.items() if k != "params"}

  def restore(step):
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(state_like["params"])),
        train=ocp.args.StandardRestore(_abstract(train_like)),
        meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    if int(meta.get("step", -1)) != step:
      raise CheckpointError(f"meta says step {meta.get('step')}")
    return {"params": restored["params"], **restored["train"]}, meta

  found = _newest_first(mngr, restore, "training")
  if found is None:
    return None
  step, result = found
  damaged = [s for s in mngr.all_steps() if s > step]
  if damaged:
    if jax.process_index() == 0:
      aside = pathlib.Path(mngr.directory).parent / CORRUPT_DIR
      aside.mkdir(exist_ok=True)
      for s in damaged:
        target = aside / f"{s}-{int(time.time())}"
        os.replace(_step_dir(mngr, s), target)
        log.warning("moved the unusable checkpoint of step %d to %s", s, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("checkpoints: corrupt steps moved aside")
    mngr.reload()
  return result


def restore_params(workdir: str | pathlib.Path, params_like, step: int | None = None,
                   best: bool = False):
  """A workdir's trained parameters, shaped like `params_like` (arrays or ShapeDtypeStructs).

  The given step, else the newest usable checkpoint (see `_newest_first`); with
  `best`, the early-stopping checkpoint (`BEST_DIR`) when there is one.
  """
  workdir = pathlib.Path(workdir)
  mngr = (best_manager(workdir, read_only=True) if best and (workdir / BEST_DIR).is_dir()
          else manager(workdir, read_only=True, async_save=False))

  def restore(s):
    return mngr.restore(s, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_like))))["params"]

  try:
    if step is not None:
      if step not in mngr.all_steps():
        raise CheckpointError(f"{mngr.directory}: no checkpoint at step {step} "
                              f"(have {sorted(mngr.all_steps())})")
      return restore(step)
    found = _newest_first(mngr, restore, str(workdir))
    if found is None:
      raise CheckpointError(f"{mngr.directory}: no complete checkpoint")
    return found[1]
  finally:
    mngr.close()
