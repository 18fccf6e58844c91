"""eval.search against brute-force numpy, on one device and sharded over 8 fake CPUs."""
import jax
import numpy as np
import pytest

from eval import search


def _brute_force(queries, corpus, k):
  """Full numpy ranking by (-score, index); returns (scores, indices) of the top k."""
  scores = queries.astype(np.float64) @ corpus.T.astype(np.float64)
  index = np.broadcast_to(np.arange(corpus.shape[0]), scores.shape)
  order = np.lexsort((index, -scores), axis=-1)[:, :k]
  return np.take_along_axis(scores, order, 1), order


def _integer_data(seed, n_queries, n_docs, dim=8):
  """Small-integer embeddings: dot products are exact in float32 and tie often."""
  rng = np.random.default_rng(seed)
  queries = rng.integers(-2, 3, size=(n_queries, dim)).astype(np.float32)
  corpus = rng.integers(-2, 3, size=(n_docs, dim)).astype(np.float32)
  corpus[10:20] = corpus[3]  # exact duplicates: guaranteed ties across chunks
  return queries, corpus


DEVICE_SETS = {"one_device": lambda: jax.devices()[:1], "eight_devices": lambda: jax.devices()}


@pytest.mark.fast
def test_eight_fake_devices_exist():
  assert len(jax.devices()) == 8


@pytest.mark.parametrize("devices", sorted(DEVICE_SETS))
@pytest.mark.parametrize("n_docs,chunk_size", [(640, 40), (643, 40), (643, 7), (50, 1000)])
def test_top_k_equals_brute_force_with_ties(devices, n_docs, chunk_size):
  queries, corpus = _integer_data(0, n_queries=37, n_docs=n_docs)
  k = 25
  scores, indices = search.top_k(queries, corpus, k, chunk_size=chunk_size, query_block=16,
                                 devices=DEVICE_SETS[devices]())
  want_scores, want_indices = _brute_force(queries, corpus, k)
  # the data really has ties inside the top k, so the index order is being tested
  assert (np.diff(want_scores, axis=1) == 0).any()
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  assert indices.shape == (37, k) and scores.dtype == np.float32


@pytest.mark.parametrize("devices", sorted(DEVICE_SETS))
def test_top_k_random_floats_match_up_to_rounding(devices):
  rng = np.random.default_rng(1)
  queries = rng.normal(size=(50, 32)).astype(np.float32)
  corpus = rng.normal(size=(1001, 32)).astype(np.float32)
  scores, indices = search.top_k(queries, corpus, 100, chunk_size=128, query_block=32,
                                 devices=DEVICE_SETS[devices]())
  want_scores, want_indices = _brute_force(queries, corpus, 100)
  np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-4)
  # indices agree except where two scores are within float32 rounding of each other
  gaps = np.abs(np.diff(want_scores, axis=1))
  near_tie = np.zeros_like(want_indices, bool)
  near_tie[:, 1:] |= gaps < 1e-4
  near_tie[:, :-1] |= gaps < 1e-4
  assert (indices == want_indices)[~near_tie].all()
  assert (indices == want_indices).mean() > 0.99


@pytest.mark.fast
def test_sharded_and_single_device_agree_exactly_on_floats():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(20, 16)).astype(np.float32)
  corpus = rng.normal(size=(333, 16)).astype(np.float32)
  one = search.top_k(queries, corpus, 30, chunk_size=16, devices=jax.devices()[:1])
  eight = search.top_k(queries, corpus, 30, chunk_size=16)
  np.testing.assert_array_equal(one[1], eight[1])
  np.testing.assert_array_equal(one[0], eight[0])


@pytest.mark.fast
@pytest.mark.parametrize("devices", sorted(DEVICE_SETS))
@pytest.mark.parametrize("chunk_size", [9, 64])
def test_relevant_ranks_equal_brute_force_positions(devices, chunk_size):
  queries, corpus = _integer_data(3, n_queries=21, n_docs=203)
  _, full = _brute_force(queries, corpus, corpus.shape[0])
  position = np.argsort(full, axis=1) + 1  # 1-based rank of every doc
  rng = np.random.default_rng(4)
  targets = rng.integers(0, corpus.shape[0], size=(21, 5))
  targets[:, 0] = 3  # doc 3 has ten exact duplicates (10..19): ties by index
  targets[:, 1] = 15
  targets[::2, 4] = -1  # padding
  ranks = search.relevant_ranks(queries, corpus, targets, chunk_size=chunk_size, query_block=8,
                                devices=DEVICE_SETS[devices]())
  want = np.where(targets >= 0, np.take_along_axis(position, np.maximum(targets, 0), 1), 0)
  np.testing.assert_array_equal(ranks, want)
  assert (ranks[:, 1] > ranks[:, 0]).all()  # duplicate 15 ranks below its twin 3


