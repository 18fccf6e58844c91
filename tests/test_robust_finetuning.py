"""Robust fine-tuning: WiSE-FT interpolation, L2-SP, freezing the lower layers.

One short tiny-random run (synthetic batches, embeddings and layer_0 frozen,
L2-SP on) serves the interpolation, export and eval tests.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from eval import run as eval_run
from mlir_train import encode, export, interpolate, models, optimizer, synthetic, train

TEXTS = ["what is the capital of russia?", "москва is the capital", "a"]


def leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def assert_bitwise_equal(a, b):
  la, lb = leaves(a), leaves(b)
  assert la.keys() == lb.keys()
  for k in la:
    assert la[k].dtype == lb[k].dtype and la[k].tobytes() == lb[k].tobytes(), k


def batch_at(config, vocab_size, step):
  b = synthetic.global_batch(config, vocab_size, step=step)
  return {f: jnp.asarray(getattr(b, f)) for f in train.BATCH_FIELDS}


def run_config():
  config = tiny.get_config()  # tiny-random-0: 2 layers, hidden 32
  config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 3, 1, 3
  config.freeze_embeddings, config.freeze_layers, config.l2sp = True, 1, 1.0
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("robust") / "run"
  summary = train.train(run_config(), path)
  assert summary["final_step"] == 3 and summary["skipped_nonfinite"] == 0
  return path


# ----------------------------------------------------------------------------
# Freezing
# ----------------------------------------------------------------------------
def test_frozen_layers_do_not_change_and_get_no_optimizer_state(workdir):
  start = models.tiny_random_model(0).params
  trained = models.restore_for_inference(workdir).params
  assert_bitwise_equal(trained["embeddings"], start["embeddings"])
  assert_bitwise_equal(trained["layer_0"], start["layer_0"])
  moved = np.abs(trained["layer_1"]["output_dense"]["kernel"]
                 - start["layer_1"]["output_dense"]["kernel"]).max()
  assert moved > 1e-4  # the trainable layer did train

  # Resuming the finished run restores the state, L2-SP anchor included, and stops.
  again = train.train(run_config(), workdir)
  assert again["resumed_from_step"] == 3 and again["final_step"] == 3

  config = run_config()
  tx = optimizer.make_optimizer(config)
  state = train.init_state(start, tx, config)
  paths = list(leaves(state["opt_state"]))
  assert not [p for p in paths if "embeddings" in p or "layer_0" in p]
  # Adam's mu and nu: one array per layer_1 leaf each, with its shape; plus scalar counts.
  layer_1 = leaves(start["layer_1"])
  moments = [p for p in paths if "layer_1" in p]
  assert len(moments) == 2 * len(layer_1) == 2 * 16
  assert all(np.ndim(v) == 0 for p, v in leaves(state["opt_state"]).items() if "layer_1" not in p)
  assert list(state["start_params"]) == ["layer_1"]  # L2-SP anchors the trainable part only


@pytest.mark.fast
def test_freeze_layers_names_and_range():
  params = models.tiny_random_model(0).params  # embeddings, layer_0, layer_1
  assert optimizer.num_layers(params) == 2
  assert optimizer.frozen_names(params, True, 2) == ("embeddings", "layer_0", "layer_1")
  assert optimizer.frozen_names(params, False, 1) == ("layer_0",)
  trainable, frozen = optimizer.split_frozen(params, False, 0)
  assert sorted(trainable) == ["embeddings", "layer_0", "layer_1"] and frozen == {}
  config = tiny.get_config()
  tx = optimizer.make_optimizer(config)
  for bad in (3, -1):
    config.freeze_layers = bad
    with pytest.raises(train.TrainingError, match=r"freeze_layers must be an integer in 0\.\.2 "
                                                  r"\(the model has 2 transformer layers\)"):
      train.init_state(params, tx, config)
  config.freeze_layers, config.freeze_embeddings = 2, True  # everything frozen: no state at all
  state = train.init_state(params, tx, config)
  assert [p for p in leaves(state["opt_state"]) if "kernel" in p or "bias" in p] == []


# ----------------------------------------------------------------------------
# L2-SP
# ----------------------------------------------------------------------------
def test_l2sp_zero_is_plain_training_bit_for_bit():
  """l2sp = 0: three steps of the trainer's step equal an independent plain AdamW step."""
  config = tiny.get_config()
  config.l2sp, config.freeze_layers = 0.0, 1
  model = models.tiny_random_model(0)
  tx = optimizer.make_optimizer(config)
  state = train.init_state(model.params, tx, config)
  assert "start_params" not in state
  step = jax.jit(train.make_update_step(model.module, tx, config))

  def plain_loss(trainable, frozen, batch):  # the InfoNCE objective, nothing else
    embed = lambda ids, mask: model.module.apply({"params": {**trainable, **frozen}}, ids, mask)
    from mlir_train import loss as loss_lib
    return loss_lib.info_nce(embed(batch["query_ids"], batch["query_mask"]),
                             embed(batch["passage_ids"], batch["passage_mask"]),
                             batch["group_id"], temperature=config.temperature).loss

  @jax.jit
  def plain_step(trainable, frozen, opt_state, batch):
    grads = jax.grad(plain_loss)(trainable, frozen, batch)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state

  frozen = {"layer_0": model.params["layer_0"]}
  trainable = {k: v for k, v in model.params.items() if k != "layer_0"}
  opt_state = tx.init(trainable)
  for i in range(3):
    batch = batch_at(config, model.config.vocab_size, i)
    state, metrics = step(state, batch)
    trainable, opt_state = plain_step(trainable, frozen, opt_state, batch)
    assert "l2sp_penalty" not in metrics
  assert_bitwise_equal(state["params"], {**trainable, **frozen})
  assert_bitwise_equal(state["opt_state"], opt_state)
  assert np.abs(state["params"]["layer_1"]["output_dense"]["kernel"]
                - model.params["layer_1"]["output_dense"]["kernel"]).max() > 1e-4


