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


def test_sharded_and_single_device_agree_exactly_on_floats():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(20, 16)).astype(np.float32)
  corpus = rng.normal(size=(333, 16)).astype(np.float32)
  one = search.top_k(queries, corpus, 30, chunk_size=16, devices=jax.devices()[:1])
  eight = search.top_k(queries, corpus, 30, chunk_size=16)
  np.testing.assert_array_equal(one[1], eight[1])
  np.testing.assert_array_equal(one[0], eight[0])


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