def test_relevant_ranks_agree_with_top_k_positions_on_floats():
  """Both functions must use the very same scores: the rank of the i-th result is i + 1."""
  rng = np.random.default_rng(5)
  queries = rng.normal(size=(40, 24)).astype(np.float32)
  corpus = rng.normal(size=(500, 24)).astype(np.float32)
  _, indices = search.top_k(queries, corpus, 50, chunk_size=64)
  ranks = search.relevant_ranks(queries, corpus, indices, chunk_size=64)
  np.testing.assert_array_equal(ranks, np.broadcast_to(np.arange(1, 51), ranks.shape))


@pytest.mark.fast
def test_bad_input_gives_clear_errors():
  q = np.ones((2, 4), np.float32)
  c = np.ones((5, 4), np.float32)
  with pytest.raises(search.SearchError, match="k=6"):
    search.top_k(q, c, 6)
  with pytest.raises(search.SearchError, match="dim"):
    search.top_k(q, np.ones((5, 3)), 1)
  bad = c.copy()
  bad[2, 1] = np.nan
  with pytest.raises(search.SearchError, match="corpus row 2"):
    search.top_k(q, bad, 1)
  with pytest.raises(search.SearchError, match="targets"):
    search.relevant_ranks(q, c, np.array([[5], [0]]))


def test_non_finite_rows_are_named_and_large_finite_rows_pass():
  """The row-sum shortcut: a NaN or infinity in any host chunk is named by its corpus row
  (also +inf and -inf in one row, whose sum is NaN); finite rows whose sum overflows
  float32 are not flagged, and their scores are exact (checked against float64)."""
  q = np.eye(3, 4, dtype=np.float32)
  for row, col, value in [(0, 0, np.nan), (700, 3, np.inf), (1023, 1, -np.inf)]:
    bad = np.ones((1024, 4), np.float32)
    bad[row, col] = value
    if row == 700:
      bad[row, 0] = -np.inf
    with pytest.raises(search.SearchError, match=f"corpus row {row} holds"):
      search.top_k(q, bad, 2, stream_rows=256)
  big = np.ones((600, 4), np.float32)
  big[300] = 3e38  # its row sum overflows; every score is q . x = 3e38 or 1, finite
  scores, indices = search.top_k(q, big, 2, stream_rows=256)
  np.testing.assert_array_equal(indices[:, 0], [300, 300, 300])
  np.testing.assert_array_equal(scores[:, 0], np.float32(3e38))


@pytest.mark.parametrize("workers", [1, 3])
def test_query_blocks_searched_from_threads_equal_brute_force(workers):
  """Blocks run concurrently (3 threads, 5 blocks, several host chunks) give the exact answer."""
  queries, corpus = _integer_data(4, n_queries=70, n_docs=900)
  scores, indices = search.top_k(queries, corpus, 30, chunk_size=64, query_block=16,
                                 stream_rows=256, workers=workers, devices=jax.devices()[:1])
  want_scores, want_indices = _brute_force(queries, corpus, 30)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  targets = want_indices[:, ::7]
  ranks = search.relevant_ranks(queries, corpus, targets, chunk_size=64, query_block=16,
                                stream_rows=256, workers=workers, devices=jax.devices()[:1])
  np.testing.assert_array_equal(ranks, np.broadcast_to(1 + np.arange(0, 30, 7), ranks.shape))


@pytest.mark.fast
def test_default_workers_one_per_cpu_core_on_cpu():
  import os
  mesh = search._mesh(jax.devices()[:1])
  assert search._default_workers(mesh) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("k", [1, 25, 64, 100])
