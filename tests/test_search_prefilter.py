"""eval.search's bfloat16 prefilter: exact results (numpy float64 brute force), the error
bound's rigour at its worst case, and the float32 fallback where the bound cannot certify."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from eval import search
from tests.test_search import DEVICE_SETS, _brute_force, _integer_data
from tests.test_search_streaming import on_disk


def _bfloat16(x: np.ndarray) -> np.ndarray:
  return x.astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("devices,chunk_size,stream_rows",
                         [("eight_devices", 40, 65536), ("one_device", 7, 96)])
def test_prefilter_equals_brute_force_with_ties(devices, chunk_size, stream_rows):
  queries, corpus = _integer_data(0, n_queries=37, n_docs=643)  # exact in bfloat16 too
  stats = {}
  scores, indices = search.top_k(queries, corpus, 25, chunk_size=chunk_size, query_block=16,
                                 stream_rows=stream_rows, devices=DEVICE_SETS[devices](),
                                 prefilter="bfloat16", stats=stats)
  want_scores, want_indices = _brute_force(queries, corpus, 25)
  assert (np.diff(want_scores, axis=1) == 0).any()  # ties inside the top k
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  assert stats["prefilter_rows"] == 64


def _fractional_data(seed: int, n_queries: int, n_docs: int, dim: int = 16):
  """Integer queries; corpus rows = integers + multiples of 2^-12 that bfloat16 drops.

  Every float32 dot product is exact (under 24 significant bits), so float64 is the
  truth bit for bit, while bfloat16 (8 significant bits) sees only the integer parts.
  """
  rng = np.random.default_rng(seed)
  queries = rng.integers(0, 3, size=(n_queries, dim)).astype(np.float32)
  whole = rng.integers(0, 3, size=(n_docs, dim))
  corpus = (whole * 16 + rng.integers(0, 16, size=(n_docs, dim)) / 256).astype(np.float32)
  return queries, corpus


def test_prefilter_rescores_what_bfloat16_cannot_order():
  queries, corpus = _fractional_data(1, n_queries=40, n_docs=3000)
  stats = {}
  scores, indices = search.top_k(queries, corpus, 10, chunk_size=256, prefilter="bfloat16",
                                 stats=stats)
  want_scores, want_indices = _brute_force(queries, corpus, 10)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
  # bfloat16 alone orders them differently: the rescore is doing the work ...
  _, rough = _brute_force(_bfloat16(queries), _bfloat16(corpus), 10)
  assert (rough != want_indices).any(axis=1).mean() > 0.5
  # ... and the bound certified most queries without a float32 pass
  assert stats["fallback_queries"] < 40 // 2


def test_prefilter_falls_back_where_the_bound_cannot_certify():
  """300 rows that bfloat16 scores alike, the best ones at the highest indices: the 32
  candidates (ties by lower index) miss them, so only the float32 fallback is right."""
  rng = np.random.default_rng(2)
  dim, n = 16, 2000
  queries = np.ones((6, dim), np.float32)
  corpus = rng.uniform(-1, 0, size=(n, dim)).astype(np.float32)  # far below
  close = np.arange(300)
  corpus[500 + close] = 1 + close[:, None] * 2.0 ** -20  # 1 in bfloat16; best last
  stats = {}
  scores, indices = search.top_k(queries, corpus, 5, chunk_size=128, prefilter="bfloat16",
                                 stats=stats)
  want_scores, want_indices = _brute_force(queries, corpus, 5)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
  assert stats == {"prefilter_rows": 32, "fallback_queries": 6}
  _, rough = _brute_force(_bfloat16(queries), _bfloat16(corpus), 32)
  assert not np.isin(want_indices, rough).any()  # the candidates held none of the answer


def _approx_and_bound(queries, corpus):
  """bfloat16 scores as the search computes them, their float64 truth, and the bound."""
  q16, x16 = (jnp.asarray(a).astype(jnp.bfloat16) for a in (queries, corpus))
  approx = np.asarray(jax.lax.dot_general(q16, x16, (((1,), (1,)), ((), ())),
                                          preferred_element_type=jnp.float32), np.float64)
  exact = queries.astype(np.float64) @ corpus.T.astype(np.float64)
  _, norms = search._bfloat16_fn(search._mesh(jax.devices()[:1]), corpus.shape[0])(
      jnp.asarray(corpus))
  bound = search._error_bound(queries, np.asarray(q16, np.float32), np.asarray(norms))
  return np.abs(approx - exact), bound  # [Q, N], [Q]


@pytest.mark.fast
def test_error_bound_holds_on_random_vectors_of_mixed_norms():
  rng = np.random.default_rng(3)
  dim = 384
  corpus = (rng.standard_normal((300, dim)) * rng.uniform(0.01, 100, (300, 1))).astype(np.float32)
  queries = (rng.standard_normal((60, dim)) * rng.uniform(0.01, 100, (60, 1))).astype(np.float32)
  error, bound = _approx_and_bound(queries, corpus)
  assert (error <= bound[:, None]).all()
  # for unit vectors it is about 2 x 2^-8 / sqrt(3) (each side's rms rounding), not vacuous
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  _, unit_bound = _approx_and_bound(unit(queries), unit(corpus))
  assert (unit_bound < 2 * 2.0 ** -8).all()


@pytest.mark.fast
def test_error_bound_is_met_when_rounding_errors_align():
  """Every entry rounds down by 0.4 ulp, against an all-ones query: the error is
  sum |r_x| = |q| |r_x| (Cauchy-Schwarz with equality), the bound's worst case."""
  dim = 384
  corpus = np.full((1, dim), 1 + 0.4 * 2.0 ** -7, np.float32)  # bfloat16: 1.0
  error, bound = _approx_and_bound(np.ones((1, dim), np.float32), corpus)
  assert 0.98 * bound[0] < error[0, 0] <= bound[0]  # the rest: float32 accumulation's allowance


def test_prefilter_on_a_memmap_matches_the_array(tmp_path):
  queries, corpus = _fractional_data(4, n_queries=20, n_docs=1500)
  mapped = on_disk(tmp_path / "corpus.f32", corpus)
  got = search.top_k(queries, mapped, 7, chunk_size=64, stream_rows=500, prefilter="bfloat16")
  want = search.top_k(queries, corpus, 7, chunk_size=64)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.fast
def test_unknown_prefilter_is_refused():
  with pytest.raises(search.SearchError, match="prefilter"):
    search.top_k(np.ones((2, 4)), np.ones((50, 4)), 3, prefilter="int8")
