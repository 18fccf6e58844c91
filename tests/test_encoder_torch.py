"""The Flax encoder against PyTorch transformers on the same exported weights.

Reference: transformers' BertModel / XLMRobertaModel, loaded from the directory
`hf_io.save_hf_dir` wrote; pooling (mean over real tokens, or CLS) and L2
normalisation are done here in torch, independently of `encoder.pool`.
"""
import numpy as np
import pytest
import torch
import transformers

from mlir_train import compare, e5_small, encode, hf_io, models, tokenization

SENTENCES = list(compare.WEATHER.values()) + list(compare.HOSPITAL.values())


def torch_embed(model, tokenizer, texts, pooling):
  batch = tokenizer(texts, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(input_ids=batch["input_ids"],
                   attention_mask=batch["attention_mask"]).last_hidden_state
  if pooling == "cls":
    pooled = hidden[:, 0]
  else:
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
  return torch.nn.functional.normalize(pooled, dim=-1).numpy(), batch


@pytest.fixture(scope="module")
def e5_dir():
  return e5_small.ensure_hf_dir()


def test_e5_small_matches_transformers(e5_dir):
  ours = models.load_model("e5-small")
  tm, loading_info = transformers.AutoModel.from_pretrained(
      str(e5_dir), output_loading_info=True)
  assert type(tm).__name__ == "BertModel"
  assert not loading_info["missing_keys"] and not loading_info["unexpected_keys"]
  tt = transformers.AutoTokenizer.from_pretrained(str(e5_dir))
  texts = tokenization.add_prefix(SENTENCES, "query")
  ref, batch = torch_embed(tm.eval(), tt, texts, "mean")
  # Same token ids as the transformers tokenizer loaded from the export.
  ids = tokenization.tokenize(ours.tokenizer, SENTENCES, "query", 512)
  np.testing.assert_array_equal(ids["input_ids"], batch["input_ids"].numpy())
  got = encode.embed(ours, SENTENCES, "query", batch_size=8, progress=False)
  cos = (got * ref).sum(1)
  assert cos.min() >= 0.9999, cos


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_tiny_xlm_roberta_matches_transformers(tmp_path, pooling):
  """Position ids offset by the padding id (RoBERTa style), right padding, CLS pooling."""
  tiny = models.tiny_random_model(seed=1, position_style="roberta", model_type="xlm-roberta",
                                  pooling=pooling)
  hf_io.save_hf_dir(tmp_path, tiny.config, tiny.params, tiny.tokenizer)
  tm, loading_info = transformers.AutoModel.from_pretrained(str(tmp_path),
                                                            output_loading_info=True)
  assert type(tm).__name__ == "XLMRobertaModel"
  assert not loading_info["missing_keys"]
  texts = ["hello", "what is the capital of russia? это москва", "",
           "a much longer text " * 6]
  ref, batch = torch_embed(tm.eval(), tiny.tokenizer, texts, pooling)
  assert batch["attention_mask"].sum(1).max() > 2 * batch["attention_mask"].sum(1).min()
  got = encode.embed(tiny, texts, None, batch_size=4, progress=False)
  np.testing.assert_allclose(got, ref, atol=2e-5)
  # Token states too, not only the pooled vector.
  with torch.no_grad():
    ref_states = tm(**batch).last_hidden_state.numpy()
  states = tiny.module.apply({"params": tiny.params}, batch["input_ids"].numpy(),
                             batch["attention_mask"].numpy(),
                             method=tiny.module.hidden_states)
  mask = batch["attention_mask"].numpy().astype(bool)
  np.testing.assert_allclose(np.asarray(states)[mask], ref_states[mask], atol=1e-4)