def test_grouped_selection_exact_with_ties(k):
  """Chunks large enough for the group-maxima prefilter (chunk >= 2 * 16 * pow2(k)), many ties."""
  queries, corpus = _integer_data(5, n_queries=20, n_docs=9000)
  corpus[5000:5400] = corpus[:400]  # duplicates in a later chunk: ties against the running list
  chunk = 4096
  assert chunk % search.GROUP == 0 and chunk // search.GROUP >= 2 * (1 << (k - 1).bit_length())
  scores, indices = search.top_k(queries, corpus, k, chunk_size=chunk, query_block=8,
                                 devices=jax.devices()[:1])
  want_scores, want_indices = _brute_force(queries, corpus, k)
  assert (np.diff(want_scores, axis=1) == 0).any() or k == 1
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_bitonic_merge_equals_sorting_the_union():
  rng = np.random.default_rng(6)
  def best_first(n):
    s = rng.integers(0, 20, size=(9, n)).astype(np.float32)
    i = rng.permutation(10_000)[:9 * n].reshape(9, n).astype(np.int32)
    order = np.lexsort((i, -s), axis=-1)
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
  (a_s, a_i), (b_s, b_i) = best_first(64), best_first(64)
  s, i = search._bitonic_merge(a_s, a_i, b_s, b_i)
  all_s, all_i = np.concatenate([a_s, b_s], 1), np.concatenate([a_i, b_i], 1)
  order = np.lexsort((all_i, -all_s), axis=-1)[:, :64]
  np.testing.assert_array_equal(np.asarray(s), np.take_along_axis(all_s, order, 1))
  np.testing.assert_array_equal(np.asarray(i), np.take_along_axis(all_i, order, 1))


@pytest.mark.fast
def test_select_breaks_ties_by_index_across_groups():
  """A tie at the cut between a low-maximum group and a later high-maximum group."""
  g = search.GROUP
  s = np.full((1, 4 * g), -1.0, np.float32)
  s[0, 0] = 3.0                       # group 0: maximum 3
  s[0, g], s[0, g + 1] = 9.0, 3.0     # group 1: maximum 9, and a 3 tied with index 0
  index = np.arange(4 * g, dtype=np.int32) + 1000
  top, idx = search._select(s, index, np.full((1,), -np.inf, np.float32), kp=2)
  np.testing.assert_array_equal(np.asarray(top), [[9.0, 3.0]])
  np.testing.assert_array_equal(np.asarray(idx), [[1000 + g, 1000]])
  # the threshold masks what cannot enter the running list (ties lose: later index)
  top, idx = search._select(s, index, np.full((1,), 3.0, np.float32), kp=2)
  np.testing.assert_array_equal(np.asarray(top), [[9.0, -np.inf]])


@pytest.mark.fast
@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_named(workers):
  queries, corpus = _integer_data(0, n_queries=4, n_docs=30)
  with pytest.raises(search.SearchError, match="workers"):
    search.top_k(queries, corpus, 3, workers=workers)


def _backend_compiles(fn) -> int:
  """How many XLA backend compilations `fn()` caused (jax.monitoring events)."""
  events = []
  listener = lambda name, *_, **__: events.append(name)  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return sum(e == "/jax/core/compile/backend_compile_duration" for e in events)


def test_similar_corpus_sizes_share_one_compiled_search():
  """Each language's corpus has its own size (XQuAD-R: 1,167 to 1,276 candidates): a new
  compilation per size cost a GPU seconds each. Sizes within one grid step reuse it, exactly."""
  queries = _integer_data(7, n_queries=40, n_docs=8)[0]
  targets = np.zeros((40, 2), np.int64)
  targets[:, 1] = -1
  first = True
  for n_docs in (1167, 1222, 1276):
    corpus = _integer_data(n_docs, n_queries=1, n_docs=n_docs)[1]

    def search_both():
      scores, indices = search.top_k(queries, corpus, 10, devices=jax.devices()[:1])
      ranks = search.relevant_ranks(queries, corpus, targets, devices=jax.devices()[:1])
      return scores, indices, ranks

    out = {}
    compiles = _backend_compiles(lambda: out.update(zip("sir", search_both())))
    if not first:
      assert compiles == 0, n_docs
    first = False
    want_scores, want_indices = _brute_force(queries, corpus, 10)
    np.testing.assert_array_equal(out["i"], want_indices)
    _, full = _brute_force(queries, corpus, n_docs)
    np.testing.assert_array_equal(out["r"][:, 0], np.argsort(full, axis=1)[:, 0] + 1)


