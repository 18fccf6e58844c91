"""Checkpoints leave out the parameters a run holds out of training (`checkpoints.Frozen`).

A run with frozen embeddings and a frozen first layer, from a model directory this
test can change afterwards. The truth for what a restore must return is what the
training loop held when it saved (captured by wrapping `checkpoints.save`) and the
start model's own values for the frozen subtrees.
"""
import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file, save_file

from mlir_train import checkpoints, export, hf_io, models, train
from tests.test_validation import run_config as validation_run_config

FROZEN = ["embeddings", "layer_0"]


def run_config(model, **overrides):
  """test_validation's early-stopping run, from `model`, embeddings and layer_0 frozen."""
  return validation_run_config(model=str(model), freeze_embeddings=True, freeze_layers=1,
                               **overrides)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
  """(model dir, workdir, {step: params the loop held when saving step}) of a 6-step run."""
  root = tmp_path_factory.mktemp("frozen")
  model = root / "model"
  export.export("tiny-random", model)
  held = {}
  real = checkpoints.save

  def capture(mngr, step, state, meta, frozen=None):
    held[step] = jax.device_get(state["params"])
    return real(mngr, step, state, meta, frozen)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoints, "save", capture)
    train.train(run_config(model), root / "run")
  return model, root / "run", held


def start_params(model_dir):
  return hf_io.load_hf_dir(model_dir)[1]


def change_an_embedding(model_dir):
  weights = load_file(str(model_dir / "model.safetensors"))
  name = next(k for k in weights if "word_embeddings" in k)
  weights[name][3, 5] += 1.0
  save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def saved_names(step_dir):
  return sorted(ocp.PyTreeCheckpointer().metadata(step_dir / "params").item_metadata.keys())


def test_frozen_subtrees_are_not_written_but_named_with_their_hash(frozen_run):
  model, workdir, _ = frozen_run
  everything = sorted(start_params(model))
  for step_dir in [workdir / "checkpoints" / "6",
                   *(workdir / checkpoints.BEST_DIR).iterdir()]:
    if not step_dir.name.isdigit():
      continue
    assert saved_names(step_dir) == sorted(set(everything) - set(FROZEN))
    record = json.loads((step_dir / checkpoints.FROZEN_ITEM / "metadata").read_text())
    assert record["names"] == FROZEN
    assert record["sha256"] == checkpoints.Frozen.of(start_params(model), FROZEN).sha256


def test_restored_parameters_are_the_trained_ones_and_the_start_models_frozen_ones(frozen_run):
  model, workdir, held = frozen_run
  start = start_params(model)
  for step in (2, 4, 6):
    restored = jax.device_get(models.restore_for_inference(workdir, step=step).params)
    jax.tree.map(np.testing.assert_array_equal, restored, held[step])
    for name in FROZEN:
      jax.tree.map(np.testing.assert_array_equal, restored[name], start[name])
  trained = held[6]["layer_1"]["output_dense"]["kernel"]
  assert not np.array_equal(trained, start["layer_1"]["output_dense"]["kernel"])


def test_resume_and_best_checkpoint_are_exact(frozen_run, tmp_path):
  model, workdir, held = frozen_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "6")
  summary = train.train(run_config(model), copy)
  assert (summary["resumed_from_step"], summary["final_step"]) == (4, 6)
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(models.restore_for_inference(copy, step=6).params), held[6])
  read = lambda w: (w / "metrics.jsonl").read_text().splitlines()
  strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k != "examples_per_sec"}
                         for l in lines]
  assert strip(read(copy)) == strip(read(workdir))
  best = summary["best_validation"]["step"]
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(models.restore_for_inference(copy).params), held[best])


