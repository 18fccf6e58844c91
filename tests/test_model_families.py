"""XLM-R and LaBSE end to end: load, match PyTorch, train 3 steps, export, match again.

Tiny random Hugging Face models of each architecture are built here with
`transformers` (XLMRobertaModel: positions offset by the padding id, mean
pooling, one token type; BertModel with WordPiece ids, pad id 0, and LaBSE's
sentence-transformers modules: CLS pooling -> Dense(tanh) -> Normalize). The
truths are PyTorch `transformers` (pooling and normalisation done here in torch)
and `sentence-transformers` loading the same directories, before training and on
the export of a 3-step training run (`train.train`, synthetic batches, the model
taken from the directory with no per-architecture code in the trainer).
"""
import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models

from configs import tiny as tiny_config
from data_pipelines import tokenization
from mlir_train import encode, encoder, export, models, prompts, train

pytestmark = [pytest.mark.torch]

XLMR_TEXTS = ["hello", "what is the capital of russia? это москва", "",
              "a longer text: what is the weather in moscow", "Ελλάδα and مصر"]
LABSE_TEXTS = ["hello world", "what is the capital of russia?", "",
               "a much longer text about the weather, the capital, " * 2, "zebra."]
HIDDEN = 32


def small_bert_config(cls, **kw):
  # A wider initialisation than BERT's 0.02, so that different texts get clearly
  # different embeddings (the comparisons below then discriminate).
  return cls(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, initializer_range=0.2, **kw)


def make_xlmr_dir(path):
  """A random XLMRobertaModel + a SentencePiece-style Unigram tokenizer, no ST files."""
  vocab = models.tiny_vocabulary(200)
  config = small_bert_config(transformers.XLMRobertaConfig, vocab_size=len(vocab),
                             max_position_embeddings=66, type_vocab_size=1, pad_token_id=1)
  torch.manual_seed(0)
  transformers.XLMRobertaModel(config).save_pretrained(str(path))
  tokenization.unigram_tokenizer(vocab, model_max_length=64).save_pretrained(str(path))
  return path


def make_labse_dir(path):
  """A random BertModel + WordPiece tokenizer, saved as sentence-transformers saves LaBSE:
  Transformer -> Pooling(cls) -> Dense(hidden, hidden, Tanh; BERT's pooler weights) ->
  Normalize."""
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ",", ".", "the", "what", "is",
           "of", "capital", "hello", "world", "weather", "text", "about"]
  words += list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
  tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)},
                                         do_lower_case=True, model_max_length=64)
  config = small_bert_config(transformers.BertConfig, vocab_size=len(words),
                             max_position_embeddings=64, pad_token_id=0)
  torch.manual_seed(1)
  bert = transformers.BertModel(config)
  hf_dir = path.parent / (path.name + "_hf")
  bert.save_pretrained(str(hf_dir))
  tokenizer.save_pretrained(str(hf_dir))
  dense = st_models.Dense(HIDDEN, HIDDEN, activation_function=torch.nn.Tanh(),
                          init_weight=bert.pooler.dense.weight.detach().clone(),
                          init_bias=bert.pooler.dense.bias.detach().clone())
  st = SentenceTransformer(modules=[st_models.Transformer(str(hf_dir)),
                                    st_models.Pooling(HIDDEN, pooling_mode="cls"), dense,
                                    st_models.Normalize()], device="cpu")
  st.save(str(path))
  return path


def train_3_steps(model_dir, workdir, **overrides):
  """`train.train` on synthetic batches, starting from `model_dir`."""
  config = tiny_config.get_config()
  config.model = str(model_dir)
  config.total_steps = 3
  config.warmup_steps = 1
  config.checkpoint_every_steps = 3
  for key, value in overrides.items():
    setattr(config, key, value)
  summary = train.train(config, workdir)
  assert summary["final_step"] == 3
  return workdir


def cosines(a, b):
  return (np.asarray(a) * np.asarray(b)).sum(1)