@pytest.mark.fast
@pytest.mark.parametrize("rows", [1, 7, 8, 9, 100, 852, 1167, 1276, 4000, 4097, 15392, 99999])
def test_grid_rounds_up_by_less_than_an_eighth(rows):
  g = search._grid(rows)
  assert g >= rows and g % 8 == 0
  assert g - rows < max(8, rows / 8)
  w = search._width(rows)  # accelerators: relevant items per query, a power of two >= 8
  assert w >= rows and w & (w - 1) == 0 and (w == 8 or w < 2 * rows)


@pytest.mark.gpu
@pytest.mark.parametrize("device_set", sorted(DEVICE_SETS))
def test_accelerator_shapes_are_full_and_exact(monkeypatch, device_set):
  """Off the CPU (`_coarse`), query blocks and corpus chunks have their full sizes, a power
  of two of chunks, and the relevant items' width is a power of two: TyDi-like languages
  (their own numbers of questions, candidates and relevant items per question) share one
  set of compiled searches, and the results stay exact (ranks and top k against numpy,
  padding masked)."""
  monkeypatch.setattr(search, "_coarse", lambda mesh: True)
  one = DEVICE_SETS[device_set]()
  # (queries, docs, T): one to three query blocks, three or four corpus chunks (-> four)
  cases = [(97, 530, 1), (113, 777, 3), (300, 1024, 2), (100, 600, 4)]
  shapes, compiles = set(), []
  for i, (n_queries, n_docs, width) in enumerate(cases):
    queries, corpus = _integer_data(i, n_queries, n_docs)
    rng = np.random.default_rng(i)
    targets = rng.integers(0, n_docs, size=(n_queries, width))
    targets[::3, width - 1:] = -1  # padding as qrels_targets writes it
    out = {}
    compiles.append(_backend_compiles(lambda: out.update(
        top=search.top_k(queries, corpus, 10, devices=one, chunk_size=256, query_block=128),
        ranks=search.relevant_ranks(queries, corpus, targets, devices=one, chunk_size=256,
                                    query_block=128))))
    shapes.add((next(search._query_blocks(queries, 128, True))[2].shape[0],
                search._layout(n_docs, len(one), 256, True)))
    np.testing.assert_array_equal(out["top"][1], _brute_force(queries, corpus, 10)[1])
    _, full = _brute_force(queries, corpus, n_docs)
    rank_of = np.argsort(full, axis=1) + 1  # [Q, N]: rank of each corpus item
    want = np.where(targets >= 0, np.take_along_axis(rank_of, np.maximum(targets, 0), 1), 0)
    np.testing.assert_array_equal(out["ranks"], want)
  assert len(shapes) == 1 and search._layout(777, 1, 256, True) == (256, 1024)
  assert search._layout(130, 1, 256, True) == (256, 256)  # one chunk: its own program
  assert search._layout(4000, 2, 256, True) == (256, 2048)  # 8 chunks of 256 per device
  assert compiles[0] > 0 and compiles[1:] == [0, 0, 0]  # one set of programs for all four