def grads_tx():
  """An 'optimizer' that leaves params alone and stores the gradient it gets as its state."""
  return optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def test_l2sp_gradient_and_penalty_match_hand_computed():
  model = models.tiny_random_model(0)
  config = tiny.get_config()
  config.freeze_embeddings = True
  batch = batch_at(config, model.config.vocab_size, 0)
  start = model.params
  # theta = theta_start + d_leaf, d_leaf = 0.01 * (k + 1) for the k-th trainable leaf.
  trainable_names = [n for n in leaves(start) if not n.startswith("['embeddings']")]
  shift = {n: 0.01 * (k + 1) for k, n in enumerate(trainable_names)}
  theta = jax.tree_util.tree_map_with_path(
      lambda p, v: v + shift.get(jax.tree_util.keystr(p), 0.0), start)

  def gradient(strength):
    config.l2sp = strength
    state = train.init_state(start, grads_tx(), config)  # anchor = the true start
    state["params"] = theta
    new_state, metrics = jax.jit(train.make_update_step(model.module, grads_tx(), config))(
        state, batch)
    return leaves(new_state["opt_state"]), metrics

  plain, m0 = gradient(0.0)
  strength = 0.5
  pulled, m1 = gradient(strength)
  assert sorted(pulled) == sorted(trainable_names)  # no gradient for the frozen embeddings
  for name in trainable_names:  # d/dtheta (s/2)||theta - theta0||^2 = s * d
    np.testing.assert_allclose(pulled[name] - plain[name],
                               np.full_like(plain[name], strength * shift[name]),
                               rtol=1e-4, atol=1e-7, err_msg=name)
  sizes = {n: v.size for n, v in leaves(start).items()}
  expected = strength / 2 * sum(sizes[n] * shift[n] ** 2 for n in trainable_names)
  np.testing.assert_allclose(float(m1["l2sp_penalty"]), expected, rtol=1e-4)
  assert float(m1["loss"]) == float(m0["loss"])  # "loss" stays the InfoNCE loss
  config.l2sp = -1.0
  with pytest.raises(train.TrainingError, match="l2sp must be a finite number >= 0"):
    train.init_state(start, grads_tx(), config)


# ----------------------------------------------------------------------------
# WiSE-FT interpolation
# ----------------------------------------------------------------------------
def test_interpolation_endpoints_exact_and_midpoint(workdir):
  start = models.tiny_random_model(0)
  finetuned = models.restore_for_inference(workdir)
  at0, at1 = interpolate.interpolate(workdir, 0.0), interpolate.interpolate(workdir, 1.0)
  assert_bitwise_equal(at0.params, start.params)
  assert_bitwise_equal(at1.params, finetuned.params)
  assert at0.name == f"{workdir}@lambda=0" and at1.name == f"{workdir}@lambda=1"
  np.testing.assert_array_equal(encode.embed(at0, TEXTS, "query", progress=False),
                                encode.embed(start, TEXTS, "query", progress=False))
  np.testing.assert_array_equal(encode.embed(at1, TEXTS, "query", progress=False),
                                encode.embed(finetuned, TEXTS, "query", progress=False))

  lam = 0.25
  mid = interpolate.interpolate(workdir, lam)
  assert mid.name == f"{workdir}@lambda=0.25"
  a, b, m = leaves(start.params), leaves(finetuned.params), leaves(mid.params)
  for name in a:
    expected = 0.75 * a[name].astype(np.float64) + 0.25 * b[name].astype(np.float64)
    np.testing.assert_allclose(m[name], expected, rtol=1e-6, atol=1e-7, err_msg=name)
  assert_bitwise_equal(mid.params["layer_0"], start.params["layer_0"])  # frozen: untouched
  kernel = "['layer_1']['output_dense']['kernel']"
  assert np.abs(m[kernel] - a[kernel]).max() > 1e-5 and np.abs(m[kernel] - b[kernel]).max() > 1e-5

  with pytest.raises(interpolate.InterpolationError, match=r"in \[0, 1\]"):
    interpolate.interpolate(workdir, 1.5)
  with pytest.raises(interpolate.InterpolationError, match="needs a training workdir"):
    interpolate.interpolate("tiny-random-0", 0.5)
  assert interpolate.parse_lambdas("0.25, 0.5,0.75") == [0.25, 0.5, 0.75]
  for bad in ("0.5,x", "", "0.5,0.5", "-0.1"):
    with pytest.raises(interpolate.InterpolationError):
      interpolate.parse_lambdas(bad)


