"""Orbax checkpoints of a training run: params, optimizer state, data position.

A checkpoint at step s holds the state after s updates and a small JSON with
the position of the data stream (the next step is s: batches are a
deterministic function of (config, seed, step), so the step is the whole data
position) and the run's counters. Items per step:

  params  the encoder parameters that training changes
  train   optimizer state and the non-finite-loss counters
  meta    JSON: step, skipped updates, the best validation so far (batch kinds and
          languages seen follow from batches.jsonl)
  frozen  JSON, only when the run holds parameters out of training
          (`freeze_embeddings`, `freeze_layers`): their top-level names and the sha256
          of the start model's values (`Frozen`). They are not saved: a restore takes
          them from the start model, after checking the sha256 (e5-small's frozen
          embedding tables are 96M of its 118M parameters: 0.4 GB per checkpoint).

Saves are asynchronous (Orbax writes in a background thread and finalises the
step directory atomically, so a run killed mid-save resumes from the previous
complete checkpoint); `max_to_keep` bounds disk use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from data_pipelines.errors import ProjectError

CONFIG_FILE = "config.json"
FROZEN_ITEM = "frozen"               # names and sha256 of the parameters not saved
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"  # damaged steps moved aside on resume
BEST_DIR = "best_checkpoint"         # early stopping: lowest validation loss

log = logging.getLogger(__name__)


class CheckpointError(ProjectError, RuntimeError):
  pass


class FrozenMismatch(CheckpointError):
  """The start model's frozen parameters are not the ones a checkpoint was trained with:
  not damage (an older step would not help), so no step is skipped or moved aside."""


def manager(workdir: str | pathlib.Path, *, max_to_keep: int | None = 3,
            async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  extra = dict(max_to_keep=None, save_interval_steps=0) if read_only else dict(max_to_keep=max_to_keep)
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save, read_only=read_only, create=not read_only, **extra)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("params", "train", "meta", FROZEN_ITEM))


@dataclasses.dataclass(frozen=True)
class Frozen:
  """Top-level parameter subtrees held out of training, identified by their values."""
  names: tuple[str, ...]
  sha256: str

  @classmethod
  def of(cls, params: dict, names) -> "Frozen":
    """`params`' subtrees `names` (host or fully addressable arrays), hashed with their paths,
    shapes and dtypes (~0.2 s for e5-small's 96M embedding parameters)."""
    digest = hashlib.sha256()
    subtree = {k: params[k] for k in sorted(names)}
    for path, leaf in jax.tree_util.tree_flatten_with_path(subtree)[0]:
      array = np.ascontiguousarray(jax.device_get(leaf))
      digest.update(f"{jax.tree_util.keystr(path)} {array.dtype} {array.shape};".encode())
      digest.update(array.reshape(-1).view(np.uint8))  # any dtype, bfloat16 included
    return cls(tuple(sorted(names)), digest.hexdigest())

  def record(self) -> dict:
    return {"names": list(self.names), "sha256": self.sha256}


def _without(params: dict, names) -> dict:
  return {k: v for k, v in params.items() if k not in names}


def _frozen_args(frozen: Frozen | None) -> dict:
  return {FROZEN_ITEM: ocp.args.JsonSave(frozen.record())} if frozen and frozen.names else {}


def save(mngr: ocp.CheckpointManager, step: int, state: dict, meta: dict,
         frozen: Frozen | None = None) -> None:
  """Start an (async) save of `state` ({"params", "opt_state", counters...}); the
  parameters in `frozen` are left out (see the module docstring)."""
  train_part = {k: v for k, v in state.items() if k != "params"}
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(_without(state["params"], frozen.names if frozen else ())),
      train=ocp.args.StandardSave(train_part),
      meta=ocp.args.JsonSave(meta), **_frozen_args(frozen)))


def best_manager(workdir: str | pathlib.Path, read_only: bool = False) -> ocp.CheckpointManager:
  """Early stopping: the parameters with the lowest validation loss so far (one step kept)."""
  directory = pathlib.Path(workdir).resolve() / BEST_DIR
  options = ocp.CheckpointManagerOptions(
      read_only=read_only, create=not read_only,
      **(dict(max_to_keep=None, save_interval_steps=0) if read_only else dict(max_to_keep=1)))
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("params", "meta", FROZEN_ITEM))