def torch_embed(model, tokenizer, texts, pooling, dense_tanh=False):
  """Reference embedding in torch: pooling (+ BERT's pooler) + L2 normalisation."""
  batch = tokenizer(texts, padding=True, return_tensors="pt")
  with torch.no_grad():
    out = model(**batch)
  if dense_tanh:
    pooled = out.pooler_output  # tanh(dense(hidden[:, 0]))
  elif pooling == "cls":
    pooled = out.last_hidden_state[:, 0]
  else:
    mask = batch["attention_mask"][..., None].float()
    pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
  return torch.nn.functional.normalize(pooled, dim=-1).numpy(), batch["input_ids"].numpy()


def check_against_sentence_transformers(model, st_dir, texts, kind="query"):
  """Same token ids and cosine >= 0.9999 against sentence-transformers on `st_dir`."""
  st = SentenceTransformer(str(st_dir), device="cpu")
  prompt = st.prompts.get(kind, st.prompts.get("document", "") if kind == "passage" else "")
  assert prompt == model.prompts[kind]
  ref = st.encode(texts, prompt=prompt, convert_to_numpy=True)
  ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)  # no-op with a Normalize module
  st_ids = st.tokenize([prompt + t for t in texts])["input_ids"].numpy()
  ours_ids = tokenization.tokenize(model.tokenizer, texts, kind, 64, prompts=model.prompts)
  np.testing.assert_array_equal(ours_ids["input_ids"], st_ids)
  got = encode.embed(model, texts, kind, batch_size=4, progress=False)
  cos = cosines(got, ref)
  assert cos.min() >= 0.9999, cos
  return got, cos


def assert_discriminative(vectors):
  """Different texts get clearly different unit vectors (so a match means something)."""
  sims = vectors @ vectors.T
  assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99, sims


def test_xlm_roberta_end_to_end(tmp_path):
  src = make_xlmr_dir(tmp_path / "xlmr-tiny")
  base = models.load_model(str(src))
  assert base.config.position_style == "roberta" and base.config.pooling == "mean"
  assert base.config.type_vocab_size == 1 and not base.config.pooler_dense
  assert base.prompts == prompts.NONE  # XLM-R: no prompts
  assert isinstance(base.module, encoder.Encoder)

  # The loaded model against transformers on the original directory.
  tm = transformers.AutoModel.from_pretrained(str(src)).eval()
  assert type(tm).__name__ == "XLMRobertaModel"
  ref, ids = torch_embed(tm, transformers.AutoTokenizer.from_pretrained(str(src)), XLMR_TEXTS,
                         "mean")
  np.testing.assert_array_equal(
      tokenization.tokenize(base.tokenizer, XLMR_TEXTS, "query", 64, prompts=base.prompts)
      ["input_ids"], ids)
  got = encode.embed(base, XLMR_TEXTS, "query", batch_size=4, progress=False)
  assert cosines(got, ref).min() >= 0.9999, cosines(got, ref)
  assert_discriminative(got)
  # ... and against sentence-transformers on it (no ST files: Transformer + mean pooling).
  check_against_sentence_transformers(base, src, XLMR_TEXTS)

  workdir = train_3_steps(src, tmp_path / "run")
  trained = models.load_model(str(workdir))
  assert trained.prompts == prompts.NONE  # inherited from the base model
  moved = encode.embed(trained, XLMR_TEXTS, "query", batch_size=4, progress=False)
  assert cosines(moved, got).min() < 0.9999  # training changed the model

  out = tmp_path / "export"
  assert export.main(["--model", str(workdir), "--out", str(out)]) == 0
  st_config = json.loads((out / "config_sentence_transformers.json").read_text())
  assert st_config["prompts"] == {"query": "", "document": "", "passage": ""}  # not E5's
  tm, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
  assert type(tm).__name__ == "XLMRobertaModel" and not info["missing_keys"]
  ref, ids = torch_embed(tm.eval(), transformers.AutoTokenizer.from_pretrained(str(out)),
                         XLMR_TEXTS, "mean")
  np.testing.assert_array_equal(
      tokenization.tokenize(trained.tokenizer, XLMR_TEXTS, "passage", 64,
                            prompts=trained.prompts)["input_ids"], ids)
  cos = cosines(encode.embed(trained, XLMR_TEXTS, "passage", batch_size=4, progress=False), ref)
  assert cos.min() >= 0.9999, cos
  check_against_sentence_transformers(trained, out, XLMR_TEXTS, "query")
  check_against_sentence_transformers(trained, out, XLMR_TEXTS, "passage")


