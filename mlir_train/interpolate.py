"""Weight-space interpolation between a run's starting and fine-tuned weights (WiSE-FT).

    theta(lambda) = (1 - lambda) * theta_start + lambda * theta_finetuned

(Wortsman et al., CVPR 2022), computed leaf by leaf in float32 for any lambda
in [0, 1], without retraining. theta_start is the model the run was trained from
(`provenance.json`'s "model", loaded with `models.load_model`; a workdir whose
`config.json` names another, after a resume with --allow_config_change, is refused
unless `start` says which: "provenance" or "config"), and
theta_finetuned its latest checkpoint (`models.restore_for_inference`).
lambda = 0 gives the starting model and lambda = 1 the fine-tuned one exactly
(0 * x = 0 and 1 * x = x in floating point); leaves that training did not
change (frozen embeddings or layers) are kept bit for bit at every lambda.

Used by `python -m eval.run --model WORKDIR --interpolate 0.25,0.5,0.75` and
`python -m mlir_train.export --model WORKDIR --interpolate 0.5 --out DIR`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp

from mlir_train import checkpoints
from mlir_train import models
from mlir_train.hf_io import ModelLoadError


class InterpolationError(ModelLoadError):
  """Not a training workdir, or a lambda outside [0, 1]."""


def parse_lambdas(text: str) -> list[float]:
  """"0.25,0.5,0.75" -> [0.25, 0.5, 0.75]; each in [0, 1], no repeats."""
  values = []
  for part in str(text).split(","):
    part = part.strip()
    if not part:
      continue
    try:
      values.append(check_lambda(float(part)))
    except ValueError:
      raise InterpolationError(f"--interpolate: {part!r} is not a number in [0, 1]") from None
  if not values:
    raise InterpolationError(f"--interpolate: no lambda in {text!r}; e.g. 0.25,0.5,0.75")
  if len(set(values)) != len(values):
    raise InterpolationError(f"--interpolate: repeated lambda in {text!r}")
  return values


def check_lambda(lam: float) -> float:
  lam = float(lam)
  if not (math.isfinite(lam) and 0.0 <= lam <= 1.0):
    raise InterpolationError(f"interpolation lambda must be in [0, 1] (0 = starting model, "
                             f"1 = fine-tuned model), got {lam}")
  return lam


PROVENANCE_FILE = "provenance.json"  # mlir_train.train's: the first start's training config
START_CHOICES = ("provenance", "config")


def _model_in(path: pathlib.Path, *keys: str) -> str:
  try:
    value = json.loads(path.read_text())
    for key in keys:
      value = value[key]
    return value
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise InterpolationError(f"{path}: cannot read the base model name ({e})") from None


def base_model_name(workdir: str | os.PathLike, start: str | None = None) -> str:
  """The model a training workdir's weights were trained from: provenance.json's (the first
  start's) "model", which config.json (the last start's) must agree with; InterpolationError
  if `workdir` is not a training workdir, or if they disagree (a run resumed with
  --allow_config_change --config.model=OTHER) and `start` does not say which to use:
  "provenance" or "config" (workdirs from before provenance.json: config.json's)."""
  path = pathlib.Path(workdir)
  config = path / checkpoints.CONFIG_FILE
  if not (path.is_dir() and (path / checkpoints.CHECKPOINT_DIR).is_dir() and config.is_file()):
    raise InterpolationError(
        f"--interpolate needs a training workdir (a directory with {checkpoints.CHECKPOINT_DIR}/ "
        f"and {checkpoints.CONFIG_FILE}); {str(workdir)!r} is not one")
  if start is not None and start not in START_CHOICES:
    raise InterpolationError(f"interpolation start must be one of {', '.join(START_CHOICES)}, "
                             f"got {start!r}")
  in_config = _model_in(config, "model")
  provenance = path / PROVENANCE_FILE
  if not provenance.is_file():
    return in_config
  trained_from = _model_in(provenance, "training_config", "model")
  if trained_from == in_config or start == "provenance":
    return trained_from
  if start == "config":
    return in_config
  raise InterpolationError(
      f"{workdir}: the start model is ambiguous: the weights were trained from "
      f"{trained_from!r} ({PROVENANCE_FILE}), but {checkpoints.CONFIG_FILE} names {in_config!r} "
      f"(a resume with --allow_config_change); say which to interpolate from: "
      f"--interpolate_start provenance (the usual choice) or config "
      f"(Python: start='provenance' / 'config')")


def endpoints(workdir: str | os.PathLike, dtype=jnp.float32, start: str | None = None):
  """(start, finetuned) `LoadedModel`s of a training workdir (`start`: see `base_model_name`)."""
  name = base_model_name(workdir, start)
  finetuned = models.restore_for_inference(workdir, dtype=dtype)
  start = models.load_model(name, dtype=dtype)
  start_leaves = jax.tree_util.tree_structure(start.params)
  if start_leaves != jax.tree_util.tree_structure(finetuned.params):
    raise InterpolationError(f"{workdir}: checkpoint and base model {name!r} have different "
                             f"parameter trees")
  return start, finetuned


@jax.jit
def _mix(start, finetuned, lam):
  def leaf(a, b):
    mixed = ((1 - lam) * a.astype(jnp.float32) + lam * b.astype(jnp.float32)).astype(a.dtype)
    # Unchanged (frozen) weights, and both endpoints, bit for bit (signed zeros too).
    mixed = jnp.where((a == b) | (lam == 0), a, mixed)
    return jnp.where(lam == 1, b, mixed)
  return jax.tree.map(leaf, start, finetuned)


def mix(start, finetuned, lam: float, name: str | None = None):
  """The `LoadedModel` with theta(lam) = (1 - lam) * start + lam * finetuned."""
  lam = check_lambda(lam)
  params = _mix(start.params, finetuned.params, jnp.float32(lam))
  return dataclasses.replace(finetuned, params=params,
                             name=name or f"{finetuned.name}@lambda={lam:g}")


def interpolate(workdir: str | os.PathLike, lam: float, dtype=jnp.float32,
                start: str | None = None):
  """theta(lam) of a training workdir as a `LoadedModel` named "WORKDIR@lambda=LAM"."""
  check_lambda(lam)
  start, finetuned = endpoints(workdir, dtype=dtype, start=start)
  return mix(start, finetuned, lam, name=f"{workdir}@lambda={float(lam):g}")


def interpolate_grid(workdir: str | os.PathLike, lams: Sequence[float],
                     dtype=jnp.float32, start: str | None = None
                     ) -> Iterator[tuple[float, object]]:
  """(lam, model) for each lam, loading the two endpoints once."""
  lams = [check_lambda(l) for l in lams]
  start, finetuned = endpoints(workdir, dtype=dtype, start=start)
  for lam in lams:
    yield lam, mix(start, finetuned, lam, name=f"{workdir}@lambda={lam:g}")


def describe(workdir: str | os.PathLike, lam: float, start: str | None = None) -> dict:
  """What a result JSON records about an interpolated model."""
  return {"lambda": float(lam), "start": base_model_name(workdir, start),
          "finetuned": str(workdir),
          "formula": "(1 - lambda) * start + lambda * finetuned"}