@pytest.mark.gpu
@pytest.mark.parametrize("device_set", sorted(DEVICE_SETS))
def test_accelerator_shapes_grow_with_the_corpus(monkeypatch, device_set):
  """Off the CPU, corpora up to SMALL_CORPUS rows per device keep SMALL_SHAPES (one program
  for every evaluation set); larger ones get the full default chunk and query block, capped
  by the rows each device holds per host chunk (many devices). Exact in every case."""
  monkeypatch.setattr(search, "_coarse", lambda mesh: True)
  monkeypatch.setattr(search, "SMALL_CORPUS", 512)
  monkeypatch.setattr(search, "SMALL_SHAPES", (128, 32))
  monkeypatch.setattr(search, "DEFAULT_SHAPES", {"cpu": (1024, 128), "other": (1024, 128)})
  devices = DEVICE_SETS[device_set]()
  used = []  # (chunk, query block) of every compiled search

  def spy(mesh, k, chunk, tiered):
    return lambda best_s, best_i, q, *rest: (used.append((chunk, q.shape[0])),
                                             original(mesh, k, chunk, tiered)(best_s, best_i, q,
                                                                                 *rest))[1]

  original = search._top_k_fn
  monkeypatch.setattr(search, "_top_k_fn", spy)
  n_dev = len(devices)
  for n_docs, stream_rows, want in [(400 * n_dev, 65536, (128, 32)),   # small: SMALL_SHAPES
                                    (600 * n_dev, 65536, (1024, 128)),  # large: the defaults
                                    (600 * n_dev, 256 * n_dev, (256, 128))]:  # capped by rows
    queries, corpus = _integer_data(n_docs, 150, n_docs)
    used.clear()
    scores, indices = search.top_k(queries, corpus, 10, devices=devices, stream_rows=stream_rows)
    assert set(used) == {want}, (n_docs, stream_rows, set(used))
    np.testing.assert_array_equal(indices, _brute_force(queries, corpus, 10)[1])
    targets = indices[:, 3:5]
    ranks = search.relevant_ranks(queries, corpus, targets, devices=devices,
                                  stream_rows=stream_rows)
    np.testing.assert_array_equal(ranks, np.broadcast_to([4, 5], ranks.shape))


@pytest.mark.parametrize("above,tier", [(0, 0), (1, 1), (8, 1), (9, 2), (16, 2), (17, 3), (32, 3),
                                        (33, 4), (200, 4)])
@pytest.mark.parametrize("kk", [100, 128])
def test_tiered_update_equals_sorting_the_union(above, tier, kk):
  """`_update`'s CPU tiers (nothing, `_select_few` for m = 8, 16, 32, the full `_select`)
  against a numpy lexsort of the running list and the chunk, with many ties.

  Each row's threshold (its running kk-th score) is placed so that at most `above`
  of the chunk's scores beat it; `tier` is the branch that count must choose.
  """
  assert search.FEW == (8, 16, 32)
  rng = np.random.default_rng(above + kk)
  qb, c, kp = 6, 2048, 128
  s = (rng.integers(0, 400, size=(qb, c)) / 4).astype(np.float32)  # ties within and across groups
  s[0] = rng.permutation(c) / 8  # one row without ties: its count is exactly `above`
  index = np.arange(c, dtype=np.int32) + 5000  # all after the running list's indices
  cut = -np.sort(-s, axis=1)[:, above] if above < c else np.full(qb, -np.inf, np.float32)
  n = (s > cut[:, None]).sum(1).max()  # ties at the cut: n <= above
  assert n == above
  assert int(np.searchsorted([0, 8, 16, 32], n, side="left")) == tier
  # running list: kp best-first entries, its kk-th equal to the cut, indices < 5000
  held = np.concatenate([np.sort(rng.uniform(cut[:, None], 300, (qb, kk - 1)), 1)[:, ::-1],
                         cut[:, None], np.sort(rng.uniform(-50, cut[:, None], (qb, kp - kk)), 1)[
                             :, ::-1]], 1).astype(np.float32)
  held[:, kk - 1] = cut
  held_index = np.tile(np.arange(kp, dtype=np.int32) * 7, (qb, 1))
  got_s, got_i = search._update((held, held_index), s, index, cut.astype(np.float32), True)
  all_s = np.concatenate([held, s], 1)
  all_i = np.concatenate([held_index, np.broadcast_to(index, s.shape)], 1)
  order = np.lexsort((all_i, -all_s), axis=-1)[:, :kk]
  np.testing.assert_array_equal(np.asarray(got_s)[:, :kk], np.take_along_axis(all_s, order, 1))
  np.testing.assert_array_equal(np.asarray(got_i)[:, :kk], np.take_along_axis(all_i, order, 1))
  # the untiered path (GPU/TPU) agrees
  full_s, full_i = search._update((held, held_index), s, index, cut.astype(np.float32), False)
  np.testing.assert_array_equal(np.asarray(full_i)[:, :kk], np.asarray(got_i)[:, :kk])


