"""Exact inner-product search over a corpus that need not fit in memory at once.

The corpus is streamed from host memory: `top_k` and `relevant_ranks` walk it in
fixed-size host chunks (`stream_rows` rows; a numpy array, or an `np.memmap` on
disk whose pages are released after each chunk), put each chunk on the devices
(split over all of them, a 1-D mesh), score every query block against it one
`chunk_size`-row block per device at a time, and merge into a running top-k
kept on the device; a helper thread prepares the next host chunk meanwhile.
Memory is therefore bounded by three host chunks plus, per worker thread (below),
about `query_block x chunk_size x 1.2` scores per device (a chunk's scores, its
group maxima and chosen members, the running list), whatever the corpus size
(a 5M x 384 float32 corpus, 7.7 GB, is searched in a few hundred MB:
perf/search_throughput.py --stream_corpus 5000000). A corpus that is already a
`jax.Array` on the devices (an encoder's output) is walked there in the same chunks,
without a trip through host memory. Every chunk has the
same shape (the last is padded and its padding masked), so each function
compiles once.

`relevant_ranks` gives the 1-based rank of chosen corpus items in the *full*
ranking (what full MAP and the language bias need) without sorting: the rank of
item j is 1 + #{i: s_i > s_j} + #{i < j: s_i == s_j}.

Query blocks are searched concurrently from `workers` host threads (default: one
per CPU core on CPU devices, one elsewhere): XLA's CPU `top_k` runs on a single
core, while separate executions run in parallel, so on a 2-core machine two
blocks selecting at once nearly halve the selection time (perf/PROFILE.md, "Exact search on a CPU").
The blocks are the same whatever the number of workers, and so are the results.
On CPU, a chunk where no query has more than 8, 16 or 32 scores above its running
k-th takes `top_k` calls of that size (or none), which are much cheaper than k =
128 (perf/PROFILE.md, "Exact search on a CPU").

`top_k(..., prefilter="bfloat16")` scores the corpus in bfloat16 first and rescores each
query's best candidates in float32, with a rigorous error bound deciding which queries
need a float32 pass; the results are the same exact top k
(perf/PROFILE.md, "Exact search on a CPU").

Both use the same tie rule: equal scores are ordered by lower corpus index
(`jax.lax.top_k` is documented to put the lower index first and is only given
candidates in corpus order; the bitonic merge compares indices explicitly; the
merge across devices puts the earlier, i.e. lower-index, candidates in front).
Scores are float32 with `Precision.HIGHEST` (no TF32 on GPUs); -0.0 is folded
into 0.0 so it ties.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math
import mmap
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from data_pipelines.errors import ProjectError

AXIS = "corpus"
_NO_INDEX = -1  # index reported for empty slots of a running top-k
DEFAULT_STREAM_ROWS = 65536  # host rows per streamed corpus chunk (96 MiB at 384 float32)


class SearchError(ProjectError, ValueError):
  """Bad search input: shapes, k, or non-finite embeddings."""


def _as_matrix(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise SearchError(f"{name} must be a 2-D array [n, dim], got shape {x.shape}")
  _check_finite(x, name, 0)
  return x


def _check_finite(x: np.ndarray, name: str, offset: int) -> None:
  """Raises naming the first row [n, D] with a NaN or infinity.

  Row sums first (a BLAS product, ~3.5x faster than `np.isfinite` over the whole array
  and with no [n, D] temporary): a NaN or infinity anywhere in a row makes its sum NaN or
  infinite. A finite row can overflow too, so a non-finite sum only triggers the full check.
  """
  with np.errstate(over="ignore", invalid="ignore"):
    if x.size and x.ndim == 2 and np.isfinite(x @ np.ones(x.shape[1], x.dtype)).all():
      return
  if not np.isfinite(x).all():
    bad = int(np.argwhere(~np.isfinite(x))[0, 0])
    raise SearchError(f"{name} row {offset + bad} holds a NaN or infinity")


def _as_corpus(x):
  """The corpus as a 2-D array *without* reading it: memmaps stay on disk, a `jax.Array`
  stays on its devices (float32; checked for NaN and infinity there)."""
  if isinstance(x, jax.Array):
    if x.ndim != 2:
      raise SearchError(f"corpus must be a 2-D array [n, dim], got shape {x.shape}")
    x = x.astype(jnp.float32)
    bad = int(_first_non_finite_row(x)) if x.size else -1
    if bad >= 0:
      raise SearchError(f"corpus row {bad} holds a NaN or infinity")
    return x
  if not isinstance(x, np.ndarray):
    x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise SearchError(f"corpus must be a 2-D array [n, dim], got shape {x.shape}")
  return x


@jax.jit
def _first_non_finite_row(x):
  """Index of the first row of x [n, D] holding a NaN or infinity, else -1 (on x's devices)."""
  bad = ~jnp.isfinite(x).all(axis=1)  # [n]
  return jnp.where(bad.any(), jnp.argmax(bad), -1)


def _mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def _grid(rows: int) -> int:
  """`rows` rounded up to a coarse grid: multiples of 8, in steps of 1/16 to 1/8 of the value.

  Corpora of similar sizes (each language's candidates, say: XQuAD-R's 1,167 to
  1,276 all become 1,280) then share one compiled search; a GPU spends seconds
  compiling each new shape, more than it spends searching such a corpus.
  """
  step = max(8, 1 << max(0, rows.bit_length() - 4))
  return step * math.ceil(rows / step)


def _coarse(mesh: Mesh) -> bool:
  """Off the CPU, searches take few shapes: query blocks of `query_block` rows, corpus
  chunks of `chunk_size` rows (a power of two of them per host chunk), relevant items
  padded to a power of two (at least 8).

  There a compilation costs seconds and padding next to nothing: with `_grid` shapes,
  TyDi's subsampled languages (105 to 4,918 candidates, 113 to 164 questions, up to
  dozens of relevant sentences per question) met ~80 shapes and an H100 spent 200 s of
  a study's first evaluation compiling them. On a CPU
  padding is scored like real rows, so shapes follow the data there.
  """
  return not _on_cpu(mesh)


def _width(t: int) -> int:
  """Relevant items per query padded for an accelerator: the next power of two, >= 8."""
  return max(8, 1 << max(0, t - 1).bit_length())


def _layout(n: int, n_devices: int, chunk_size: int, coarse: bool = False) -> tuple[int, int]:
  """(chunk, rows per device): rows per device is a multiple of chunk.

  The chunks are made as even as possible (at most `chunk_size` rows) and then
  rounded up to `_grid`, so that padding, which is scored like real rows, stays
  small (under 1/8) while few distinct shapes are compiled: 100k rows in chunks
  of <= 4096 are 25 chunks of 4096 (4000 before rounding). With `coarse`
  (accelerators, `_coarse`) every chunk has `chunk_size` rows and their number is
  a power of two (at most twice the rows needed; a streamed host chunk may then
  hold up to twice `stream_rows` when that is not a power-of-two multiple of the chunk).
  """
  per_device = max(1, math.ceil(n / n_devices))
  if coarse:  # full chunks, a power of two of them (`_coarse`)
    # no larger than the rows need (many devices sharing a host chunk), but never below
    # SMALL_SHAPES' chunk: small corpora of every size share one program
    chunk_size = min(chunk_size, max(SMALL_SHAPES[0], 1 << (per_device - 1).bit_length()))
    return chunk_size, (1 << (math.ceil(per_device / chunk_size) - 1).bit_length()) * chunk_size
  n_chunks = math.ceil(per_device / min(chunk_size, per_device))
  chunk = min(chunk_size, _grid(math.ceil(per_device / n_chunks)))
  return chunk, n_chunks * chunk


def _stream_layout(n: int, n_devices: int, chunk_size: int, stream_rows: int,
                   coarse: bool = False) -> tuple[int, int, int]:
  """(chunk, rows per device per host chunk, rows per host chunk) for an n-row corpus."""
  n_host = math.ceil(n / max(1, stream_rows))
  chunk, per_device = _layout(math.ceil(n / n_host), n_devices, chunk_size, coarse)
  return chunk, per_device, n_devices * per_device


def _mmap_of(x: np.ndarray):
  """The `mmap.mmap` under a numpy memmap (or a view of one), else None."""
  while x is not None:
    if isinstance(x, mmap.mmap):
      return x
    x = getattr(x, "base", None)
  return None


def _host_chunks(corpus: np.ndarray, rows: int):
  """Yields (global start, float32 [rows, D] chunk), the last one zero-padded.

  A full chunk of a C-contiguous float32 array in memory is a view (no copy);
  anything else (the last chunk, a memmap, another dtype) is copied into a
  fresh array. After copying from a memmap its pages are dropped from this
  process (`MADV_DONTNEED`; they stay in the page cache), so resident memory
  stays bounded by about one chunk however large the file is.
  """
  n, dim = corpus.shape
  mapped = _mmap_of(corpus) if isinstance(corpus, np.memmap) else None
  for start in range(0, n, rows):
    stop = min(start + rows, n)
    part = corpus[start:stop]
    if (mapped is None and stop - start == rows and part.dtype == np.float32
        and part.flags.c_contiguous):
      chunk = part
    else:
      chunk = np.zeros((rows, dim), np.float32)
      chunk[:stop - start] = part
      if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)
    _check_finite(chunk[:stop - start], "corpus", start)
    yield start, chunk


