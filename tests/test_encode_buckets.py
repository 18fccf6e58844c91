"""Padded lengths per backend: fine on a CPU, ten coarse shapes on a GPU or TPU (each new
shape costs seconds of compilation there), with the same embeddings either way."""
import jax
import numpy as np
import pytest

from data_pipelines import tokenization
from mlir_train import encode, models

pytestmark = [pytest.mark.gpu]

# 5 to 160 tokens (the tiny model keeps 128): one per batch, spanning many fine buckets.
TEXTS = ["word " * n for n in (0, 1, 2, 3, 5, 7, 9, 11, 14, 17, 20, 24, 28, 40)]


def _calls(model, monkeypatch, texts, **kwargs):
  """(shapes of every forward call, vectors) of one `embed`."""
  shapes = []
  forward = encode._forward

  def spy(module, params, input_ids, attention_mask):
    shapes.append(input_ids.shape)
    return forward(module, params, input_ids, attention_mask)

  monkeypatch.setattr(encode, "_forward", spy)
  vectors = encode.embed(model, texts, "passage", progress=False, **kwargs)
  monkeypatch.undo()
  return shapes, vectors


def _shapes_and_vectors(model, monkeypatch, backend):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  shapes, vectors = _calls(model, monkeypatch, TEXTS, batch_size=1, max_length=512)
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


def test_a_token_budget_gives_long_texts_fewer_rows_and_the_same_vectors(monkeypatch):
  model = models.load_model("tiny-random")
  texts = [("word " * n).strip() for n in range(30)]  # 30 texts of 5 to 121 tokens
  lengths = [len(r) for r in tokenization.token_ids(model.tokenizer, texts, "passage", 129,
                                                    model.prompts)]
  shapes, vectors = _calls(model, monkeypatch, texts, batch_size=8, batch_tokens=64)
  rows_of = {}
  for rows, length in shapes:
    assert rows == max(1, min(8, 64 // length))  # worked out from the rule, per call
    assert rows * length <= 64 or rows == 1
    assert rows_of.setdefault(length, rows) == rows  # one shape per padded length
  # Longest first, each batch as long as its first text's bucket: the calls cover every text
  # once, so the rows beyond the texts are the fillers of each length's last batch only.
  assert sum(r for r, _ in shapes) - len(texts) < len(rows_of) * 8
  assert max(length for _, length in shapes) == tokenization.bucket_length(max(lengths))
  # The truth: each text encoded alone (batch 1, no budget), and the old fixed batches.
  alone = encode.embed(model, texts, "passage", batch_size=1, batch_tokens=0, progress=False)
  fixed_shapes, fixed = _calls(model, monkeypatch, texts, batch_size=8, batch_tokens=0)
  assert {r for r, _ in fixed_shapes} == {8}
  np.testing.assert_allclose(vectors, alone, atol=2e-6)
  np.testing.assert_allclose(fixed, alone, atol=2e-6)


def test_the_budget_is_the_cpu_default_and_off_elsewhere(monkeypatch):
  model = models.load_model("tiny-random")
  texts = ["word " * 90, "word " * 2]
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert encode.default_batch_tokens() == encode.CPU_BATCH_TOKENS == 1024
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert encode.default_batch_tokens() == 0
  assert encode.batch_rows(512, 64, 0) == 64
  monkeypatch.undo()
  shapes, _ = _calls(model, monkeypatch, texts, batch_size=64)  # this machine: a CPU
  assert shapes == [(1024 // 128, 128)]  # the long text (cut to 128) sets 8 rows; both fit
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match="batch_tokens"):
      encode.embed(model, texts, "passage", batch_tokens=bad, progress=False)


def test_compiling_ahead_compiles_exactly_the_shapes_the_call_runs(monkeypatch):
  """`ahead=True` (the default off the CPU): the call's new [rows, length] shapes compile side
  by side first, so its batches then compile nothing; the vectors are those of a call
  without it, and a second call compiles nothing ahead."""
  model = models.load_model("tiny-random")
  texts = ["word " * n for n in (0, 2, 5, 9, 14, 20, 28, 40, 60)]
  kwargs = dict(max_length=88, buckets=(8, 16, 32, 64), batch_tokens=0, progress=False)
  plain = encode.embed(model, texts, "passage", ahead=False, batch_size=3, **kwargs)
  forward, calls = encode._forward, []   # (shape, programs compiled before the call)

  def spy(module, params, input_ids, attention_mask):
    calls.append((input_ids.shape, forward._cache_size()))
    return forward(module, params, input_ids, attention_mask)

  monkeypatch.setattr(encode, "_forward", spy)
  ahead = encode.embed(model, texts, "passage", ahead=True, batch_size=2, **kwargs)
  batches = -(-len(texts) // 2)
  warm, run = calls[:-batches], calls[-batches:]
  assert len(warm) >= 2 and {s for s, _ in warm} == {s for s, _ in run}  # new shapes: [2, L]
  assert {n for _, n in run} == {forward._cache_size()}   # the batches compiled nothing
  np.testing.assert_allclose(ahead, plain, atol=2e-5)
  calls.clear()
  encode.embed(model, texts, "passage", ahead=True, batch_size=2, **kwargs)
  assert len(calls) == batches                              # nothing compiled ahead again
  device = jax.local_devices()[0]
  params = jax.device_put(model.params, device)
  assert encode.compile_ahead(model.module, params, [(5, 16)], device) == 1   # a new shape
