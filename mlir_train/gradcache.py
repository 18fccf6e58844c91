"""GradCache: the contrastive loss of a large batch with the memory of a chunk.

Gradient accumulation alone does not add negatives: every query must see every
passage of the batch. GradCache (Gao et al. 2021; tevatron's JAX
`cachex.grad_cached`) gets the exact full-batch loss and gradient in three
passes:

  1. embed the batch chunk by chunk without keeping activations;
  2. compute the loss and its gradient with respect to the embeddings
     (cheap: [batch, dim]);
  3. re-run each chunk's forward pass and pull the cached embedding gradient
     back to the parameters with `jax.vjp`, summing over chunks.

Chunks are a `lax.scan` over static slices, so one chunk's activations are
live at a time. Chunk c takes rows c, c + n_chunks, c + 2 n_chunks, ... so
that with the batch split across devices every device works on every chunk.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from data_pipelines.errors import ProjectError

EmbedFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, ids, mask) -> [n, dim]


class GradCacheError(ProjectError, ValueError):
  pass


def _to_chunks(x: jax.Array, chunk_size: int) -> jax.Array:
  """[batch, ...] -> [n_chunks, chunk_size, ...], chunk c = rows c::n_chunks."""
  batch = x.shape[0]
  if batch % chunk_size:
    raise GradCacheError(f"batch {batch} is not divisible by gradcache chunk size {chunk_size}")
  n_chunks = batch // chunk_size
  return jnp.swapaxes(x.reshape((chunk_size, n_chunks) + x.shape[1:]), 0, 1)


def _from_chunks(x: jax.Array) -> jax.Array:
  """Inverse of `_to_chunks`: [n_chunks, chunk_size, ...] -> [batch, ...]."""
  n_chunks, chunk_size = x.shape[:2]
  return jnp.swapaxes(x, 0, 1).reshape((n_chunks * chunk_size,) + x.shape[2:])


def embed_in_chunks(embed: EmbedFn, params, ids: jax.Array, mask: jax.Array,
                    chunk_size: int) -> jax.Array:
  """Pass 1: embeddings [batch, dim] of the whole batch, no gradient tape."""
  params = jax.lax.stop_gradient(params)

  def one_chunk(_, chunk):
    return None, embed(params, *chunk)

  _, out = jax.lax.scan(one_chunk, None, (_to_chunks(ids, chunk_size),
                                          _to_chunks(mask, chunk_size)))
  return _from_chunks(out)


def param_grads_in_chunks(embed: EmbedFn, params, ids: jax.Array, mask: jax.Array,
                          embedding_grads: jax.Array, chunk_size: int):
  """Pass 3: sum over chunks of d(embedding_grads . embed(params, chunk))/d params."""
  def one_chunk(total, chunk):
    chunk_ids, chunk_mask, chunk_cotangent = chunk
    _, pullback = jax.vjp(lambda p: embed(p, chunk_ids, chunk_mask), params)
    (grads,) = pullback(chunk_cotangent)
    return jax.tree.map(jnp.add, total, grads), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  total, _ = jax.lax.scan(one_chunk, zeros, (_to_chunks(ids, chunk_size),
                                             _to_chunks(mask, chunk_size),
                                             _to_chunks(embedding_grads, chunk_size)))
  return total


def value_and_grad(embed: EmbedFn, loss_from_embeddings: Callable, chunk_size: int):
  """Like `jax.value_and_grad(has_aux=True)` of the full-batch loss, chunked.

  `loss_from_embeddings(query_emb, passage_emb) -> (loss, aux)`. Returns
  f(params, query_ids, query_mask, passage_ids, passage_mask) -> ((loss, aux), grads).

  More texts (hard negatives, flattened to [batch * n, length]) come as extra
  (ids, mask) arguments after passage_mask; their embeddings are passed to
  `loss_from_embeddings` after the passages, and they are embedded and
  back-propagated in chunks of `chunk_size` rows too.
  """
  def fn(params, query_ids, query_mask, passage_ids, passage_mask, *extra):
    if len(extra) % 2:
      raise GradCacheError("extra inputs come as (ids, mask) pairs")
    inputs = [(query_ids, query_mask), (passage_ids, passage_mask)] + [
        (extra[i], extra[i + 1]) for i in range(0, len(extra), 2)]
    embeddings = [embed_in_chunks(embed, params, ids, mask, chunk_size)  # [rows, dim]
                  for ids, mask in inputs]
    (loss, aux), d_embeddings = jax.value_and_grad(
        loss_from_embeddings, argnums=tuple(range(len(inputs))), has_aux=True)(*embeddings)
    grads = [param_grads_in_chunks(embed, params, ids, mask, d, chunk_size)
             for (ids, mask), d in zip(inputs, d_embeddings)]
    total = grads[0]
    for g in grads[1:]:
      total = jax.tree.map(jnp.add, total, g)
    return (loss, aux), total

  return fn
