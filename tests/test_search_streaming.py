"""eval.search with the corpus streamed from host memory in several chunks.

Checked against a brute-force numpy top-k (exact indices, ties by lower index)
with chunks small enough that ties, the running top-k merge and the padded last
chunk all cross host-chunk boundaries; the corpus given as an in-memory array,
a float64 array and an `np.memmap` on disk.
"""
import jax
import numpy as np
import pytest

from eval import search


def _brute_force(queries, corpus, k):
  scores = queries.astype(np.float64) @ np.asarray(corpus).T.astype(np.float64)
  index = np.broadcast_to(np.arange(corpus.shape[0]), scores.shape)
  order = np.lexsort((index, -scores), axis=-1)[:, :k]
  return np.take_along_axis(scores, order, 1), order


def _integer_data(seed, n_queries, n_docs, dim=8):
  """Small-integer embeddings: exact float32 dot products with many ties."""
  rng = np.random.default_rng(seed)
  queries = rng.integers(-2, 3, size=(n_queries, dim)).astype(np.float32)
  corpus = rng.integers(-2, 3, size=(n_docs, dim)).astype(np.float32)
  corpus[100:140] = corpus[3]  # duplicates of row 3 spread over several host chunks
  corpus[-5:] = corpus[3]      # ... and in the padded last chunk
  return queries, corpus


DEVICES = {"one_device": lambda: jax.devices()[:1], "eight_devices": lambda: jax.devices()}


@pytest.mark.parametrize("devices", sorted(DEVICES))
@pytest.mark.parametrize("n_docs,stream_rows,chunk_size",
                         [(1003, 64, 16), (1003, 100, 7), (997, 1000, 32), (257, 1, 8)])
def test_streamed_top_k_equals_brute_force(devices, n_docs, stream_rows, chunk_size):
  queries, corpus = _integer_data(0, n_queries=45, n_docs=n_docs)
  k = 30
  scores, indices = search.top_k(queries, corpus, k, chunk_size=chunk_size, query_block=16,
                                 devices=DEVICES[devices](), stream_rows=stream_rows)
  want_scores, want_indices = _brute_force(queries, corpus, k)
  assert (np.diff(want_scores, axis=1) == 0).any()  # ties inside the top k
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_k_larger_than_a_host_chunk():
  queries, corpus = _integer_data(1, n_queries=9, n_docs=300)
  scores, indices = search.top_k(queries, corpus, 120, chunk_size=8, stream_rows=50,
                                 devices=jax.devices()[:1])
  np.testing.assert_array_equal(indices, _brute_force(queries, corpus, 120)[1])
  full = search.top_k(queries, corpus, 300, chunk_size=8, stream_rows=50)
  np.testing.assert_array_equal(full[1], _brute_force(queries, corpus, 300)[1])


def on_disk(path, array: np.ndarray) -> np.memmap:
  """`array` written to `path` as float32 and mapped back read-only."""
  mm = np.memmap(path, np.float32, "w+", shape=array.shape)
  mm[:] = array
  mm.flush()
  del mm
  return np.memmap(path, np.float32, "r", shape=array.shape)


def test_memmap_and_float64_corpora_give_the_same_answer(tmp_path):
  queries, corpus = _integer_data(2, n_queries=20, n_docs=777)
  on_disk_corpus = on_disk(tmp_path / "corpus.f32", corpus)
  want = _brute_force(queries, corpus, 25)[1]
  for c in (on_disk_corpus, corpus.astype(np.float64), on_disk_corpus[:]):
    _, indices = search.top_k(queries, c, 25, chunk_size=16, stream_rows=128)
    np.testing.assert_array_equal(indices, want)


def test_streamed_random_floats_match_one_chunk_exactly():
  """Streaming changes only how rows are blocked (last-bit score rounding), not the ranking."""
  rng = np.random.default_rng(3)
  queries = rng.normal(size=(33, 24)).astype(np.float32)
  corpus = rng.normal(size=(2001, 24)).astype(np.float32)
  whole = search.top_k(queries, corpus, 50, chunk_size=64, stream_rows=10**6)
  streamed = search.top_k(queries, corpus, 50, chunk_size=64, stream_rows=256)
  np.testing.assert_array_equal(whole[1], streamed[1])
  np.testing.assert_allclose(whole[0], streamed[0], rtol=0, atol=1e-5)


@pytest.mark.fast
@pytest.mark.parametrize("devices", sorted(DEVICES))
def test_streamed_relevant_ranks_equal_brute_force(devices):
  queries, corpus = _integer_data(4, n_queries=21, n_docs=403)
  _, full = _brute_force(queries, corpus, corpus.shape[0])
  position = np.argsort(full, axis=1) + 1
  rng = np.random.default_rng(5)
  targets = rng.integers(0, corpus.shape[0], size=(21, 6))
  targets[:, 0], targets[:, 1], targets[:, 2] = 3, 120, 400  # tied duplicates, last chunk
  targets[::3, 5] = -1
  ranks = search.relevant_ranks(queries, corpus, targets, chunk_size=8, query_block=8,
                                devices=DEVICES[devices](), stream_rows=50)
  want = np.where(targets >= 0, np.take_along_axis(position, np.maximum(targets, 0), 1), 0)
  np.testing.assert_array_equal(ranks, want)


