"""AdamW with linear warmup and decay, global-norm clipping, frozen parameters, L2-SP.

Frozen parameters: the `embeddings` subtree (word, position, type tables and
their LayerNorm; `config.freeze_embeddings`) and the lower
`config.freeze_layers` transformer layers (`layer_0` .. `layer_{N-1}`) are held
out of differentiation and of the optimizer entirely, rather than masked with
`optax.set_to_zero`: for multilingual-e5 the word table is 250k x 384, and even
a zero gradient and Adam moments for it would cost three copies of it per step.
Frozen subtrees get no gradient, no optimizer state and never change.

L2-SP (Li et al., ICML 2018; `config.l2sp`, 0 = off): the training objective
gains the term

    (l2sp / 2) * sum over trainable leaves of ||theta - theta_start||^2

(squared Frobenius norm of every trainable array, frozen ones excluded, every
element weighted equally), i.e. its gradient l2sp * (theta - theta_start) is
added to the InfoNCE gradient before clipping and AdamW, so it passes through
Adam's normalisation like the loss gradient ("coupled", as in the paper's
objective; AdamW's decoupled weight decay toward zero still applies as well).

Weight decay (0.01, as in the paper) applies to matrices only, not to biases or
LayerNorm parameters (the usual BERT / sentence-transformers choice).
"""
from __future__ import annotations

from typing import Any

import numbers
import re

import jax
import jax.numpy as jnp
import optax

FROZEN_WHEN_FREEZING = ("embeddings",)
LAYER_NAME = re.compile(r"layer_(\d+)$")


class FreezeError(ValueError):
  """A freezing or L2-SP setting that does not fit the model (e.g. too many layers)."""


def learning_rate_schedule(config) -> optax.Schedule:
  """0 -> learning_rate over warmup_steps, then linearly -> 0 at total_steps."""
  warmup = int(config.warmup_steps)
  decay = max(int(config.total_steps) - warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
       optax.linear_schedule(config.learning_rate, 0.0, decay)],
      boundaries=[warmup])


def make_optimizer(config) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.999, eps=1e-8,
                  weight_decay=config.weight_decay, mask=decay_mask))


def num_layers(params: dict) -> int:
  """Number of transformer layers (`layer_{i}` top-level subtrees) in a param tree."""
  indices = sorted(int(m.group(1)) for m in map(LAYER_NAME.match, params) if m)
  if indices != list(range(len(indices))):
    raise FreezeError(f"layer subtrees are not layer_0 .. layer_{{n-1}}: {indices}")
  return len(indices)


def frozen_names(params: dict, freeze_embeddings: bool, freeze_layers: int = 0) -> tuple[str, ...]:
  """Top-level subtrees held out of training: "embeddings" (if frozen), layer_0 .. layer_{N-1}."""
  n = num_layers(params)
  if isinstance(freeze_layers, bool) or not isinstance(freeze_layers, numbers.Integral) \
      or not 0 <= freeze_layers <= n:
    raise FreezeError(f"config.freeze_layers must be an integer in 0..{n} (the model has "
                      f"{n} transformer layers), got {freeze_layers!r}")
  names = FROZEN_WHEN_FREEZING if freeze_embeddings else ()
  return tuple(names) + tuple(f"layer_{i}" for i in range(int(freeze_layers)))


def split_frozen(params: dict, freeze_embeddings: bool,
                 freeze_layers: int = 0) -> tuple[dict, dict]:
  """params -> (trainable, frozen) top-level subtrees (see `frozen_names`)."""
  names = frozen_names(params, freeze_embeddings, freeze_layers)
  trainable = {k: v for k, v in params.items() if k not in names}
  frozen = {k: v for k, v in params.items() if k in names}
  return trainable, frozen


def check_l2sp(strength) -> float:
  """The L2-SP strength as a float >= 0 (0 = off); anything else raises FreezeError."""
  try:
    value = float(strength)
  except (TypeError, ValueError):
    value = float("nan")
  if not value >= 0 or value == float("inf"):
    raise FreezeError(f"config.l2sp must be a finite number >= 0 (0 = off), got {strength!r}")
  return value


def l2sp_penalty_and_grad(trainable: dict, start: dict, strength: float):
  """((strength / 2) * sum ||theta - theta_start||^2, its gradient strength * (theta - theta_start)).

  Summed in float32 over every element of every leaf of `trainable`; `start`
  has the same tree structure.
  """
  diff = jax.tree.map(lambda p, s: p - s, trainable, start)
  squared = sum(jnp.sum(jnp.square(d.astype(jnp.float32))) for d in jax.tree.leaves(diff))
  penalty = 0.5 * strength * squared
  grad = jax.tree.map(lambda d: (strength * d).astype(d.dtype), diff)
  return penalty, grad


def merge(trainable: dict, frozen: dict) -> dict[str, Any]:
  return {**trainable, **frozen}
