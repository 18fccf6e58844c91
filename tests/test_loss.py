"""InfoNCE against a numpy reference written from the formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlir_train import loss as loss_lib

pytestmark = [pytest.mark.fast]


def unit(rng, n, d):
  x = rng.normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def numpy_info_nce(q, p, groups, temperature, symmetric=False, hard=None, hard_groups=None):
  """-log softmax of the diagonal, looping over rows; parallel positives dropped."""
  n = len(q)
  cols = p if hard is None else np.concatenate([p, hard])
  col_groups = list(groups) + ([] if hard is None else list(hard_groups))

  def row_loss(sims, i, candidate_groups, own_group):
    keep = [j for j in range(len(sims)) if j == i or candidate_groups[j] != own_group]
    s = np.array([sims[j] for j in keep], np.float64) / temperature
    return np.log(np.exp(s).sum()) - sims[i] / temperature

  q_to_p = np.mean([row_loss(cols @ q[i], i, col_groups, groups[i]) for i in range(n)])
  if not symmetric:
    return q_to_p
  p_to_q = np.mean([row_loss(q @ p[i], i, groups, groups[i]) for i in range(n)])
  return 0.5 * (q_to_p + p_to_q)


@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_numpy_reference_with_mask(symmetric):
  rng = np.random.default_rng(0)
  q, p = unit(rng, 6, 5), unit(rng, 6, 5)
  groups = np.array([0, 1, 0, 2, 1, 3], np.int32)  # rows 0/2 and 1/4 are parallel
  out = loss_lib.info_nce(q, p, groups, temperature=0.1, symmetric=symmetric)
  expected = numpy_info_nce(q, p, groups, 0.1, symmetric)
  np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)


def test_hard_negatives_match_reference():
  rng = np.random.default_rng(1)
  q, p, hard = unit(rng, 4, 8), unit(rng, 4, 8), unit(rng, 3, 8)
  groups = np.array([5, 6, 5, 7], np.int32)
  hard_groups = np.array([6, 9, 9], np.int32)  # hard negative 0 is query 1's parallel passage
  out = loss_lib.info_nce(q, p, groups, temperature=0.05, hard_negatives=hard,
                          hard_negative_group_id=hard_groups)
  assert out.logits.shape == (4, 7)
  expected = numpy_info_nce(q, p, groups, 0.05, hard=hard, hard_groups=hard_groups)
  np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)


def test_unique_groups_is_plain_cross_entropy():
  rng = np.random.default_rng(2)
  q, p = unit(rng, 5, 4), unit(rng, 5, 4)
  logits = q @ p.T / 0.05
  log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  out = loss_lib.info_nce(q, p, np.arange(5, dtype=np.int32))
  np.testing.assert_allclose(float(out.loss), -np.mean(np.diag(log_softmax)), rtol=1e-5)
  assert np.isfinite(out.logits).all()


def test_mask_removes_exactly_the_parallel_positives():
  groups = jnp.array([3, 1, 3, 3, 2, 1], jnp.int32)
  mask = np.asarray(loss_lib.parallel_mask(groups, groups))
  expected = np.zeros((6, 6), bool)
  for i, j in [(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2), (1, 5), (5, 1)]:
    expected[i, j] = True
  np.testing.assert_array_equal(mask, expected)
  rng = np.random.default_rng(3)
  out = loss_lib.info_nce(unit(rng, 6, 4), unit(rng, 6, 4), groups)
  np.testing.assert_array_equal(np.isneginf(np.asarray(out.logits)), expected)


def test_masked_entries_do_not_affect_loss_or_gradient():
  """A parallel passage can be anything: loss and query gradient do not change."""
  rng = np.random.default_rng(4)
  q, p = unit(rng, 4, 6), unit(rng, 4, 6)
  groups = jnp.array([0, 1, 0, 2], jnp.int32)
  p_other = p.copy()
  p_other[2] = unit(rng, 1, 6)[0]  # passage 2 is masked for query 0
  f = lambda q_, p_: loss_lib.info_nce(q_, p_, groups).logits[0]
  row_loss = lambda q_, p_: jax.nn.logsumexp(f(q_, p_)) - f(q_, p_)[0]
  np.testing.assert_allclose(row_loss(q, p), row_loss(q, p_other), rtol=1e-6)
  g1, g2 = jax.grad(row_loss)(q, p), jax.grad(row_loss)(q, p_other)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
  assert np.isfinite(jax.grad(lambda p_: loss_lib.info_nce(q, p_, groups).loss)(p)).all()


def test_accuracy_counts_top1_positives():
  q = np.eye(4, dtype=np.float32)
  p = np.eye(4, dtype=np.float32)[[0, 1, 3, 2]]  # queries 2, 3 score another passage higher
  out = loss_lib.info_nce(q, p, np.arange(4, dtype=np.int32))
  assert float(out.accuracy) == pytest.approx(0.5)
