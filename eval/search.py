"""Exact inner-product search over a corpus that need not fit in memory at once.

`top_k` scores query blocks against the corpus one fixed-size chunk at a time and
keeps a running top-k, so memory is bounded by `query_block x (k + chunk_size)`
whatever the corpus size. The corpus is split over all devices (a 1-D mesh);
each device streams its own shard and the per-device top-k lists are merged.

`relevant_ranks` gives the 1-based rank of chosen corpus items in the *full*
ranking (what full MAP and the language bias need) without sorting: the rank of
item j is 1 + #{i: s_i > s_j} + #{i < j: s_i == s_j}.

Both use the same tie rule: equal scores are ordered by lower corpus index
(`jax.lax.top_k` is documented to put the lower index first, and the merge
keeps earlier, i.e. lower-index, candidates in front). Scores are float32 with
`Precision.HIGHEST` (no TF32 on GPUs); -0.0 is folded into 0.0 so it ties.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from data_pipelines.errors import ProjectError

AXIS = "corpus"
_NO_INDEX = -1  # index reported for empty slots of a running top-k


class SearchError(ProjectError, ValueError):
  """Bad search input: shapes, k, or non-finite embeddings."""


def _as_matrix(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise SearchError(f"{name} must be a 2-D array [n, dim], got shape {x.shape}")
  if not np.isfinite(x).all():
    bad = int(np.argwhere(~np.isfinite(x))[0, 0])
    raise SearchError(f"{name} row {bad} holds a NaN or infinity")
  return x


def _mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def _layout(n: int, n_devices: int, chunk_size: int) -> tuple[int, int]:
  """(chunk, rows per device): rows per device is a multiple of chunk.

  The chunks are made as even as possible (at most `chunk_size` rows, rounded
  up to a multiple of 8 for vector units) so that padding, which is scored
  like real rows, stays small: 100k rows in chunks of <= 4096 are 25 chunks
  of 4000 rows, not 25 of 4096.
  """
  per_device = max(1, math.ceil(n / n_devices))
  n_chunks = math.ceil(per_device / min(chunk_size, per_device))
  chunk = min(chunk_size, 8 * math.ceil(math.ceil(per_device / n_chunks) / 8))
  return chunk, n_chunks * chunk


def _chunk_scores(q, block, start, n_valid):
  """Scores of one corpus chunk, padded rows masked to -inf.  [Qb, chunk]"""
  s = jnp.einsum("qd,cd->qc", q, block, precision=jax.lax.Precision.HIGHEST)
  index = start + jnp.arange(block.shape[0], dtype=jnp.int32)  # [chunk]
  s = jnp.where(index[None, :] < n_valid, s, -jnp.inf)
  return jnp.where(s == 0, 0.0, s), index  # fold -0.0 into 0.0


def _chunks(corpus_shard, chunk):
  """[n_local, D] -> ([n_chunks, chunk, D], global start of each chunk [n_chunks])."""
  n_local, dim = corpus_shard.shape
  shard = jax.lax.axis_index(AXIS)
  starts = shard * n_local + chunk * jnp.arange(n_local // chunk, dtype=jnp.int32)
  return corpus_shard.reshape(n_local // chunk, chunk, dim), starts


@functools.lru_cache(maxsize=32)
def _top_k_fn(mesh: Mesh, k: int, chunk: int):
  """Compiled block search: (queries [Qb, D], corpus [N_pad, D], n_valid) -> top k."""

  def local(q, corpus_shard, n_valid):
    blocks, starts = _chunks(corpus_shard, chunk)
    init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32),
            jnp.full((q.shape[0], k), _NO_INDEX, jnp.int32))
    init = jax.lax.pcast(init, (AXIS,), to="varying")  # per-shard carry

    def step(best, xs):
      best_scores, best_index = best  # [Qb, k] each, sorted by (-score, index)
      block, start = xs
      s, index = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      # Running candidates come first and have lower indices, so lax.top_k's
      # lower-position-first tie rule keeps ties in corpus-index order.
      scores = jnp.concatenate([best_scores, s], axis=1)  # [Qb, k + chunk]
      cand = jnp.concatenate(
          [best_index, jnp.broadcast_to(index, s.shape)], axis=1)
      top, pos = jax.lax.top_k(scores, k)
      return (top, jnp.take_along_axis(cand, pos, axis=1)), None

    (scores, index), _ = jax.lax.scan(step, init, (blocks, starts))
    return scores, index  # [Qb, k] local to this shard

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()),
                          out_specs=(P(None, AXIS), P(None, AXIS)))

  @jax.jit
  def search(q, corpus, n_valid):
    scores, index = sharded(q, corpus, n_valid)  # [Qb, n_devices * k], shard order
    top, pos = jax.lax.top_k(scores, k)
    return top, jnp.take_along_axis(index, pos, axis=1)

  return search


@functools.lru_cache(maxsize=32)
def _ranks_fn(mesh: Mesh, chunk: int):
  """Compiled: (queries [Qb, D], corpus, targets [Qb, T], n_valid) -> ranks [Qb, T]."""

  def local(q, corpus_shard, targets, n_valid):
    blocks, starts = _chunks(corpus_shard, chunk)

    # Pass 1: each target's score, taken from the very same chunk computation
    # that pass 2 compares against (a separately computed dot product could
    # differ in the last bit and count the item as beating itself).
    def find(target_scores, xs):
      block, start = xs
      s, _ = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      offset = targets - start  # [Qb, T]
      inside = (offset >= 0) & (offset < chunk)
      found = jnp.take_along_axis(s, jnp.clip(offset, 0, chunk - 1), axis=1)
      return jnp.where(inside, found, target_scores), None

    init = jax.lax.pcast(jnp.full(targets.shape, -jnp.inf, jnp.float32), (AXIS,), to="varying")
    target_scores, _ = jax.lax.scan(find, init, (blocks, starts))
    target_scores = jax.lax.pmax(target_scores, AXIS)  # [Qb, T]

    # Pass 2: count candidates ranked above each target.
    def count(above, xs):
      block, start = xs
      s, index = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      t_s = target_scores[:, :, None]  # [Qb, T, 1]
      s = s[:, None, :]  # [Qb, 1, chunk]
      beats = (s > t_s) | ((s == t_s) & (index[None, None, :] < targets[:, :, None]))
      return above + beats.sum(axis=-1, dtype=jnp.int32), None

    init = jax.lax.pcast(jnp.zeros(targets.shape, jnp.int32), (AXIS,), to="varying")
    above, _ = jax.lax.scan(count, init, (blocks, starts))
    return jax.lax.psum(above, AXIS) + 1

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()),
                          out_specs=P())
  return jax.jit(sharded)


def _put_corpus(corpus: np.ndarray, mesh: Mesh, chunk_size: int):
  n_devices = mesh.size
  chunk, per_device = _layout(corpus.shape[0], n_devices, chunk_size)
  padded = np.zeros((n_devices * per_device, corpus.shape[1]), np.float32)
  padded[:corpus.shape[0]] = corpus
  return jax.device_put(padded, NamedSharding(mesh, P(AXIS))), chunk


def _query_blocks(queries: np.ndarray, query_block: int):
  """Yields (start, stop, padded block [query_block, D]) with one fixed shape."""
  block = min(query_block, queries.shape[0])
  for start in range(0, queries.shape[0], block):
    stop = min(start + block, queries.shape[0])
    padded = np.zeros((block, queries.shape[1]), np.float32)
    padded[:stop - start] = queries[start:stop]
    yield start, stop, padded


def _check(queries, corpus):
  queries = _as_matrix(queries, "queries")
  corpus = _as_matrix(corpus, "corpus")
  if queries.shape[1] != corpus.shape[1]:
    raise SearchError(f"queries have dim {queries.shape[1]}, corpus has dim {corpus.shape[1]}")
  if corpus.shape[0] == 0:
    raise SearchError("corpus is empty")
  return queries, corpus


def top_k(queries, corpus, k: int, chunk_size: int = 4096, query_block: int = 512,
          devices=None) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by inner product.

  Args:
    queries: [Q, D] float array.
    corpus: [N, D] float array.
    k: results per query, 1 <= k <= N.
    chunk_size: corpus rows scored at once per device (memory bound).
    query_block: queries scored at once (one compiled shape).
    devices: devices to shard the corpus over (default: all).

  Returns:
    (scores float32 [Q, k], indices int64 [Q, k]), best first, ties by lower index.
  """
  queries, corpus = _check(queries, corpus)
  if not 1 <= k <= corpus.shape[0]:
    raise SearchError(f"k={k} must be between 1 and the corpus size {corpus.shape[0]}")
  mesh = _mesh(devices)
  corpus_dev, chunk = _put_corpus(corpus, mesh, chunk_size)
  search = _top_k_fn(mesh, k, chunk)
  n_valid = np.int32(corpus.shape[0])
  scores = np.empty((queries.shape[0], k), np.float32)
  indices = np.empty((queries.shape[0], k), np.int64)
  for start, stop, block in _query_blocks(queries, query_block):
    s, i = search(block, corpus_dev, n_valid)
    scores[start:stop] = np.asarray(s)[:stop - start]
    indices[start:stop] = np.asarray(i)[:stop - start]
  return scores, indices


