"""Padded lengths per backend: fine on a CPU, ten coarse shapes on a GPU or TPU (each new
shape costs seconds of compilation there), with the same embeddings either way."""
import jax
import numpy as np

from data_pipelines import tokenization
from mlir_train import encode, models

# 5 to 160 tokens (the tiny model keeps 128): one per batch, spanning many fine buckets.
TEXTS = ["word " * n for n in (0, 1, 2, 3, 5, 7, 9, 11, 14, 17, 20, 24, 28, 40)]


def _shapes_and_vectors(model, monkeypatch, backend):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  shapes = []
  forward = encode._forward

  def spy(module, params, input_ids, attention_mask):
    shapes.append(input_ids.shape)
    return forward(module, params, input_ids, attention_mask)

  monkeypatch.setattr(encode, "_forward", spy)
  vectors = encode.embed(model, TEXTS, "passage", batch_size=1, max_length=512, progress=False)
  monkeypatch.undo()
  return {length for _, length in shapes}, vectors


def test_accelerator_buckets_are_coarse_and_change_nothing(monkeypatch):
  model = models.load_model("tiny-random")
  cpu_lengths, cpu_vectors = _shapes_and_vectors(model, monkeypatch, "cpu")
  gpu_lengths, gpu_vectors = _shapes_and_vectors(model, monkeypatch, "gpu")
  assert cpu_lengths <= set(tokenization.DEFAULT_BUCKETS)
  assert gpu_lengths <= set(tokenization.ACCELERATOR_BUCKETS)
  assert len(gpu_lengths) < len(cpu_lengths)  # fewer shapes to compile on an accelerator
  # padding is masked: the same texts give the same unit vectors with either padding
  np.testing.assert_allclose(gpu_vectors, cpu_vectors, atol=2e-5)
  assert encode.default_buckets() == tokenization.DEFAULT_BUCKETS  # this machine is a CPU


def test_a_restored_model_reuses_the_loaded_models_compilations(tmp_path):
  """A study evaluates the starting model (loaded) and then trained runs (restored from
  orbax, committed to a device): the second must not compile its forward passes again."""
  from configs import tiny
  from mlir_train import train
  config = tiny.get_config()
  config.total_steps, config.checkpoint_every_steps, config.warmup_steps = 2, 2, 1
  train.train(config, tmp_path / "run")
  loaded = models.load_model(config.model)
  restored = models.load_model(str(tmp_path / "run"))
  texts = ["word " * n for n in (3, 30, 90)]
  before = encode._forward._cache_size()
  first = encode.embed(loaded, texts, "query", batch_size=2, progress=False)
  compiled = encode._forward._cache_size()
  assert compiled > before  # the loaded model's shapes were compiled here
  second = encode.embed(restored, texts, "query", batch_size=2, progress=False)
  assert encode._forward._cache_size() == compiled
  assert not np.allclose(first, second)  # trained parameters, not the loaded ones
