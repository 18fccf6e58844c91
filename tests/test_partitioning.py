"""Mesh and sharding rules; one train step gives the same numbers on 1 and 8 devices."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import tiny
from mlir_train import loss as loss_lib
from mlir_train import models, optimizer, partitioning, synthetic, train


@pytest.mark.fast
def test_make_mesh_shapes():
  assert dict(partitioning.make_mesh().shape) == {"data": 8, "fsdp": 1}
  assert dict(partitioning.make_mesh(fsdp=4).shape) == {"data": 2, "fsdp": 4}
  assert dict(partitioning.make_mesh(data=1, devices=jax.devices()[:1]).shape) == {
      "data": 1, "fsdp": 1}
  with pytest.raises(partitioning.MeshError, match="does not use the 8 devices"):
    partitioning.make_mesh(data=3, fsdp=2)


@pytest.mark.fast
def test_fsdp_rule_shards_largest_divisible_dim():
  assert partitioning.fsdp_spec((1024, 32), 4) == P("fsdp", None)
  assert partitioning.fsdp_spec((256, 32), 4) == P()                   # < min_size: replicated
  assert partitioning.fsdp_spec((256, 32), 4, min_size=1) == P("fsdp", None)
  assert partitioning.fsdp_spec((30, 1536), 4) == P(None, "fsdp")      # 30 not divisible
  assert partitioning.fsdp_spec((1535, 33), 4) == P()                  # nothing divisible
  assert partitioning.fsdp_spec((384,), 4) == P()                      # small: replicated
  assert partitioning.fsdp_spec((1024, 32), 1) == P()                   # no fsdp axis


@pytest.mark.fast
def test_optimizer_state_follows_params():
  mesh = partitioning.make_mesh(fsdp=8)
  params = {"w": np.zeros((64, 512), np.float32), "b": np.zeros((512,), np.float32)}
  config = tiny.get_config()
  state = jax.eval_shape(lambda p: train.init_state(p, optimizer.make_optimizer(config), config),
                         params)
  shardings = partitioning.tree_shardings(state, mesh)
  adam = shardings["opt_state"][1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
  assert adam.mu["w"].spec == shardings["params"]["w"].spec == P(None, "fsdp")
  assert adam.nu["w"].spec == P(None, "fsdp")
  assert shardings["params"]["b"].spec == P()


@pytest.mark.fast
def test_global_batch_splits_rows_over_devices():
  mesh = partitioning.make_mesh()
  local = {"x": np.arange(16 * 3, dtype=np.int32).reshape(16, 3)}
  arr = partitioning.global_batch(local, mesh)["x"]
  assert arr.shape == (16, 3)
  np.testing.assert_array_equal(np.asarray(arr), local["x"])
  assert {s.data.shape for s in arr.addressable_shards} == {(2, 3)}


def loss_and_grads(mesh):
  """Loss, accuracy and parameter gradients of the tiny model on one batch, on `mesh`."""
  config = tiny.get_config()
  model = models.tiny_random_model(0)
  # min_size=1: shard even the tiny model's small matrices over "fsdp".
  param_sharding = partitioning.tree_shardings(model.params, mesh, min_size=1)
  params = jax.device_put(model.params, param_sharding)
  b = synthetic.global_batch(config, model.config.vocab_size, step=0)
  batch = partitioning.global_batch({f: getattr(b, f) for f in train.BATCH_FIELDS}, mesh)

  def loss_fn(p):
    embed = lambda ids, mask: model.module.apply({"params": p}, ids, mask)
    out = loss_lib.info_nce(embed(batch["query_ids"], batch["query_mask"]),
                            embed(batch["passage_ids"], batch["passage_mask"]),
                            batch["group_id"], temperature=config.temperature)
    return out.loss, out.accuracy

  (loss, accuracy), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  word_embeddings = params["embeddings"]["word_embeddings"]["embedding"]
  assert word_embeddings.sharding.spec == (P("fsdp", None) if mesh.shape["fsdp"] > 1 else P())
  return float(loss), float(accuracy), jax.device_get(grads)


def test_same_loss_and_gradient_on_1_and_8_devices():
  loss1, acc1, g1 = loss_and_grads(partitioning.make_mesh(data=1, devices=jax.devices()[:1]))
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g1))
  for mesh in (partitioning.make_mesh(), partitioning.make_mesh(fsdp=4)):
    loss8, acc8, g8 = loss_and_grads(mesh)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-6)
    assert acc8 == acc1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
                 g8, g1)
  assert np.isfinite(loss1) and scale > 0


def one_step_metrics(mesh):
  """Metrics of two jitted update steps (the second with lr > 0) on `mesh`."""
  config = tiny.get_config()
  model = models.tiny_random_model(0)
  tx = optimizer.make_optimizer(config)
  init = lambda p: train.init_state(p, tx, config)
  state_sharding = partitioning.tree_shardings(jax.eval_shape(init, model.params), mesh,
                                               min_size=1)
  state = jax.jit(init, out_shardings=state_sharding)(model.params)
  batch_sharding = {f: partitioning.batch_sharding(mesh) for f in train.BATCH_FIELDS}
  step = jax.jit(train.make_update_step(model.module, tx, config),
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, partitioning.replicated(mesh)))
  b = synthetic.global_batch(config, model.config.vocab_size, step=0)
  arrays = partitioning.global_batch({f: getattr(b, f) for f in train.BATCH_FIELDS}, mesh)
  state, _ = step(state, arrays)
  state, metrics = step(state, arrays)
  return jax.device_get(metrics)


@pytest.mark.slow  # the loss and gradient check above covers the sharded step's numbers
def test_update_step_metrics_on_1_and_8_devices():
  m1 = one_step_metrics(partitioning.make_mesh(data=1, devices=jax.devices()[:1]))
  m8 = one_step_metrics(partitioning.make_mesh(fsdp=4))
  for k in ("loss", "accuracy", "grad_norm", "learning_rate"):
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
  assert m1["learning_rate"] > 0
