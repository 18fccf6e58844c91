"""Orbax checkpoints of a training run: params, optimizer state, data position.

A checkpoint at step s holds the state after s updates and a small JSON with
the position of the data stream (the next step is s: batches are a
deterministic function of (config, seed, step), so the step is the whole data
position) and the run's counters. Three items per step:

  params  the encoder parameters (all that inference needs)
  train   optimizer state and the non-finite-loss counters
  meta    JSON: step, batch kinds / languages seen, skipped updates

Saves are asynchronous (Orbax writes in a background thread and finalises the
step directory atomically, so a run killed mid-save resumes from the previous
complete checkpoint); `max_to_keep` bounds disk use.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
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


def _abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings to restore into (arrays land where `tree`'s are)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_latest(mngr: ocp.CheckpointManager, state_like: dict) -> tuple[dict, dict] | None:
  """(state, meta) of the latest checkpoint, restored with `state_like`'s shardings; None if none."""
  step = mngr.latest_step()
  if step is None:
    return None
  train_like = {k: v for k, v in state_like.items() if k != "params"}
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(state_like["params"])),
      train=ocp.args.StandardRestore(_abstract(train_like)),
      meta=ocp.args.JsonRestore()))
  state = {"params": restored["params"], **restored["train"]}
  return state, dict(restored["meta"])


def load_base_model(name: str, dtype=jnp.float32):
  """The model a run starts from: "tiny-random[-SEED]" (tests) or anything `models.load_model` takes."""
  from mlir_train import models
  if name.startswith("tiny-random"):
    suffix = name[len("tiny-random"):].lstrip("-")
    return models.tiny_random_model(seed=int(suffix) if suffix else 0, dtype=dtype)
  return models.load_model(name, dtype=dtype)


def restore_for_inference(workdir: str | pathlib.Path, dtype=jnp.float32, step: int | None = None):
  """A trained run as `models.LoadedModel`: base model's config and tokenizer, trained params.

  Reads `workdir/config.json` for the base model name, then restores only the
  `params` item of the latest (or given) checkpoint onto the first device.
  """
  import dataclasses
  workdir = pathlib.Path(workdir)
  config_path = workdir / CONFIG_FILE
  if not config_path.is_file():
    raise CheckpointError(f"{workdir}: no {CONFIG_FILE}; is this a training workdir?")
  try:
    base_name = json.loads(config_path.read_text())["model"]
  except (json.JSONDecodeError, KeyError) as e:
    raise CheckpointError(f"{config_path}: cannot read the base model name ({e})") from e
  base = load_base_model(base_name, dtype=dtype)
  mngr = manager(workdir, read_only=True, async_save=False)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"{workdir / CHECKPOINT_DIR}: no complete checkpoint")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), base.params)
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract)))
  mngr.close()
  return dataclasses.replace(base, name=str(workdir), params=restored["params"])