def test_labse_end_to_end(tmp_path):
  src = make_labse_dir(tmp_path / "labse-tiny")
  base = models.load_model(str(src))
  assert base.config.pooling == "cls" and base.config.pooler_dense
  assert base.config.position_style == "bert" and base.config.pad_token_id == 0
  assert base.prompts == prompts.NONE  # LaBSE: no prompts
  got, _ = check_against_sentence_transformers(base, src, LABSE_TEXTS)
  assert_discriminative(got)
  # Not vacuous: without the Dense(tanh) head the embedding is another one.
  no_head = dataclasses.replace(base.config, pooler_dense=False)
  plain = dataclasses.replace(base, config=no_head, module=encoder.Encoder(no_head),
                              params={k: v for k, v in base.params.items() if k != "pooler_dense"})
  assert cosines(encode.embed(plain, LABSE_TEXTS, "query", batch_size=4, progress=False),
                 got).max() < 0.99

  workdir = train_3_steps(src, tmp_path / "run")
  trained = models.load_model(str(workdir))
  assert trained.config.pooler_dense and trained.prompts == prompts.NONE
  assert cosines(encode.embed(trained, LABSE_TEXTS, "query", batch_size=4, progress=False),
                 got).min() < 0.9999  # training changed the model

  out = tmp_path / "export"
  assert export.main(["--model", str(workdir), "--out", str(out)]) == 0
  modules = [m["type"].rsplit(".", 1)[-1]
             for m in json.loads((out / "modules.json").read_text())]
  assert modules == ["Transformer", "Pooling", "Dense", "Normalize"]
  # transformers: BertModel's pooler_output is tanh(dense(CLS)), the trained head.
  tm, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
  assert type(tm).__name__ == "BertModel" and not info["missing_keys"]
  ref, ids = torch_embed(tm.eval(), transformers.AutoTokenizer.from_pretrained(str(out)),
                         LABSE_TEXTS, "cls", dense_tanh=True)
  np.testing.assert_array_equal(
      tokenization.tokenize(trained.tokenizer, LABSE_TEXTS, "query", 64,
                            prompts=trained.prompts)["input_ids"], ids)
  cos = cosines(encode.embed(trained, LABSE_TEXTS, "query", batch_size=4, progress=False), ref)
  assert cos.min() >= 0.9999, cos
  check_against_sentence_transformers(trained, out, LABSE_TEXTS, "query")
  # The export loads back into the same config.
  assert models.load_model(str(out)).config == trained.config


def test_labse_uses_the_sentence_transformers_dense_weights(tmp_path):
  """When 2_Dense differs from BertModel's pooler, sentence-transformers uses 2_Dense; so do we."""
  src = make_labse_dir(tmp_path / "labse-tiny")
  from safetensors.numpy import load_file, save_file
  dense_file = src / "2_Dense" / "model.safetensors"
  weights = load_file(str(dense_file))
  rng = np.random.default_rng(0)
  weights = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in weights.items()}
  save_file(weights, str(dense_file))
  check_against_sentence_transformers(models.load_model(str(src)), src, LABSE_TEXTS)


def test_unsupported_dense_module_is_refused(tmp_path):
  src = make_labse_dir(tmp_path / "labse-tiny")
  config_file = src / "2_Dense" / "config.json"
  dense = json.loads(config_file.read_text())
  dense["activation_function"] = "torch.nn.modules.activation.ReLU"
  config_file.write_text(json.dumps(dense))
  with pytest.raises(models.ModelLoadError, match="unsupported Dense module"):
    models.load_model(str(src))
