"""InfoNCE over the global batch, with the parallel-group mask.

Row i of the batch is a (query, positive passage) pair. Every other passage in
the batch is a negative for query i, except passages of the same parallel
group (the same question id, in another language): those are translations of
query i's answer, so they are false negatives and are masked out, as in
t5x_retrieval's off-diagonal positive mask.

The similarity matrix is one matmul over the whole (global, sharded) batch;
under jit on a mesh XLA inserts the collectives. Logits are float32.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_TEMPERATURE = 0.05  # E5's logit scale of 20


class LossOutput(NamedTuple):
  loss: jax.Array        # scalar
  accuracy: jax.Array    # scalar: share of queries whose positive scores highest
  logits: jax.Array      # [batch, batch (+ n_hard)] masked, float32


def parallel_mask(query_group: jax.Array, passage_group: jax.Array) -> jax.Array:
  """True where passage j is a parallel copy of query i's positive (not i itself).

  query_group [batch], passage_group [n] -> bool [batch, n]. The diagonal of
  the in-batch block is never masked: it holds the labelled positive.
  """
  same = query_group[:, None] == passage_group[None, :]
  batch, n = same.shape
  diagonal = jnp.arange(batch)[:, None] == jnp.arange(n)[None, :]
  return same & ~diagonal


def _cross_entropy_diagonal(logits: jax.Array) -> jax.Array:
  """Mean over rows of -log softmax(logits)[i, i]; logits [batch, n >= batch]."""
  positives = jnp.diagonal(logits[:, :logits.shape[0]])  # [batch]
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positives)


def info_nce(query: jax.Array, passage: jax.Array, group_id: jax.Array, *,
             temperature: float = DEFAULT_TEMPERATURE, symmetric: bool = False,
             hard_negatives: jax.Array | None = None,
             hard_negative_group_id: jax.Array | None = None,
             hard_negative_valid: jax.Array | None = None) -> LossOutput:
  """InfoNCE with in-batch negatives; label of query i is passage i.

  query, passage: [batch, dim] (unit vectors); group_id: int [batch].
  hard_negatives: optional [n_hard, dim] extra passages appended as columns
  (negatives for every query; any whose `hard_negative_group_id` equals the
  query's group is masked; -1 = no group). hard_negative_valid: optional
  bool [n_hard]; False marks a missing negative (padding), -inf for every
  query. symmetric: also average in the passage->query loss over the
  in-batch block.

  Per-pair hard negatives ([batch, n, dim], pair i's at row i) are passed
  flattened, row-major (`pair_negatives`): columns are
  [passage 0..batch-1, negatives of pair 0, of pair 1, ...], and query i's
  label stays column i, whatever devices the rows live on.
  """
  query = query.astype(jnp.float32)
  passage = passage.astype(jnp.float32)
  columns, column_group = passage, group_id
  if hard_negatives is not None:
    if hard_negative_group_id is None:
      # No group information: a hard negative never masks anything.
      hard_negative_group_id = jnp.full((hard_negatives.shape[0],), -1, group_id.dtype)
    columns = jnp.concatenate([passage, hard_negatives.astype(jnp.float32)], axis=0)
    column_group = jnp.concatenate([group_id, hard_negative_group_id], axis=0)

  logits = query @ columns.T / temperature  # [batch, batch + n_hard]
  mask = parallel_mask(group_id, column_group)
  if hard_negatives is not None and hard_negative_valid is not None:
    valid = jnp.concatenate([jnp.ones((passage.shape[0],), bool),
                             hard_negative_valid.astype(bool)])
    mask = mask | ~valid[None, :]
  logits = jnp.where(mask, -jnp.inf, logits)
  loss = _cross_entropy_diagonal(logits)
  if symmetric:
    batch = query.shape[0]
    passage_to_query = logits[:, :batch].T  # [batch, batch]; mask is symmetric
    loss = 0.5 * (loss + _cross_entropy_diagonal(passage_to_query))
  accuracy = jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(query.shape[0]))
  return LossOutput(loss=loss, accuracy=accuracy.astype(jnp.float32), logits=logits)


def pair_negatives(negatives: jax.Array, group_id: jax.Array | None = None,
                   valid: jax.Array | None = None):
  """Per-pair hard negatives -> `info_nce`'s columns: [batch, n, dim] -> [batch * n, dim]
  (row-major: pair i's negatives at i * n .. i * n + n - 1), group ids and validity
  [batch, n] -> [batch * n]. Returns keyword arguments for `info_nce`."""
  batch, n = negatives.shape[:2]
  out = {"hard_negatives": negatives.reshape((batch * n,) + negatives.shape[2:])}
  if group_id is not None:
    out["hard_negative_group_id"] = group_id.reshape(batch * n)
  if valid is not None:
    out["hard_negative_valid"] = valid.reshape(batch * n)
  return out