def _chunk_scores(q, block, start, n_valid):
  """Scores of one corpus chunk, padded rows masked to -inf.  [Qb, chunk] float32

  float32 operands: `Precision.HIGHEST`. bfloat16 operands (the prefilter): products
  accumulated and returned in float32 (on a CPU with AMX the fast path:
  perf/PROFILE.md, "bfloat16 on a CPU").
  """
  if q.dtype == jnp.bfloat16:
    block = jax.lax.bitcast_convert_type(block, jnp.bfloat16)  # its bits: see `_bfloat16_fn`
    s = jax.lax.dot_general(q, block, (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
  else:
    s = jnp.einsum("qd,cd->qc", q, block, precision=jax.lax.Precision.HIGHEST)
  index = start + jnp.arange(block.shape[0], dtype=jnp.int32)  # [chunk]
  s = jnp.where(index[None, :] < n_valid, s, -jnp.inf)
  return jnp.where(s == 0, 0.0, s), index  # fold -0.0 into 0.0


def _chunks(corpus_shard, chunk, offset):
  """[n_local, D] -> ([n_chunks, chunk, D], global start of each chunk [n_chunks])."""
  n_local, dim = corpus_shard.shape
  shard = jax.lax.axis_index(AXIS)
  starts = offset + shard * n_local + chunk * jnp.arange(n_local // chunk, dtype=jnp.int32)
  return corpus_shard.reshape(n_local // chunk, chunk, dim), starts


GROUP = 16  # scores per group in `_select`'s group-maxima prefilter


def _better(s1, i1, s2, i2):
  """Ranking order: higher score first, equal scores by lower corpus index."""
  return (s1 > s2) | ((s1 == s2) & (i1 < i2))


def _bitonic_merge(a_scores, a_index, b_scores, b_index):
  """Top K of two best-first lists [Qb, K] (K a power of two), best first.

  Lane i keeps the better of a[i] and b[K-1-i] (the K best of the union, a
  bitonic sequence), then log2(K) compare-exchange stages sort it: elementwise
  work instead of a `top_k` call, whose fixed per-row cost dominates small merges.
  """
  b_scores, b_index = b_scores[:, ::-1], b_index[:, ::-1]
  keep = _better(a_scores, a_index, b_scores, b_index)
  scores, index = jnp.where(keep, a_scores, b_scores), jnp.where(keep, a_index, b_index)
  qb, kp = scores.shape
  half = kp // 2
  while half >= 1:
    s4 = scores.reshape(qb, kp // (2 * half), 2, half)  # [Qb, pairs, 2, half]
    i4 = index.reshape(qb, kp // (2 * half), 2, half)
    x_s, y_s, x_i, y_i = s4[:, :, 0], s4[:, :, 1], i4[:, :, 0], i4[:, :, 1]
    first = _better(x_s, x_i, y_s, y_i)
    scores = jnp.stack([jnp.where(first, x_s, y_s), jnp.where(first, y_s, x_s)], 2)
    index = jnp.stack([jnp.where(first, x_i, y_i), jnp.where(first, y_i, x_i)], 2)
    scores, index = scores.reshape(qb, kp), index.reshape(qb, kp)
    half //= 2
  return scores, index


def _select(s, index, threshold, kp):
  """The chunk's kp best scores above `threshold`, best first, ties by lower index.

  s [Qb, C] float32, index [C] corpus indices, threshold [Qb] (the running k-th
  score; a score <= it cannot enter the running top kk: the kk held ones are at
  least as high and have lower indices). Returns ([Qb, kp], [Qb, kp]); slots
  without a candidate hold -inf.

  XLA's CPU `top_k` costs about 3.4 ns per score at k = 100 but 1.5 when few
  scores beat its running k-th, so large chunks take the group maxima first: the
  kp groups of GROUP scores with the highest maxima hold the chunk's kp best
  (any group outside them has kp better maxima above its own), so `top_k` runs
  over C / GROUP maxima and kp * GROUP members, both masked by `threshold`.
  """
  qb, c = s.shape
  if c % GROUP or c // GROUP < 2 * kp:  # small chunk: one masked top_k
    s = jnp.where(s > threshold[:, None], s, -jnp.inf)
    if c < kp:
      s = jnp.pad(s, ((0, 0), (0, kp - c)), constant_values=-jnp.inf)
      index = jnp.pad(index, (0, kp - c), constant_values=_NO_INDEX)
    top, pos = jax.lax.top_k(s, kp)
    return top, jnp.take(index, pos)
  groups = s.reshape(qb, c // GROUP, GROUP)  # [Qb, C / GROUP, GROUP]
  maxima = groups.max(axis=2)
  maxima = jnp.where(maxima > threshold[:, None], maxima, -jnp.inf)
  _, group = jax.lax.top_k(maxima, kp)  # [Qb, kp]
  group = jnp.sort(group, axis=1)  # corpus order, so top_k's lower-position rule is index order
  members = jnp.take_along_axis(groups, group[:, :, None], axis=1).reshape(qb, kp * GROUP)
  members = jnp.where(members > threshold[:, None], members, -jnp.inf)
  top, pos = jax.lax.top_k(members, kp)  # [Qb, kp]
  where = jnp.take_along_axis(group, pos // GROUP, axis=1) * GROUP + pos % GROUP
  return top, jnp.take(index, where)


FEW = (8, 16, 32)  # candidate counts of `_select_few`, tried before the full `_select`


def _select_few(s, index, threshold, m, kp):
  """`_select` for a chunk where no row has more than m scores above `threshold`.

  Then the m groups with the highest maxima hold every such score, and the m
  best of their members are all of them: two `top_k` calls with k = m instead
  of kp (XLA's CPU `top_k` costs grow with k). Padded to kp with -inf.
  """
  qb, c = s.shape
  if c % GROUP or c // GROUP < m:
    top, pos = jax.lax.top_k(jnp.where(s > threshold[:, None], s, -jnp.inf), m)
    where = pos
  else:
    groups = s.reshape(qb, c // GROUP, GROUP)  # [Qb, C / GROUP, GROUP]
    maxima = groups.max(axis=2)
    _, group = jax.lax.top_k(jnp.where(maxima > threshold[:, None], maxima, -jnp.inf), m)
    group = jnp.sort(group, axis=1)  # corpus order: ties by lower index
    members = jnp.take_along_axis(groups, group[:, :, None], axis=1).reshape(qb, m * GROUP)
    top, pos = jax.lax.top_k(jnp.where(members > threshold[:, None], members, -jnp.inf), m)
    where = jnp.take_along_axis(group, pos // GROUP, axis=1) * GROUP + pos % GROUP
  pad = ((0, 0), (0, kp - m))
  return (jnp.pad(top, pad, constant_values=-jnp.inf),
          jnp.pad(jnp.take(index, where), pad, constant_values=_NO_INDEX))


def _update(best, s, index, threshold, tiered: bool):
  """The running best [Qb, kp] x2 merged with a chunk's scores s [Qb, C] above `threshold`.

  tiered (CPU): most chunks after the first few hold few scores above the
  running k-th, so the work is chosen by the largest such count n in the block:
  nothing (n = 0), `_select_few` (n <= m for m in FEW), or the full `_select`.
  Elsewhere always the full `_select` (a GPU reads a conditional's branch
  index back to the host at every step).
  """
  kp, c = best[0].shape[1], s.shape[1]
  if not tiered:
    return _bitonic_merge(*best, *_select(s, index, threshold, kp))
  n = jnp.max(jnp.sum(s > threshold[:, None], axis=1, dtype=jnp.int32))
  few = [m for m in FEW if m < min(kp, c)]

  def merge_with(select):
    return lambda best, s, index, threshold: _bitonic_merge(*best, *select(s, index, threshold))

  branches = [lambda best, *_: best]
  branches += [merge_with(functools.partial(_select_few, m=m, kp=kp)) for m in few]
  branches.append(merge_with(functools.partial(_select, kp=kp)))
  which = jnp.searchsorted(jnp.asarray([0] + few, jnp.int32), n, side="left")  # branch
  return jax.lax.switch(which, branches, best, s, index, threshold)


def _merge(best_scores, best_index, scores, index, k):
  """Top k of the running best followed by new candidates (all of higher index)."""
  top, pos = jax.lax.top_k(jnp.concatenate([best_scores, scores], axis=1), k)
  cand = jnp.concatenate([best_index, jnp.broadcast_to(index, scores.shape)], axis=1)
  return top, jnp.take_along_axis(cand, pos, axis=1)


@functools.lru_cache(maxsize=32)
def _top_k_fn(mesh: Mesh, k: int, chunk: int, tiered: bool):
  """Compiled merge of one host chunk into a query block's running top k.

  (best_scores [Qb, k], best_index [Qb, k], queries [Qb, D], host chunk [R, D]
  sharded over the mesh, its global start, n_valid) -> new (best_scores, best_index).
  """

  def local(q, corpus_shard, offset, n_valid, floor):
    blocks, starts = _chunks(corpus_shard, chunk, offset)
    kk = min(k, corpus_shard.shape[0])  # a shard cannot contribute more than its rows
    kp = 1 << (kk - 1).bit_length()  # running list padded to a power of two (bitonic merge)
    init = (jnp.full((q.shape[0], kp), -jnp.inf, jnp.float32),
            jnp.full((q.shape[0], kp), _NO_INDEX, jnp.int32))
    init = jax.lax.pcast(init, (AXIS,), to="varying")  # per-shard carry

    def step(best, xs):
      block, start = xs
      s, index = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      # the chunk's own best above the running k-th score (this scan's, or the earlier
      # host chunks' `floor` if higher), then a bitonic merge
      threshold = jnp.maximum(best[0][:, kk - 1], floor)
      return _update(best, s, index, threshold, tiered), None

    (scores, index), _ = jax.lax.scan(step, init, (blocks, starts))
    return scores[:, :kk], index[:, :kk]  # [Qb, kk] local to this shard

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(), P(), P()),
                          out_specs=(P(None, AXIS), P(None, AXIS)))

  @jax.jit  # not donating the small running lists: the caller waits on them later
  def search(best_scores, best_index, q, corpus, offset, n_valid):
    # Every row of this host chunk comes after the running top k's rows, so a score not
    # above its k-th cannot enter (a tie ranks by the lower index): the scan starts from
    # that bar instead of from nothing at each host chunk.
    floor = best_scores[:, k - 1]  # [Qb]
    scores, index = sharded(q, corpus, offset, n_valid, floor)  # [Qb, n_devices * kk]
    return _merge(best_scores, best_index, scores, index, k)

  return search


def _count_above(s, index, target_scores, targets):
  """How many of a chunk's scores s [Qb, C] (corpus indices index [C]) rank above each
  target (scores target_scores [Qb, T], indices targets [Qb, T]).  [Qb, T] int32

  One [Qb, C] comparison summed per target: on one H200 5.6x faster than a single
  [Qb, T, C] comparison (2.9 against 16.2 ms per 2,048 x 65,536 step, T = 8), the same on
  a CPU."""
  cols = []
  for t in range(targets.shape[1]):
    t_s, t_i = target_scores[:, t, None], targets[:, t, None]  # [Qb, 1]
    cols.append(((s > t_s) | ((s == t_s) & (index[None, :] < t_i))).sum(axis=1, dtype=jnp.int32))
  return jnp.stack(cols, axis=1)  # [Qb, T]


@functools.lru_cache(maxsize=32)
def _ranks_fns(mesh: Mesh, chunk: int):
  """Two compiled passes over one host chunk, for `relevant_ranks`.

  find: (target_scores [Qb, T], queries [Qb, D], chunk [R, D], offset, targets, n_valid)
    -> target_scores with the scores of the targets inside this chunk filled in.
  count: (above [Qb, T], queries, chunk, offset, targets, target_scores, n_valid)
    -> above + #candidates in this chunk ranked above each target.
  """

  def local_find(q, corpus_shard, offset, targets, n_valid):
    blocks, starts = _chunks(corpus_shard, chunk, offset)

    # Each target's score is taken from the very same chunk computation that
    # `count` compares against (a separately computed dot product could differ
    # in the last bit and count the item as beating itself).
    def find(target_scores, xs):
      block, start = xs
      s, _ = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      where = targets - start  # [Qb, T]
      inside = (where >= 0) & (where < chunk)
      found = jnp.take_along_axis(s, jnp.clip(where, 0, chunk - 1), axis=1)
      return jnp.where(inside, found, target_scores), None

    init = jax.lax.pcast(jnp.full(targets.shape, -jnp.inf, jnp.float32), (AXIS,), to="varying")
    found, _ = jax.lax.scan(find, init, (blocks, starts))
    return jax.lax.pmax(found, AXIS)  # [Qb, T]

  def local_count(q, corpus_shard, offset, targets, target_scores, n_valid):
    blocks, starts = _chunks(corpus_shard, chunk, offset)

    def count(above, xs):
      block, start = xs
      s, index = _chunk_scores(q, block, start, n_valid)  # [Qb, chunk]
      return above + _count_above(s, index, target_scores, targets), None

    init = jax.lax.pcast(jnp.zeros(targets.shape, jnp.int32), (AXIS,), to="varying")
    above, _ = jax.lax.scan(count, init, (blocks, starts))
    return jax.lax.psum(above, AXIS)

  find_sharded = jax.shard_map(local_find, mesh=mesh, in_specs=(P(), P(AXIS), P(), P(), P()),
                               out_specs=P())
  count_sharded = jax.shard_map(local_count, mesh=mesh,
                                in_specs=(P(), P(AXIS), P(), P(), P(), P()), out_specs=P())

  @jax.jit  # (no donation: the caller waits on these one host chunk later)
  def find(target_scores, q, corpus, offset, targets, n_valid):
    inside = (targets >= offset) & (targets < offset + corpus.shape[0])
    return jnp.where(inside, find_sharded(q, corpus, offset, targets, n_valid), target_scores)

  @jax.jit
  def count(above, q, corpus, offset, targets, target_scores, n_valid):
    return above + count_sharded(q, corpus, offset, targets, target_scores, n_valid)

  return find, count


@functools.lru_cache(maxsize=8)
def _take_rows(rows: int):
  """Compiled: (corpus [N, D], start) -> its rows start .. start + rows - 1, zero-padded past N."""
  return jax.jit(lambda corpus, start: jnp.take(
      corpus, start + jnp.arange(rows, dtype=jnp.int32), axis=0, mode="fill", fill_value=0))


# A host chunk goes to a single accelerator as this many row pieces in flight at once,
# joined there: one put of a 96 MiB chunk from pageable memory ran at 10 GB/s on an H200,
# eight puts of 12 MiB at 23 GB/s (perf/PROFILE.md, "Exact search on a GPU").
TRANSFER_PIECES = 8


def _transfer_pieces(mesh: Mesh) -> int:
  """Row pieces per host chunk transfer: TRANSFER_PIECES to one accelerator, else 1 (a CPU
  device reads host memory; several devices already receive their shards side by side)."""
  if mesh.size > 1 or mesh.devices.flat[0].platform == "cpu":
    return 1
  return max(1, int(TRANSFER_PIECES))


@jax.jit
def _join_rows(*parts):
  return jnp.concatenate(parts)  # [sum of rows, D]


def _device_chunks(corpus, mesh: Mesh, rows: int):
  """Corpus chunks of `rows` rows put on the mesh: yields (np.int32 start, device array).

  A host corpus: the next chunk is read, checked and put on the devices by a helper
  thread while the caller searches the current one, so at most two host chunks are held
  at a time. On one H200 the host side (copy, check, transfer) took longer than the
  search itself (perf/PROFILE.md, "Exact search on a GPU"); to a single accelerator a
  chunk travels as `_transfer_pieces` row pieces at once. A corpus already on devices (`jax.Array`):
  each chunk is copied out of it there (and moved to the mesh if it lives elsewhere).
  """
  sharding = NamedSharding(mesh, P(AXIS))
  if isinstance(corpus, jax.Array):
    take = _take_rows(rows)
    for start in range(0, corpus.shape[0], rows):
      yield np.int32(start), jax.device_put(take(corpus, np.int32(start)), sharding)
    return
  chunks = _host_chunks(corpus, rows)
  pieces = _transfer_pieces(mesh)

  def next_chunk():
    for start, chunk in chunks:
      if pieces == 1:
        return np.int32(start), jax.device_put(chunk, sharding)
      parts = [jax.device_put(p, sharding) for p in np.array_split(chunk, pieces)]
      return np.int32(start), _join_rows(*parts)  # [rows, D], as one put gives
    return None

  with concurrent.futures.ThreadPoolExecutor(1, "search-prefetch") as prefetch:
    pending = prefetch.submit(next_chunk)
    while (item := pending.result()) is not None:
      pending = prefetch.submit(next_chunk)
      yield item
      del item


def _query_blocks(queries: np.ndarray, query_block: int, coarse: bool = False):
  """Yields (start, stop, padded block [B, D]) with one fixed shape B <= query_block.

  The queries are split evenly and B is rounded up to `_grid` (1,190 queries in
  blocks of at most 512: three of 416 rows, not two of 512 and one of 166 padded
  to 512); with `coarse` (accelerators) B is `query_block`. The blocks do not
  depend on the number of workers.
  """
  q = queries.shape[0]
  block = (query_block if coarse
           else min(query_block, _grid(math.ceil(q / math.ceil(q / query_block)))))
  for start in range(0, queries.shape[0], block):
    stop = min(start + block, queries.shape[0])
    padded = np.zeros((block, queries.shape[1]), np.float32)
    padded[:stop - start] = queries[start:stop]
    yield start, stop, padded


def _workers(mesh: Mesh, workers: int | None) -> int:
  """Host threads for the query blocks: checked, or the default for the mesh's platform."""
  if workers is None:
    return _default_workers(mesh)
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
    raise SearchError(f"workers must be a positive integer or None, got {workers!r}")
  if workers > 1 and mesh.size > 1 and mesh.devices.flat[0].platform != "cpu":
    # concurrent multi-device programs (collectives) may be picked up in different orders
    raise SearchError(f"workers={workers} needs CPU devices or a single accelerator; "
                      f"the mesh has {mesh.size} {mesh.devices.flat[0].platform} devices")
  return workers


def _on_cpu(mesh: Mesh) -> bool:
  return mesh.devices.flat[0].platform == "cpu"


# (chunk_size, query_block) when not given: on CPU, [512, 384] x [384, 2048] score blocks stay
# in cache; accelerators want fewer, larger steps (on one
# H200, 65,536 x 2,048 searched a 1M corpus 2.3x faster than 4,096 x 512).
DEFAULT_SHAPES = {"cpu": (2048, 512), "other": (65536, 2048)}
# Off the CPU, corpora of at most SMALL_CORPUS rows per device (every evaluation set of a
# study) are searched in at most SMALL_SHAPES: one set of compiled programs for all of them
# (a compilation costs about 8 s on an H200, more than such a search), see `_sized`.
SMALL_CORPUS = 1 << 18
SMALL_SHAPES = (4096, 512)


def resolve_shapes(chunk_size: int | None = None, query_block: int | None = None,
                   devices=None) -> tuple[int, int]:
  """(chunk_size, query_block) that `top_k` and `relevant_ranks` use on these devices."""
  return _shapes(_mesh(devices), chunk_size, query_block)


def _shapes(mesh: Mesh, chunk_size: int | None, query_block: int | None) -> tuple[int, int]:
  default = DEFAULT_SHAPES["cpu" if _on_cpu(mesh) else "other"]
  chunk_size = default[0] if chunk_size is None else chunk_size
  query_block = default[1] if query_block is None else query_block
  for name, value in (("chunk_size", chunk_size), ("query_block", query_block)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise SearchError(f"{name} must be a positive integer or None, got {value!r}")
  return chunk_size, query_block


def shape_rule(chunk_size: int | None = None, query_block: int | None = None,
               devices=None) -> str:
  """In words, the (chunk_size, query_block) a search on these devices uses (for result files)."""
  mesh = _mesh(devices)
  chunk_size, query_block = _shapes(mesh, chunk_size, query_block)
  rule = f"at most {chunk_size} corpus rows x {query_block} queries"
  small = _sized(mesh, 1, chunk_size, query_block)
  if small != (chunk_size, query_block):
    rule += (f"; corpora of at most {SMALL_CORPUS:,} rows per device: at most {small[0]} x "
             f"{small[1]}")
  return rule


def _sized(mesh: Mesh, n: int, chunk_size: int, query_block: int) -> tuple[int, int]:
  """(chunk_size, query_block) for an n-row corpus: off the CPU (`_coarse`), at most
  SMALL_SHAPES unless the corpus has over SMALL_CORPUS rows per device."""
  if _coarse(mesh) and math.ceil(n / mesh.size) <= SMALL_CORPUS:
    return min(chunk_size, SMALL_SHAPES[0]), min(query_block, SMALL_SHAPES[1])
  return chunk_size, query_block


def _default_workers(mesh: Mesh) -> int:
  """One thread per CPU core for CPU devices (XLA's CPU top_k is single-threaded), else 1."""
  if not _on_cpu(mesh):
    return 1
  return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else (os.cpu_count() or 1))


def _pool(workers: int, n_blocks: int) -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max(1, min(workers, n_blocks)), "search")


def _each(pool, fn, *items, wait: bool = True) -> list:
  """fn over zipped items, in order. `wait`: on the pool's threads, each result waited for
  (how a CPU runs query blocks side by side). Else dispatched from this thread and not
  waited for, so an accelerator never idles while the host dispatches the next call
  (perf/PROFILE.md, "Exact search on a GPU"); the caller then waits one host chunk behind."""
  if not wait:
    return [fn(*x) for x in zip(*items)]
  return list(pool.map(lambda x: jax.block_until_ready(fn(*x)), zip(*items)))


def _check(queries, corpus):
  queries = _as_matrix(queries, "queries")
  corpus = _as_corpus(corpus)
  if queries.shape[1] != corpus.shape[1]:
    raise SearchError(f"queries have dim {queries.shape[1]}, corpus has dim {corpus.shape[1]}")
  if corpus.shape[0] == 0:
    raise SearchError("corpus is empty")
  if corpus.shape[0] >= 2 ** 31 - 1:
    raise SearchError(f"corpus has {corpus.shape[0]} rows; indices are int32 (< 2**31 - 1)")
  return queries, corpus


PREFILTERS = (None, "bfloat16")


def _prefilter_rows(k: int) -> int:
  """Candidates the bfloat16 prefilter keeps per query for a top k: a power of two >= 2k, >= 32."""
  return max(32, 1 << (2 * k - 1).bit_length())


@functools.lru_cache(maxsize=8)
def _bfloat16_fn(mesh: Mesh, chunk: int):
  """Compiled: a host chunk [R, D] float32 on the mesh -> (the chunk in bfloat16 as its uint16
  bits, [3] float32: the largest row norm of x, of bfloat16(x) and of x - bfloat16(x), computed
  in float32). Each device converts its rows `chunk` at a time (R / devices a multiple of it),
  so the temporaries are a chunk's, not the host chunk's (144 MiB for 65,536 x 384 at once).

  The bits, because XLA's CPU runs a bfloat16 dynamic slice (the scan's chunk) in float32:
  it converted the whole host chunk to float32 before the loop and each chunk back inside
  it, halving the bfloat16 dot's speed (4.3 against 2.1 ms per [512, 2,048] chunk).
  """

  def local(x):  # [n_local, D]
    def convert(block):  # [chunk, D]
      x16 = block.astype(jnp.bfloat16)
      wide = x16.astype(jnp.float32)
      squares = jnp.stack([jnp.sum(block * block, 1), jnp.sum(wide * wide, 1),
                           jnp.sum((block - wide) ** 2, 1)])  # [3, chunk]
      return jax.lax.bitcast_convert_type(x16, jnp.uint16), squares.max(axis=1)

    bits, squares = jax.lax.map(convert, x.reshape(-1, chunk, x.shape[1]))
    return bits.reshape(x.shape), jax.lax.pmax(jnp.sqrt(squares.max(axis=0)), AXIS)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P(AXIS), out_specs=(P(AXIS), P())))


def _error_bound(q: np.ndarray, q16: np.ndarray, corpus_norms: np.ndarray) -> np.ndarray:
  """Per query [Q] float64: a rigorous bound on |bfloat16 score - float32 score| for every row.

  With q = q16 + r_q and x = x16 + r_x (exact), q.x - q16.x16 = r_q.x + q16.r_x, so
  |q.x - q16.x16| <= |r_q| max|x| + |q16| max|r_x| (Cauchy-Schwarz). A float32 evaluation
  of an n-term dot product in any order is within gamma_n = n u / (1 - n u) (u = 2^-24)
  of sum |a_i b_i| <= |a| |b| (Higham, Accuracy and Stability, 3.1), and the bfloat16
  products are exact in float32: add gamma_n for each side's accumulation. Flushed
  subnormals add at most 2^-126 (sqrt(n) (|q| + max|x|) + n) twice. The corpus norms
  were computed in float32: widened by 1e-5 relative (n u is under 2.3e-5 for n <= 384,
  and a norm's relative error is half its square's).
  """
  n = q.shape[1]
  x, x16, r = corpus_norms.astype(np.float64) * (1 + 1e-5 + n * 2.0 ** -24)
  q, q16 = q.astype(np.float64), q16.astype(np.float64)
  nq, nq16, nr = (np.linalg.norm(a, axis=1) for a in (q, q16, q - q16))
  gamma = n * 2.0 ** -24 / (1 - n * 2.0 ** -24)
  subnormal = 2.0 * 2.0 ** -126 * (math.sqrt(n) * (nq + x) + n)
  return (nr * x + nq16 * r + gamma * (nq16 * x16 + nq * x) + subnormal) * (1 + 2.0 ** -20)


def _rescore(queries: np.ndarray, corpus: np.ndarray, candidates: np.ndarray, approx: np.ndarray,
             bound: np.ndarray, k: int, workers: int, rows: int = 32):
  """Exact float32 scores of each query's candidates; their top k, ties by lower index.

  candidates [Q, M] with their bfloat16 scores approx [Q, M], best first; bound [Q]. Only
  candidates with approx >= approx[k-th] - 2 bound are gathered and scored: the k best
  by approx are each worth at least approx[k-th] - bound, so any other is below k rows.
  Gathered `rows` queries at a time ([rows, <= M, D]) on `workers` threads.
  Returns (scores [Q, k] float32, indices [Q, k] int64).
  """
  q_n, m = candidates.shape
  scores = np.empty((q_n, k), np.float32)
  indices = np.empty((q_n, k), np.int64)
  need = np.sum(approx >= (approx[:, k - 1] - 2 * bound)[:, None], axis=1)  # [Q] (>= k)

  def part(start):
    stop = min(start + rows, q_n)
    cand = candidates[start:stop, :max(k, need[start:stop].max())]  # [b, r]
    x = np.asarray(corpus[cand.reshape(-1)], np.float32).reshape(cand.shape + (-1,))  # [b, r, D]
    s = np.matmul(x, queries[start:stop, :, None])[:, :, 0]  # [b, r] float32
    s = np.where(s == 0, np.float32(0), s)  # fold -0.0 into 0.0
    s = np.where(np.arange(cand.shape[1]) < need[start:stop, None], s, -np.inf)
    order = np.lexsort((cand, -s))[:, :k]  # higher score first, then lower index
    scores[start:stop] = np.take_along_axis(s, order, axis=1)
    indices[start:stop] = np.take_along_axis(cand, order, axis=1)

  with concurrent.futures.ThreadPoolExecutor(workers, "rescore") as pool:
    list(pool.map(part, range(0, q_n, rows)))
  mapped = _mmap_of(corpus) if isinstance(corpus, np.memmap) else None
  if mapped is not None and hasattr(mapped, "madvise"):
    mapped.madvise(mmap.MADV_DONTNEED)  # the gathered pages, as in `_host_chunks`
  return scores, indices


def _stream_top_k(blocks, corpus, k, mesh, chunk, rows, workers, convert=None):
  """Running top k of every query block [(start, stop, device block [B, D])] over the corpus.

  `convert` (the prefilter): applied to each device chunk, returns (chunk to score, [3]
  norms); the norms' elementwise maximum over all chunks is returned too (else None).
  Returns ([(scores [B, k], indices [B, k]) per block], norms).
  """
  search = _top_k_fn(mesh, k, chunk, _on_cpu(mesh))
  n_valid = np.int32(corpus.shape[0])
  best = [(jnp.full((b.shape[0], k), -jnp.inf, jnp.float32),
           jnp.full((b.shape[0], k), _NO_INDEX, jnp.int32)) for _, _, b in blocks]
  norms, previous, wait = None, None, min(workers, len(blocks)) > 1
  with _pool(workers, len(blocks)) as pool:
    for offset, chunk_dev in _device_chunks(corpus, mesh, rows):
      if convert is not None:
        chunk_dev, chunk_norms = convert(chunk_dev)
        chunk_norms = np.asarray(chunk_norms)
        norms = chunk_norms if norms is None else np.maximum(norms, chunk_norms)
      best = _each(pool, lambda state, b: search(*state, b[2], chunk_dev, offset, n_valid),
                   best, blocks, wait=wait)
      # The previous host chunk's blocks finished before the next is taken: at most three
      # host chunks on the devices (that one, this one, the one being prefetched).
      jax.block_until_ready(previous)
      previous = best
      del chunk_dev
  return best, norms


def _unblock(blocks, best, n_queries: int, k: int):
  scores = np.empty((n_queries, k), np.float32)
  indices = np.empty((n_queries, k), np.int64)
  for (start, stop, _), (s, i) in zip(blocks, best):
    scores[start:stop] = np.asarray(s)[:stop - start]
    indices[start:stop] = np.asarray(i)[:stop - start]
  return scores, indices


def top_k(queries, corpus, k: int, chunk_size: int | None = None, query_block: int | None = None,
          devices=None, stream_rows: int = DEFAULT_STREAM_ROWS, workers: int | None = None,
          prefilter: str | None = None, stats: dict | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by inner product, the corpus streamed from host memory.

  Args:
    queries: [Q, D] float array.
    corpus: [N, D] float array: a numpy array, an `np.memmap` (read one host
      chunk at a time; never loaded whole), or a `jax.Array` already on the
      devices (an encoder's output: searched there; only the bfloat16 prefilter's
      rescoring reads it on the host).
    k: results per query, 1 <= k <= N.
    chunk_size: at most this many corpus rows scored at once per device (memory
      bound; default 2,048 on CPU, 65,536 elsewhere: `DEFAULT_SHAPES`; off the CPU
      corpora up to `SMALL_CORPUS` rows per device use at most 4,096: `_sized`).
    query_block: at most this many queries scored at once (one compiled shape;
      default 512 on CPU, 2,048 elsewhere, 512 for small corpora); blocks are what
      the workers share out.
    devices: devices to shard the corpus over (default: all).
    stream_rows: corpus rows put on the devices at a time (host memory bound).
    workers: host threads searching query blocks concurrently (default: one per
      CPU core on CPU devices, else 1). Each holds its own [block, chunk] scores.
    prefilter: None (score everything in float32), or "bfloat16": score in
      bfloat16 with float32 accumulation (4-6x float32's speed on a CPU with AMX),
      keep each query's `_prefilter_rows(k)` best, rescore those in float32 and
      take their top k; a query is redone in float32 unless its k-th rescored score
      beats every row left out by more than a rigorous bound on the bfloat16 error
      (`_error_bound`). The result is exact either way: the top k of float32 scores.
    stats: a dict that, when given, receives what the prefilter did
      ("prefilter_rows", "fallback_queries").

  Returns:
    (scores float32 [Q, k], indices int64 [Q, k]), best first, ties by lower index.
  """
  queries, corpus = _check(queries, corpus)
  if not 1 <= k <= corpus.shape[0]:
    raise SearchError(f"k={k} must be between 1 and the corpus size {corpus.shape[0]}")
  if prefilter not in PREFILTERS:
    raise SearchError(f"prefilter must be one of {PREFILTERS}, got {prefilter!r}")
  mesh = _mesh(devices)
  chunk_size, query_block = _sized(mesh, corpus.shape[0],
                                   *_shapes(mesh, chunk_size, query_block))
  coarse = _coarse(mesh)
  chunk, _, rows = _stream_layout(corpus.shape[0], mesh.size, chunk_size, stream_rows, coarse)
  workers = _workers(mesh, workers)
  blocks = [(start, stop, jax.device_put(b))
            for start, stop, b in _query_blocks(queries, query_block, coarse)]
  m = _prefilter_rows(k)
  if prefilter is None or m >= corpus.shape[0]:
    best, _ = _stream_top_k(blocks, corpus, k, mesh, chunk, rows, workers)
    if stats is not None:
      stats.update(prefilter_rows=0, fallback_queries=0)
    return _unblock(blocks, best, queries.shape[0], k)

  # bfloat16 prefilter: each query's m best by bfloat16 scores ...
  blocks16 = [(start, stop, b.astype(jnp.bfloat16)) for start, stop, b in blocks]
  best, norms = _stream_top_k(blocks16, corpus, m, mesh, chunk, rows, workers,
                              convert=_bfloat16_fn(mesh, chunk))
  approx, candidates = _unblock(blocks16, best, queries.shape[0], m)
  q16 = np.concatenate([np.asarray(b[:stop - start], np.float32) for start, stop, b in blocks16])
  bound = _error_bound(queries, q16, norms)  # [Q]
  # ... rescored in float32 ...
  host_corpus = np.asarray(corpus) if isinstance(corpus, jax.Array) else corpus  # CPU: no copy
  scores, indices = _rescore(queries, host_corpus, candidates, approx, bound, k, workers)
  # ... and kept where no row left out (bfloat16 score <= the m-th) can reach the k-th.
  exact = scores[:, k - 1] > approx[:, m - 1] + bound
  redo = np.flatnonzero(~exact)
  if redo.size:
    scores[redo], indices[redo] = top_k(queries[redo], corpus, k, chunk_size, query_block,
                                        devices, stream_rows, workers)
  if stats is not None:
    stats.update(prefilter_rows=m, fallback_queries=int(redo.size))
  return scores, indices


def relevant_ranks(queries, corpus, targets, chunk_size: int | None = None,
                   query_block: int | None = None,
                   devices=None, stream_rows: int = DEFAULT_STREAM_ROWS,
                   workers: int | None = None) -> np.ndarray:
  """1-based ranks of chosen corpus items in each query's full ranking.

  Args:
    queries: [Q, D]; corpus: [N, D] (array, `np.memmap` or `jax.Array`, streamed twice).
    targets: int [Q, T] corpus indices per query; -1 marks padding.
    chunk_size, query_block, devices, stream_rows, workers: as in `top_k`.

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
  chunk_size, query_block = _sized(mesh, corpus.shape[0],
                                   *_shapes(mesh, chunk_size, query_block))
  coarse = _coarse(mesh)
  chunk, _, rows = _stream_layout(corpus.shape[0], mesh.size, chunk_size, stream_rows, coarse)
  find, count = _ranks_fns(mesh, chunk)
  n_valid = np.int32(corpus.shape[0])
  workers = _workers(mesh, workers)
  width = _width(targets.shape[1]) if coarse else targets.shape[1]  # padded with -1
  blocks = []
  for start, stop, block in _query_blocks(queries, query_block, coarse):
    t = np.full((block.shape[0], width), -1, np.int32)
    t[:stop - start, :targets.shape[1]] = targets[start:stop]
    blocks.append((start, stop, jax.device_put(block), jax.device_put(t)))
  # Pass 1: the targets' scores; pass 2: how many candidates beat each target.
  found = [jnp.full((q.shape[0], width), -jnp.inf, jnp.float32) for _, _, q, _ in blocks]
  wait = min(workers, len(blocks)) > 1  # else one host chunk behind, as in `_stream_top_k`
  with _pool(workers, len(blocks)) as pool:
    previous = None
    for offset, chunk_dev in _device_chunks(corpus, mesh, rows):
      found = _each(pool, lambda f, b: find(f, b[2], chunk_dev, offset, b[3], n_valid),
                    found, blocks, wait=wait)
      jax.block_until_ready(previous)
      previous = found
      del chunk_dev
    above = [jnp.zeros((q.shape[0], width), jnp.int32) for _, _, q, _ in blocks]
    for offset, chunk_dev in _device_chunks(corpus, mesh, rows):
      above = _each(pool, lambda a, f, b: count(a, b[2], chunk_dev, offset, b[3], f, n_valid),
                    above, found, blocks, wait=wait)
      jax.block_until_ready(previous)
      previous = above
      del chunk_dev
  for (start, stop, _, _), a in zip(blocks, above):
    ranks[start:stop] = np.asarray(a)[:stop - start, :targets.shape[1]] + 1
  return np.where(targets >= 0, ranks, 0)