def hand_mix(workdir, lam):
  """{leaf name: (1 - lam) * start + lam * finetuned} in float64, from the two endpoints."""
  a = leaves(models.tiny_random_model(0).params)
  b = leaves(models.restore_for_inference(workdir).params)
  return {k: (1 - lam) * a[k].astype(np.float64) + lam * b[k].astype(np.float64) for k in a}


def assert_params_close(params, expected):
  got = leaves(params)
  assert got.keys() == expected.keys()
  for k in got:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_export_interpolate_cli(workdir, tmp_path, capsys):
  # lambda 0.25, not 0.5: a swapped formula (lambda * start + (1 - lambda) * finetuned) differs.
  out = tmp_path / "wise"
  assert export.main(["--model", str(workdir), "--interpolate", "0.25", "--out", str(out)]) == 0
  exported = models.load_model(str(out)).params
  assert_params_close(exported, hand_mix(workdir, 0.25))
  assert_bitwise_equal(exported, interpolate.interpolate(workdir, 0.25).params)
  assert export.main(["--model", "tiny-random-0", "--interpolate", "0.5",
                      "--out", str(tmp_path / "bad")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --interpolate needs a training workdir") and "\n" not in err
  assert not (tmp_path / "bad").exists()


def test_eval_run_interpolate_writes_one_result_per_lambda(workdir, data_dir, tmp_path, capsys,
                                                           monkeypatch):
  out = tmp_path / "res" / "xquad_r.json"
  options = ["--benchmark", "xquad_r", "--languages", "en,de", "--data_dir", str(data_dir),
             "--max_length", "32", "--max_documents", "4", "--no_progress"]
  evaluated = {}  # model name -> the model the CLI evaluated
  real_evaluate = eval_run.evaluate

  def spy(model, *args, **kw):
    evaluated[model.name] = model
    return real_evaluate(model, *args, **kw)

  monkeypatch.setattr(eval_run, "evaluate", spy)
  eval_run.main(["--model", str(workdir), *options, "--interpolate", "0,0.25,1",
                 "--out", str(out)])
  monkeypatch.setattr(eval_run, "evaluate", real_evaluate)
  assert not out.exists()
  # lambda 0.25 evaluates (1 - 0.25) * start + 0.25 * finetuned (a swapped formula would not).
  assert_params_close(evaluated[f"{workdir}@lambda=0.25"].params, hand_mix(workdir, 0.25))
  assert (out.parent / "xquad_r.lambda0.25.json").is_file()
  results = {lam: json.loads((out.parent / f"xquad_r.lambda{lam}.json").read_text())
             for lam in (0, 1)}
  assert (out.parent / "xquad_r.lambda1.report.md").is_file()
  kw = dict(data_dir=data_dir, max_length=32, max_documents=4, progress=False)
  endpoints = {0: eval_run.evaluate(models.tiny_random_model(0), "xquad_r", ["en", "de"], **kw),
               1: eval_run.evaluate(models.restore_for_inference(workdir), "xquad_r",
                                    ["en", "de"], **kw)}
  for lam, result in results.items():
    assert result["interpolation"]["lambda"] == lam
    assert result["interpolation"]["start"] == "tiny-random-0"
    assert result["model"] == f"{workdir}@lambda={lam}"
    assert result["settings"] == endpoints[lam]["settings"]
  assert results[0]["settings"] != results[1]["settings"]  # the two endpoints differ

  with pytest.raises(SystemExit) as exit_info:
    eval_run.main(["--model", "tiny-random-0", *options, "--interpolate", "0.5",
                   "--out", str(out)])
  assert exit_info.value.code == 2
  assert "error: --interpolate needs a training workdir" in capsys.readouterr().err