def save_best(mngr: ocp.CheckpointManager, step: int, params, meta: dict,
              frozen: Frozen | None = None) -> None:
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(_without(params, frozen.names if frozen else ())),
      meta=ocp.args.JsonSave(meta), **_frozen_args(frozen)))


def _frozen_names(mngr: ocp.CheckpointManager, step: int, start_params: dict | None,
                  what: str, known: Frozen | None = None) -> tuple[str, ...]:
  """The names a step left out, after checking that the start model's values (`known`'s
  sha256 when it names the same subtrees, else hashed from `start_params`) are the ones
  it was trained from."""
  path = _step_dir(mngr, step) / FROZEN_ITEM
  if not path.is_dir():
    return ()  # everything saved (nothing frozen, or a checkpoint from before this item)
  record = mngr.restore(step, args=ocp.args.Composite(
      **{FROZEN_ITEM: ocp.args.JsonRestore()}))[FROZEN_ITEM]
  names = tuple(record["names"])
  if known is not None and known.names == names:
    found = known.sha256
  else:
    if start_params is None:
      raise FrozenMismatch(f"{what}: step {step} does not hold the frozen parameters "
                            f"{list(names)}; they come from the start model, not given here")
    missing = [n for n in names if n not in start_params]
    if missing:
      raise FrozenMismatch(f"{what}: the start model has no {missing} (frozen in step {step})")
    found = Frozen.of(start_params, names).sha256
  if found != record["sha256"]:
    raise FrozenMismatch(
        f"{what}: the start model's frozen {list(names)} are not the ones this run was "
        f"trained from (sha256 {found[:12]}, checkpoint {record['sha256'][:12]}): the base "
        f"model's files changed since training; restore them, or retrain.")
  return names


@jax.jit
def _tree_equal(a, b):
  """Whether two trees of (possibly sharded) arrays are equal, as one boolean scalar."""
  return jax.tree.reduce(jax.numpy.logical_and, jax.tree.map(jax.numpy.array_equal, a, b), True)


