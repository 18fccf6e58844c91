"""AdamW with linear warmup and decay, global-norm clipping, frozen embeddings.

Frozen embeddings: the `embeddings` subtree (word, position, type tables and
their LayerNorm) is held out of differentiation and of the optimizer entirely,
rather than masked with `optax.set_to_zero`: for multilingual-e5 the word table
is 250k x 384, and even a zero gradient and Adam moments for it would cost
three copies of it per step.

Weight decay (0.01, as in the paper) applies to matrices only, not to biases or
LayerNorm parameters (the usual BERT / sentence-transformers choice).
"""
from __future__ import annotations

from typing import Any

import jax
import optax

FROZEN_WHEN_FREEZING = ("embeddings",)


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


def split_frozen(params: dict, freeze_embeddings: bool) -> tuple[dict, dict]:
  """params -> (trainable, frozen) top-level subtrees."""
  frozen_names = FROZEN_WHEN_FREEZING if freeze_embeddings else ()
  trainable = {k: v for k, v in params.items() if k not in frozen_names}
  frozen = {k: v for k, v in params.items() if k in frozen_names}
  return trainable, frozen


def merge(trainable: dict, frozen: dict) -> dict[str, Any]:
  return {**trainable, **frozen}