def test_streamed_ranks_agree_with_streamed_top_k_on_floats():
  rng = np.random.default_rng(6)
  queries = rng.normal(size=(40, 24)).astype(np.float32)
  corpus = rng.normal(size=(900, 24)).astype(np.float32)
  _, indices = search.top_k(queries, corpus, 60, chunk_size=32, stream_rows=200)
  ranks = search.relevant_ranks(queries, corpus, indices, chunk_size=32, stream_rows=200)
  np.testing.assert_array_equal(ranks, np.broadcast_to(np.arange(1, 61), ranks.shape))


def test_non_finite_row_in_a_later_chunk_is_named():
  corpus = np.ones((500, 4), np.float32)
  corpus[433, 2] = np.inf
  with pytest.raises(search.SearchError, match="corpus row 433"):
    search.top_k(np.ones((2, 4), np.float32), corpus, 3, stream_rows=100)


def test_memmap_search_keeps_resident_memory_bounded(tmp_path):
  """A 64 MiB memmap searched in 4 MiB host chunks adds far less than 64 MiB of RSS."""
  import resource
  n, dim = 43_690, 384  # 64 MiB of float32
  path = tmp_path / "big.f32"
  mm = np.memmap(path, np.float32, "w+", shape=(n, dim))
  rng = np.random.default_rng(7)
  for start in range(0, n, 8192):
    mm[start:start + 8192] = rng.standard_normal((min(8192, n - start), dim), np.float32)
  mm.flush()
  del mm
  corpus = np.memmap(path, np.float32, "r", shape=(n, dim))
  queries = rng.standard_normal((8, dim), np.float32)
  search.top_k(queries, corpus[:3000], 5, stream_rows=2730, devices=jax.devices()[:1])  # compile
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  _, indices = search.top_k(queries, corpus, 5, stream_rows=2730, devices=jax.devices()[:1])
  grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
  assert grew < 40, f"peak RSS grew by {grew:.0f} MiB for a 64 MiB memmap"
  want = np.argsort(-(queries @ np.asarray(corpus).T), axis=1, kind="stable")[:, :5]
  np.testing.assert_array_equal(indices, want)



@pytest.mark.parametrize("k", [1, 3, 40])
@pytest.mark.parametrize("chunk_size", [64, 512])
def test_chunks_larger_than_k_are_exact_with_ties(k, chunk_size):
  """Each chunk's own top k is merged into the running one: ties by lower index throughout."""
  queries, corpus = _integer_data(8, n_queries=37, n_docs=2100, dim=4)  # very many ties
  for stream_rows in (10**6, 700):
    scores, indices = search.top_k(queries, corpus, k, chunk_size=chunk_size, query_block=16,
                                   stream_rows=stream_rows)
    want_scores, want_indices = _brute_force(queries, corpus, k)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [2, 3, 64])
def test_host_chunks_sent_in_pieces_give_the_same_answer(monkeypatch, pieces):
  """To one accelerator a host chunk travels as several puts joined on the device
  (`_transfer_pieces`); forced here on a CPU device, with pieces of unequal rows (and at
  64, pieces of 1 or 0 rows)."""
  queries, corpus = _integer_data(2, n_queries=33, n_docs=1003)
  one = jax.devices()[:1]
  mesh = search.Mesh(np.array(one), (search.AXIS,))
  assert search._transfer_pieces(mesh) == 1  # a CPU device: one put per host chunk
  monkeypatch.setattr(search, "_transfer_pieces", lambda mesh: pieces)
  scores, indices = search.top_k(queries, corpus, 30, chunk_size=16, query_block=16,
                                 devices=one, stream_rows=100)
  want_scores, want_indices = _brute_force(queries, corpus, 30)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  ranks = search.relevant_ranks(queries, corpus, want_indices[:, [0, 29]], chunk_size=16,
                                devices=one, stream_rows=100)
  np.testing.assert_array_equal(ranks, np.broadcast_to([1, 30], ranks.shape))


@pytest.mark.gpu
@pytest.mark.fast
def test_only_a_single_accelerator_gets_pieces():
  class Device:
    def __init__(self, platform):
      self.platform = platform

  class FakeMesh:
    def __init__(self, platform, n):
      self.devices, self.size = np.array([Device(platform)] * n), n

  assert search._transfer_pieces(FakeMesh("gpu", 1)) == search.TRANSFER_PIECES > 1
  assert search._transfer_pieces(FakeMesh("tpu", 1)) == search.TRANSFER_PIECES
  assert search._transfer_pieces(FakeMesh("gpu", 8)) == 1
  assert search._transfer_pieces(FakeMesh("cpu", 1)) == 1