def _abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings to restore into (arrays land where `tree`'s are)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> pathlib.Path:
  return pathlib.Path(mngr.directory) / str(step)


class _OrbaxRecords(logging.Filter):
  """Drops Orbax's log records (with their tracebacks) that mention one of `matching`
  (None: all of them), while a failure they describe is reported in one line by us."""

  def __init__(self, matching: tuple[str, ...] | None = None):
    super().__init__()
    self.matching = matching

  def filter(self, record: logging.LogRecord) -> bool:
    if self.matching is None:
      return "orbax" not in record.pathname
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
    return not any(m in text for m in self.matching)


_LOGGERS = ("absl", "orbax", "asyncio")  # where Orbax's threads and tasks report


@contextlib.contextmanager
def quiet_orbax(matching: tuple[str, ...] | None = None):
  """Orbax logs (through absl) an error with a traceback from each of its threads for one
  failed save or restore; inside this block those records are dropped (Orbax's, or any
  mentioning one of `matching`, then also after the block fails: its background threads
  go on reporting): the caller reports the failure once."""
  records = _OrbaxRecords(matching)
  loggers = [logging.getLogger(name) for name in _LOGGERS]
  for logger in loggers:
    logger.addFilter(records)
  keep = False
  try:
    yield
  except BaseException:
    keep = matching is not None  # Orbax's threads may go on reporting that failure
    raise
  finally:
    if not keep:
      for logger in loggers:
        logger.removeFilter(records)


_LATE_TEXTS: list[str] = []  # what late reports of failures handled already mention
_LATE_HOOKS = False


def _late(text: str) -> bool:
  return "See full TensorStore details" in text or any(t in text for t in _LATE_TEXTS)


def drop_late_reports(text: str | None = None) -> None:
  """After a failed restore or save, Orbax's abandoned reads and writes report again as the
  objects are collected: asyncio logs "exception was never retrieved", coroutines print
  "Exception ignored in", each with a traceback. From now on those (and log records
  mentioning `text`, e.g. the failed step's directory) are dropped: the failure was
  reported once, by the caller. (Not dropped: TensorStore's own threads print
  'RuntimeError: Event loop is closed' tracebacks through PyErr_Print when their writes
  finish after Orbax closed its event loop; no Python hook sees those.)"""
  global _LATE_HOOKS
  if text:
    _LATE_TEXTS.append(text)
  if _LATE_HOOKS:
    return
  _LATE_HOOKS = True

  class _Late(logging.Filter):
    def filter(self, record):
      return not _late(record.getMessage() + (str(record.exc_info[1]) if record.exc_info else ""))
  logging.getLogger("asyncio").addFilter(_Late())
  unraisablehook = sys.unraisablehook

  def quiet_unraisablehook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if not (_late(str(unraisable.exc_value)) or "orbax" in getattr(code, "co_filename", "")):
      unraisablehook(unraisable)
  sys.unraisablehook = quiet_unraisablehook


def _reason(error: BaseException) -> str:
  """The first line of the innermost cause: TensorStore's names the array and the damage
  ('Error reading "x/0.0" ...: Truncated ... stream'); Orbax's wrapper only an index."""
  while (error.__cause__ or error.__context__) is not None and len(str(error)) > 0 \
      and "See full TensorStore details" in str(error):
    error = error.__cause__ or error.__context__
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


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
      with quiet_orbax():  # a damaged step: one warning line below, not Orbax's tracebacks
        return step, restore_step(step)
    except FrozenMismatch:
      raise
    except Exception as e:  # Orbax/TensorStore raise many kinds for a damaged step
      reason = _reason(e)
      drop_late_reports(str(_step_dir(mngr, step)) + "/")
      log.warning("%s: checkpoint at step %d (%s) is unusable, trying the previous one: %s",
                  what, step, _step_dir(mngr, step), reason)
      failures.append(f"step {step}: {type(e).__name__}: {reason}")
  raise CheckpointError(f"{mngr.directory}: no usable checkpoint ({'; '.join(failures)})")


def restore_latest(mngr: ocp.CheckpointManager, state_like: dict,
                   frozen: Frozen | None = None) -> tuple[dict, dict] | None:
  """(state, meta) of the newest usable checkpoint, with `state_like`'s shardings; None if none.

  `state_like` is the run's state at step 0: parameters a checkpoint left out as
  frozen are taken from it once their sha256 matches the checkpoint's (`frozen`: the
  run's, computed when it started). Damaged newer steps are moved to
  `<workdir>/corrupt_checkpoints/` (so that the run can save those steps again) and
  reported; see `_newest_first`.
  """
  train_like = {k: v for k, v in state_like.items() if k != "params"}

  def restore(step):
    names = _frozen_names(mngr, step, state_like["params"],
                          str(pathlib.Path(mngr.directory).parent), known=frozen)
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(_without(state_like["params"], names))),
        train=ocp.args.StandardRestore(_abstract(train_like)),
        meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    if int(meta.get("step", -1)) != step:
      raise CheckpointError(f"meta says step {meta.get('step')}")
    # A step that saved subtrees this run freezes (one from before frozen subtrees were
    # left out) must hold the start model's values there: else the values recorded from now
    # on (the start model's) would not be the ones the layers were trained with.
    saved_frozen = [k for k in (frozen.names if frozen else ()) if k not in names]
    changed = [k for k in saved_frozen if not bool(_tree_equal(restored["params"][k],
                                                               state_like["params"][k]))]
    if changed:
      raise FrozenMismatch(
          f"{pathlib.Path(mngr.directory).parent}: step {step} holds values of the frozen "
          f"{changed} that differ from the start model's: the base model's files changed "
          f"since training; restore them, or retrain.")
    params = {**{k: state_like["params"][k] for k in names}, **restored["params"]}
    return {"params": {k: params[k] for k in state_like["params"]}, **restored["train"]}, meta

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
                   best: bool = False, start_params: dict | None = None):
  """A workdir's trained parameters, shaped like `params_like` (arrays or ShapeDtypeStructs).

  The given step, else the newest usable checkpoint (see `_newest_first`); with
  `best`, the early-stopping checkpoint (`BEST_DIR`) when there is one. Parameters
  the run held out of training come from `start_params` (the start model's host
  arrays, checked against the checkpoint's sha256), placed as `params_like`'s.
  """
  workdir = pathlib.Path(workdir)
  mngr = (best_manager(workdir, read_only=True) if best and (workdir / BEST_DIR).is_dir()
          else manager(workdir, read_only=True, async_save=False))

  def restore(s):
    frozen = _frozen_names(mngr, s, start_params, str(workdir))
    restored = mngr.restore(s, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(_without(params_like, frozen)))))["params"]
    placed = {k: jax.tree.map(lambda x, like: jax.device_put(x, getattr(like, "sharding", None)),
                              start_params[k], params_like[k]) for k in frozen}
    params = {**placed, **restored}
    return {k: params[k] for k in params_like}

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
