"""GradCache gives the full-batch loss and gradient."""
import jax
import numpy as np
import pytest

from configs import tiny
from mlir_train import gradcache, models, synthetic
from mlir_train import loss as loss_lib


def setup(batch_size=16):
  config = tiny.get_config()
  config.batch_size = batch_size
  model = models.tiny_random_model(0)
  b = synthetic.global_batch(config, model.config.vocab_size, step=3)
  embed = lambda p, ids, mask: model.module.apply({"params": p}, ids, mask)

  def loss_from_embeddings(q, p):
    out = loss_lib.info_nce(q, p, b.group_id, temperature=0.05, symmetric=True)
    return out.loss, out.accuracy

  inputs = (b.query_ids, b.query_mask, b.passage_ids, b.passage_mask)
  return model, embed, loss_from_embeddings, inputs


@pytest.mark.fast
def test_chunk_layout_round_trips():
  x = np.arange(12 * 2).reshape(12, 2)
  chunks = np.asarray(gradcache._to_chunks(x, 4))   # [3 chunks, 4 rows, 2]
  np.testing.assert_array_equal(chunks[1, :, 0], x[[1, 4, 7, 10], 0])
  np.testing.assert_array_equal(np.asarray(gradcache._from_chunks(chunks)), x)


@pytest.mark.parametrize("batch_size", [16, pytest.param(32, marks=pytest.mark.slow)])
def test_loss_and_gradient_equal_full_batch(batch_size):
  model, embed, loss_from_embeddings, inputs = setup(batch_size)

  def full(params, q_ids, q_mask, p_ids, p_mask):
    return loss_from_embeddings(embed(params, q_ids, q_mask), embed(params, p_ids, p_mask))

  (loss, acc), grads = jax.jit(jax.value_and_grad(full, has_aux=True))(model.params, *inputs)
  cached = jax.jit(gradcache.value_and_grad(embed, loss_from_embeddings, chunk_size=4))
  (loss_c, acc_c), grads_c = cached(model.params, *inputs)
  np.testing.assert_allclose(loss_c, loss, rtol=1e-6)
  assert float(acc_c) == float(acc)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
               grads_c, grads)
  assert scale > 0


@pytest.mark.fast
def test_indivisible_chunk_is_a_clear_error():
  model, embed, loss_from_embeddings, inputs = setup(16)
  with pytest.raises(gradcache.GradCacheError, match="not divisible by gradcache chunk size 5"):
    gradcache.value_and_grad(embed, loss_from_embeddings, chunk_size=5)(model.params, *inputs)