def test_a_changed_start_model_is_refused(frozen_run, tmp_path):
  model, workdir, _ = frozen_run
  changed, copy = tmp_path / "model", tmp_path / "run"
  shutil.copytree(model, changed)
  shutil.copytree(workdir, copy)
  change_an_embedding(changed)
  config = json.loads((copy / "config.json").read_text())
  config["model"] = str(changed)
  (copy / "config.json").write_text(json.dumps(config))
  match = "not the ones this run was trained from"
  with pytest.raises(checkpoints.FrozenMismatch, match=match):
    models.restore_for_inference(copy, step=6)
  # Not damage: neither served from an older step nor moved aside.
  with pytest.raises(checkpoints.FrozenMismatch, match=match):
    models.restore_for_inference(copy)
  with pytest.raises(checkpoints.FrozenMismatch, match=match):
    train.train(run_config(changed, total_steps=8), copy, allow_config_change=True)
  assert not (copy / checkpoints.CORRUPT_DIR).exists()
  assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_without_the_start_model_a_frozen_checkpoint_says_what_is_missing(frozen_run):
  model, workdir, _ = frozen_run
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), start_params(model))
  with pytest.raises(checkpoints.CheckpointError, match="embeddings"):
    checkpoints.restore_params(workdir, like, step=6)


def unfrozen_saves(held):
  """checkpoints.save as before frozen subtrees were left out (everything written)."""
  real = checkpoints.save

  def save(mngr, step, state, meta, frozen=None):
    held[step] = jax.device_get(state["params"])
    return real(mngr, step, state, meta, None)
  return save


@pytest.mark.parametrize("base_changed", [False, True])
def test_resuming_from_a_step_that_saved_everything(tmp_path, base_changed):
  """A run whose steps were written whole (as before frozen subtrees were left out) resumes
  from step 4 to the uninterrupted run's step 6; not if the start model changed since."""
  model = tmp_path / "model"
  export.export("tiny-random", model)
  held = {}
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoints, "save", unfrozen_saves(held))
    train.train(run_config(model), tmp_path / "run")
  assert saved_names(tmp_path / "run" / "checkpoints" / "4") == sorted(start_params(model))
  shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
  if base_changed:
    change_an_embedding(model)
    with pytest.raises(checkpoints.FrozenMismatch, match="differ from the start model's"):
      train.train(run_config(model), tmp_path / "run")
    return
  assert train.train(run_config(model), tmp_path / "run")["resumed_from_step"] == 4
  assert saved_names(tmp_path / "run" / "checkpoints" / "6") == sorted(set(held[6]) - set(FROZEN))
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(models.restore_for_inference(tmp_path / "run", step=6).params),
               held[6])


def test_a_run_started_from_another_run_saves_everything(frozen_run, tmp_path):
  """Its start model (a workdir) may train on; its checkpoints must not depend on it."""
  _, workdir, held = frozen_run
  train.train(run_config(workdir, total_steps=2, checkpoint_every_steps=2), tmp_path / "next")
  step = tmp_path / "next" / "checkpoints" / "2"
  assert not (step / checkpoints.FROZEN_ITEM).exists()
  assert saved_names(step) == sorted(held[6])


def test_restore_params_into_numpy_arrays(frozen_run):
  model, workdir, held = frozen_run
  start = start_params(model)
  like = jax.tree.map(np.zeros_like, start)
  restored = checkpoints.restore_params(workdir, like, step=6, start_params=start)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), held[6])


@pytest.mark.fast
def test_frozen_hash_is_of_names_shapes_dtypes_and_bytes():
  import hashlib
  import ml_dtypes
  w = np.arange(6, dtype=np.float32).reshape(2, 3)
  tree = {"embeddings": {"w": w}, "layer_0": {"b": np.zeros(3, ml_dtypes.bfloat16)}}
  frozen = checkpoints.Frozen.of(tree, ["layer_0", "embeddings"])
  expected = hashlib.sha256()
  for key, array in (("['embeddings']['w']", w), ("['layer_0']['b']", tree["layer_0"]["b"])):
    expected.update(f"{key} {array.dtype} {array.shape};".encode() + array.tobytes())
  assert frozen.names == ("embeddings", "layer_0") and frozen.sha256 == expected.hexdigest()
  for changed in ({"w": w.reshape(3, 2)}, {"w": w.astype(np.float64)}, {"w": w + 1}):
    assert checkpoints.Frozen.of({**tree, "embeddings": changed}, frozen.names) != frozen