def relevant_ranks(queries, corpus, targets, chunk_size: int = 4096, query_block: int = 512,
                   devices=None) -> np.ndarray:
  """1-based ranks of chosen corpus items in each query's full ranking.

  Args:
    queries: [Q, D]; corpus: [N, D].
    targets: int [Q, T] corpus indices per query; -1 marks padding.

  Returns:
    int64 [Q, T]: the rank (ties by lower index, as in `top_k`); 0 where padding.
  """
  queries, corpus = _check(queries, corpus)
  targets = np.asarray(targets, dtype=np.int64)
  if targets.ndim != 2 or targets.shape[0] != queries.shape[0]:
    raise SearchError(f"targets must be [Q={queries.shape[0]}, T], got shape {targets.shape}")
  if targets.size and (targets.max() >= corpus.shape[0] or targets.min() < -1):
    raise SearchError(f"targets must be corpus indices in [0, {corpus.shape[0]}) or -1")
  ranks = np.zeros(targets.shape, np.int64)
  if targets.shape[1] == 0:
    return ranks
  mesh = _mesh(devices)
  corpus_dev, chunk = _put_corpus(corpus, mesh, chunk_size)
  rank_fn = _ranks_fn(mesh, chunk)
  n_valid = np.int32(corpus.shape[0])
  for start, stop, block in _query_blocks(queries, query_block):
    t = np.full((block.shape[0], targets.shape[1]), -1, np.int32)
    t[:stop - start] = targets[start:stop]
    ranks[start:stop] = np.asarray(rank_fn(block, corpus_dev, t, n_valid))[:stop - start]
  return np.where(targets >= 0, ranks, 0)
