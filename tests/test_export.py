"""Exports load in sentence-transformers and round-trip through our loader exactly."""
import json
import shutil

import jax
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from mlir_train import compare, e5_small, encode, export, hf_io, models

pytestmark = [pytest.mark.torch]

SENTENCES = list(compare.WEATHER.values())


def assert_same_params(a, b):
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  assert len(flat_a) == len(flat_b)
  for path, value in flat_a:
    np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_b[path]), err_msg=str(path))


def test_sentence_transformers_loads_e5_small_with_prompts():
  """The cached e5-small directory is itself a `save_hf_dir` export."""
  path = e5_small.ensure_hf_dir()
  st = SentenceTransformer(str(path), device="cpu")
  assert st.prompts["query"] == "query: " and st.prompts["passage"] == "passage: "
  model = models.load_model("e5-small")
  for kind in ("query", "passage"):
    ref = st.encode(SENTENCES, prompt_name=kind, convert_to_numpy=True)
    got = encode.embed(model, SENTENCES, kind, progress=False)
    assert np.abs(np.linalg.norm(ref, axis=1) - 1).max() < 1e-5  # Normalize module
    cos = (got * ref).sum(1)
    assert cos.min() >= 0.9999, cos


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_round_trip_through_export_cli(tmp_path, style):
  """HF dir -> Flax -> `python -m mlir_train.export` -> load: identical parameters."""
  overrides = dict(position_style="roberta", model_type="xlm-roberta", pooling="cls") \
      if style == "roberta" else {}
  tiny = models.tiny_random_model(seed=3, **overrides)
  first, second = tmp_path / "first", tmp_path / "second"
  hf_io.save_hf_dir(first, tiny.config, tiny.params, tiny.tokenizer)
  assert export.main(["--model", str(first), "--out", str(second)]) == 0
  loaded = models.load_model(str(second))
  assert loaded.config == tiny.config
  assert_same_params(loaded.params, tiny.params)
  text = ["what is the capital of russia? москва", ""]
  assert loaded.tokenizer(text)["input_ids"] == tiny.tokenizer(text)["input_ids"]
  # The sentence-transformers pooling follows the config.
  pooling = json.loads((second / "1_Pooling" / "config.json").read_text())
  assert pooling["pooling_mode_cls_token"] == (tiny.config.pooling == "cls")
  # as every Hugging Face config (without it transformers 5.17 warns of a Mistral regex)
  import transformers
  config = json.loads((second / "config.json").read_text())
  assert config["transformers_version"] == transformers.__version__
  st = SentenceTransformer(str(second), device="cpu")
  np.testing.assert_allclose(st.encode(text, prompt_name="query"),
                             encode.embed(tiny, text, "query", progress=False), atol=2e-5)


def test_pytorch_bin_with_bert_prefix_loads(tmp_path):
  """A `pytorch_model.bin` whose keys carry the "bert." prefix of BertForMaskedLM."""
  tiny = models.tiny_random_model(seed=4)
  hf_io.save_hf_dir(tmp_path, tiny.config, tiny.params, tiny.tokenizer)
  from safetensors.numpy import load_file
  state = load_file(str(tmp_path / "model.safetensors"))
  (tmp_path / "model.safetensors").unlink()
  torch.save({"bert." + k: torch.from_numpy(v) for k, v in state.items()},
             tmp_path / "pytorch_model.bin")
  config, params = hf_io.load_hf_dir(tmp_path)
  assert config == tiny.config
  assert_same_params(params, tiny.params)


def test_sentence_transformers_pooling_is_detected(tmp_path):
  """A LaBSE-like directory: CLS pooling declared only in 1_Pooling/config.json."""
  tiny = models.tiny_random_model(seed=5, pooling="cls")
  hf_io.save_hf_dir(tmp_path, tiny.config, tiny.params, tiny.tokenizer)
  assert hf_io.read_config(tmp_path).pooling == "cls"
  (tmp_path / "modules.json").unlink()
  shutil.rmtree(tmp_path / "1_Pooling")
  assert hf_io.read_config(tmp_path).pooling == "mean"  # no sentence-transformers files


def test_a_model_directory_is_read_again_only_when_it_changed(tmp_path):
  """`load_model` keeps the last directories it read: a second load gives equal parameters,
  its own tokenizer and its own prompts; rewriting the weights (another model saved in the
  same place) is seen at once."""
  first, second = models.tiny_random_model(seed=3), models.tiny_random_model(seed=4)
  path = tmp_path / "model"
  hf_io.save_hf_dir(path, first.config, first.params, first.tokenizer)
  a = models.load_model(str(path))
  b = models.load_model(str(path))
  assert_same_params(a.params, first.params) and assert_same_params(b.params, first.params)
  assert a.tokenizer is not b.tokenizer and a.prompts is not b.prompts
  b.tokenizer.add_tokens(["<only-in-b>"])
  assert len(a.tokenizer) == len(first.tokenizer) != len(b.tokenizer)
  cached = jax.tree.leaves(models._HF_DIRS[next(reversed(models._HF_DIRS))][1])
  assert not any(leaf.flags.writeable for leaf in cached)  # nobody edits the shared copy
  shutil.rmtree(path)
  hf_io.save_hf_dir(path, second.config, second.params, second.tokenizer)
  assert_same_params(models.load_model(str(path)).params, second.params)