@pytest.mark.fast
def test_query_blocks_split_evenly():
  """1,190 queries in blocks of at most 512: three blocks of 416 covering every row once."""
  queries = np.arange(1190 * 2, dtype=np.float32).reshape(1190, 2)
  blocks = list(search._query_blocks(queries, 512))
  assert [b.shape[0] for _, _, b in blocks] == [416] * 3
  got = np.concatenate([b[:stop - start] for start, stop, b in blocks])
  np.testing.assert_array_equal(got, queries)
  assert [b.shape[0] for _, _, b in search._query_blocks(queries[:300], 512)] == [320]
  assert [b.shape[0] for _, _, b in search._query_blocks(queries[:1024], 512)] == [512] * 2


def test_select_few_breaks_ties_by_index_across_groups():
  """Two tied scores in groups whose maxima rank them the other way round."""
  g = search.GROUP
  s = np.full((1, 40 * g), -1.0, np.float32)
  s[0, 0], s[0, 1] = 5.0, 3.0        # group 0: maximum 5, a 3 at index 1
  s[0, g], s[0, g + 1] = 9.0, 3.0    # group 1: maximum 9, a 3 at index g + 1
  index = np.arange(40 * g, dtype=np.int32) + 1000
  top, idx = search._select_few(s, index, np.full((1,), 0.0, np.float32), m=8, kp=16)
  np.testing.assert_array_equal(np.asarray(idx)[0, :4], [1000 + g, 1000, 1001, 1001 + g])
  np.testing.assert_array_equal(np.asarray(top)[0], [9.0, 5.0, 3.0, 3.0] + [-np.inf] * 12)


@pytest.mark.fast
def test_default_shapes_and_bad_shapes_named():
  assert search.resolve_shapes() == search.DEFAULT_SHAPES["cpu"]
  assert search.resolve_shapes(4096, 64) == (4096, 64)
  queries, corpus = _integer_data(0, n_queries=4, n_docs=30)
  for bad in ({"chunk_size": 0}, {"query_block": -1}, {"chunk_size": 2.5}):
    with pytest.raises(search.SearchError, match=next(iter(bad))):
      search.top_k(queries, corpus, 3, **bad)


@pytest.mark.parametrize("placement", ["one_device", "sharded", "another_device"])
def test_corpus_on_devices_equals_brute_force_and_the_host_corpus(placement):
  """A corpus given as a `jax.Array` (on the search's one device, sharded over its eight, or
  on a device the search does not use) is searched in the same chunks as a host corpus,
  the last one padded: the brute-force answer, ties by index, and the same ranks."""
  n_docs = 640 if placement == "sharded" else 643
  queries, corpus = _integer_data(6, n_queries=29, n_docs=n_docs)
  device_set = jax.devices() if placement == "sharded" else jax.devices()[:1]
  where = {"one_device": jax.devices()[0], "another_device": jax.devices()[3],
           "sharded": jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(device_set), ("r",)),
                                                 jax.sharding.PartitionSpec("r"))}[placement]
  on_devices = jax.device_put(corpus, where)
  kw = dict(chunk_size=40, query_block=16, stream_rows=100, devices=device_set)
  scores, indices = search.top_k(queries, on_devices, 25, **kw)
  want_scores, want_indices = _brute_force(queries, corpus, 25)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  targets = np.stack([indices[:, 0], indices[:, 24], np.full(29, 15)], axis=1)
  np.testing.assert_array_equal(search.relevant_ranks(queries, on_devices, targets, **kw),
                                search.relevant_ranks(queries, corpus, targets, **kw))


def test_corpus_on_devices_non_finite_row_named_and_prefilter_exact():
  q = np.eye(3, 8, dtype=np.float32)
  bad = np.ones((300, 8), np.float32)
  bad[217, 5] = np.nan
  with pytest.raises(search.SearchError, match="corpus row 217 holds"):
    search.top_k(q, jax.numpy.asarray(bad), 2)
  with pytest.raises(search.SearchError, match="2-D"):
    search.top_k(q, jax.numpy.ones((4, 2, 4)), 1)
  queries, corpus = _integer_data(7, n_queries=11, n_docs=500)
  scores, indices = search.top_k(queries, jax.numpy.asarray(corpus), 20, prefilter="bfloat16")
  want_scores, want_indices = _brute_force(queries, corpus, 20)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
