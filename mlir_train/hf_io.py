"""Hugging Face checkpoint directories <-> (EncoderConfig, Flax params).

Import reads config.json and model.safetensors (or pytorch_model.bin) of a
BERT-family model (BERT, XLM-RoBERTa, multilingual-e5, LaBSE), strips the
"bert." / "roberta." prefix, drops heads we do not use (pooler, MLM head),
renames `LayerNorm.weight` -> `scale` and transposes dense kernels from
PyTorch's [out, in] to Flax's [in, out]. The pooling (mean or CLS) comes from a
sentence-transformers `1_Pooling/config.json` when present, else mean. A
sentence-transformers Dense module after the pooling (LaBSE: `2_Dense`,
hidden -> hidden with tanh) becomes the encoder's `pooler_dense` head, with the
Dense module's own weights (what sentence-transformers computes; in LaBSE they
equal BERT's `pooler.dense`); any other Dense module is refused.

Export (`save_hf_dir`) writes a directory that both `transformers.AutoModel`
and `sentence_transformers.SentenceTransformer` load: config.json,
model.safetensors, tokenizer files, modules.json, sentence_bert_config.json,
1_Pooling/config.json, [2_Dense/ (pooler_dense models, e.g. LaBSE),] a Normalize
module and config_sentence_transformers.json with the model's prompts. The
state dict's `pooler.dense` holds the pooler_dense weights (so transformers'
`pooler_output` is LaBSE's pre-normalisation embedding), else an identity.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from typing import Any, Iterator

import jax
import numpy as np

from data_pipelines.errors import ProjectError
from mlir_train import encoder as encoder_lib

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
PROMPTS = {"query": "query: ", "passage": "passage: "}  # E5's: `save_hf_dir(prompts=None)`
# config_sentence_transformers.json prompt name -> our kind: every name sentence-transformers
# reads ("query" for encode_query, "document" first for encode_document; without "document"
# it fills in None and encodes passages bare), "passage" kept for encode(prompt_name=...).
ST_PROMPT_NAMES = {"query": "query", "document": "passage", "passage": "passage"}


def sentence_transformers_prompts(prompts: dict[str, str] | None) -> dict[str, str]:
  """{"query", "passage"} (None: E5's) -> the prompts an export writes (`ST_PROMPT_NAMES`)."""
  prompts = PROMPTS if prompts is None else prompts
  return {name: prompts[kind] for name, kind in ST_PROMPT_NAMES.items()}
_ROBERTA_TYPES = ("xlm-roberta", "roberta", "camembert")
_SUPPORTED_TYPES = ("bert",) + _ROBERTA_TYPES
# State-dict entries that are not part of the encoder (heads, buffers).
_IGNORED = re.compile(r"^(pooler\.|cls\.|lm_head\.|embeddings\.position_ids$)")


class ModelLoadError(ProjectError):
  """A model directory or file that cannot be loaded; the message says which and why."""


# --------------------------------------------------------------------------- names

def hf_names(config: encoder_lib.EncoderConfig) -> Iterator[tuple[tuple[str, ...], str, bool]]:
  """(flax path, HF state-dict name, transpose?) for every encoder parameter."""
  def dense(flax_prefix, hf_prefix):
    yield flax_prefix + ("kernel",), hf_prefix + ".weight", True
    yield flax_prefix + ("bias",), hf_prefix + ".bias", False

  def layer_norm(flax_prefix, hf_prefix):
    yield flax_prefix + ("scale",), hf_prefix + ".weight", False
    yield flax_prefix + ("bias",), hf_prefix + ".bias", False

  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    yield ("embeddings", name, "embedding"), f"embeddings.{name}.weight", False
  yield from layer_norm(("embeddings", "LayerNorm"), "embeddings.LayerNorm")
  for i in range(config.num_hidden_layers):
    f, h = f"layer_{i}", f"encoder.layer.{i}"
    for proj in ("query", "key", "value"):
      yield from dense((f, "attention_self", proj), f"{h}.attention.self.{proj}")
    yield from dense((f, "attention_output_dense"), f"{h}.attention.output.dense")
    yield from layer_norm((f, "attention_output_LayerNorm"), f"{h}.attention.output.LayerNorm")
    yield from dense((f, "intermediate_dense"), f"{h}.intermediate.dense")
    yield from dense((f, "output_dense"), f"{h}.output.dense")
    yield from layer_norm((f, "output_LayerNorm"), f"{h}.output.LayerNorm")
  if config.pooler_dense:
    yield from dense(("pooler_dense",), "pooler.dense")


def _strip(name: str) -> str:
  for prefix in ("bert.", "roberta.", "model."):
    if name.startswith(prefix):
      name = name[len(prefix):]
  # Old TF-converted checkpoints call LayerNorm parameters gamma / beta.
  return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


# --------------------------------------------------------------------------- import

def read_config(path: str | os.PathLike) -> encoder_lib.EncoderConfig:
  """EncoderConfig from config.json (+ sentence-transformers pooling if present)."""
  path = pathlib.Path(path)
  config_file = path / "config.json"
  if not path.is_dir():
    raise ModelLoadError(f"{path}: not a directory")
  if not config_file.is_file():
    raise ModelLoadError(f"{path}: no config.json, so this is not a Hugging Face model directory")
  try:
    hf = json.loads(config_file.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ModelLoadError(f"{config_file}: not valid JSON ({e})") from None
  model_type = hf.get("model_type")
  if model_type not in _SUPPORTED_TYPES:
    raise ModelLoadError(
        f"{config_file}: unsupported model_type {model_type!r} "
        f"(architectures {hf.get('architectures')}); supported: {', '.join(_SUPPORTED_TYPES)}")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ModelLoadError(f"{config_file}: unsupported position_embedding_type "
                         f"{hf['position_embedding_type']!r} (only 'absolute')")
  roberta = model_type in _ROBERTA_TYPES
  try:
    config = encoder_lib.EncoderConfig(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        max_position_embeddings=int(hf["max_position_embeddings"]),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        hidden_act=str(hf.get("hidden_act", "gelu")),
        pad_token_id=int(hf.get("pad_token_id", 1 if roberta else 0)),
        position_style="roberta" if roberta else "bert",
        pooling=read_pooling(path),
        pooler_dense=dense_module_dir(path) is not None,
        model_type="xlm-roberta" if roberta else "bert")
  except KeyError as e:
    raise ModelLoadError(f"{config_file}: missing field {e.args[0]!r}") from None
  try:
    encoder_lib._act(config.hidden_act)
  except ValueError:
    raise ModelLoadError(f"{config_file}: unsupported hidden_act {config.hidden_act!r}") from None
  if config.hidden_size % config.num_attention_heads:
    raise ModelLoadError(f"{config_file}: hidden_size {config.hidden_size} is not divisible "
                         f"by num_attention_heads {config.num_attention_heads}")
  return config


def st_modules(path: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  """(class name, directory) of each sentence-transformers module, in order; [] without
  modules.json."""
  modules_file = path / "modules.json"
  if not modules_file.is_file():
    return []
  try:
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    return [(m.get("type", "").rsplit(".", 1)[-1], path / m.get("path", ""))
            for m in sorted(modules, key=lambda m: int(m.get("idx", 0)))]
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as e:
    raise ModelLoadError(f"{modules_file}: unreadable sentence-transformers modules ({e})") from None


def dense_module_dir(path: pathlib.Path) -> pathlib.Path | None:
  """The directory of a LaBSE-style Dense module (after Pooling: hidden -> hidden, bias,
  tanh), None when there is no Dense module; `ModelLoadError` for any other Dense."""
  modules = st_modules(path)
  dense = [(i, d) for i, (kind, d) in enumerate(modules) if kind == "Dense"]
  if not dense:
    return None
  pooling = [i for i, (kind, _) in enumerate(modules) if kind == "Pooling"]
  index, directory = dense[0]
  if len(dense) > 1 or not pooling or index < pooling[0]:
    raise ModelLoadError(f"{path}/modules.json: unsupported modules {[k for k, _ in modules]} "
                         f"(one Dense module after the Pooling module is supported, as LaBSE)")
  config_file = directory / "config.json"
  try:
    dc = json.loads(config_file.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ModelLoadError(f"{config_file}: unreadable Dense module config ({e})") from None
  hidden = json.loads((path / "config.json").read_text(encoding="utf-8")).get("hidden_size")
  activation = str(dc.get("activation_function", "torch.nn.modules.activation.Tanh"))
  if (dc.get("in_features") != hidden or dc.get("out_features") != hidden
      or not dc.get("bias", True) or activation.rsplit(".", 1)[-1] != "Tanh"):
    raise ModelLoadError(
        f"{config_file}: unsupported Dense module {dc} (only LaBSE's: in_features = "
        f"out_features = hidden_size {hidden}, bias, Tanh)")
  return directory


def read_dense_weights(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """{"pooler.dense.weight": [out, in], "pooler.dense.bias": [out]} from a Dense module."""
  _, raw = read_state_dict(directory)
  missing = {"linear.weight", "linear.bias"} - set(raw)
  if missing:
    raise ModelLoadError(f"{directory}: Dense module weights lack {sorted(missing)}")
  return {"pooler.dense.weight": raw["linear.weight"], "pooler.dense.bias": raw["linear.bias"]}


def read_pooling(path: pathlib.Path) -> str:
  """"cls" or "mean" from sentence-transformers files; "mean" when there are none."""
  pooling_dir = path / "1_Pooling"
  for kind, directory in st_modules(path):
    if kind == "Pooling":
      pooling_dir = directory
  pooling_file = pooling_dir / "config.json"
  if not pooling_file.is_file():
    return "mean"
  pc = json.loads(pooling_file.read_text(encoding="utf-8"))
  if pc.get("pooling_mode_cls_token") or pc.get("pooling_mode") == "cls":
    return "cls"
  if pc.get("pooling_mode_mean_tokens") or pc.get("pooling_mode") == "mean":
    return "mean"
  raise ModelLoadError(f"{pooling_file}: unsupported pooling {pc} (only mean or CLS)")


def read_state_dict(path: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
  """(weight file, name -> float32 array) from model.safetensors or pytorch_model.bin."""
  st_file, bin_file = path / SAFETENSORS, path / TORCH_BIN
  if st_file.is_file():
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
      tensors = load_file(str(st_file))
    except (SafetensorError, OSError, ValueError) as e:
      raise ModelLoadError(f"{st_file}: unreadable or truncated safetensors file ({e})") from None
    return st_file, {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  if bin_file.is_file():
    try:
      import torch
    except ImportError:
      raise ModelLoadError(f"{bin_file}: reading pytorch_model.bin needs torch; "
                           "convert it to model.safetensors or install torch") from None
    try:
      sd = torch.load(str(bin_file), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt pickles/zips
      raise ModelLoadError(f"{bin_file}: unreadable or truncated PyTorch file ({e})") from None
    return bin_file, {k: v.float().numpy() for k, v in sd.items() if hasattr(v, "float")}
  raise ModelLoadError(f"{path}: no weights file ({SAFETENSORS} or {TORCH_BIN})")


def load_hf_dir(path: str | os.PathLike) -> tuple[encoder_lib.EncoderConfig, dict]:
  """(config, float32 Flax params) from a Hugging Face model directory."""
  path = pathlib.Path(path)
  config = read_config(path)
  weight_file, raw = read_state_dict(path)
  state = {_strip(k): v for k, v in raw.items()}
  if config.pooler_dense:
    dense = read_dense_weights(dense_module_dir(path))
    for name, value in dense.items():
      if name in state and state[name].shape == value.shape and \
          not np.allclose(state[name], value, atol=1e-6):
        logging.warning("%s: %s differs from the sentence-transformers Dense module's; "
                        "using the Dense module's (what sentence-transformers computes)",
                        weight_file, name)
    state.update(dense)
  expected = jax.eval_shape(lambda: encoder_lib.init_params(config))
  params: dict[str, Any] = {}
  used = set()
  for flax_path, hf_name, transpose in hf_names(config):
    if hf_name not in state:
      raise ModelLoadError(f"{weight_file}: missing weight {hf_name!r} "
                           f"(needed for {'/'.join(flax_path)})")
    value = state[hf_name].T if transpose else state[hf_name]
    want = _get(expected, flax_path).shape
    if value.shape != want:
      raise ModelLoadError(f"{weight_file}: weight {hf_name!r} has shape {state[hf_name].shape}, "
                           f"config.json implies {want[::-1] if transpose else want}")
    if not np.isfinite(value).all():
      raise ModelLoadError(f"{weight_file}: weight {hf_name!r} holds NaN or infinity "
                           f"({int((~np.isfinite(value)).sum())} values)")
    _set(params, flax_path, np.ascontiguousarray(value))
    used.add(hf_name)
  unexpected = sorted(k for k in state if k not in used and not _IGNORED.match(k))
  if unexpected:
    logging.warning("%s: ignoring %d weights not used by the encoder, e.g. %s",
                    weight_file, len(unexpected), unexpected[:5])
  return config, params


def check_finite(params, where: str) -> None:
  """`ModelLoadError` naming the first parameter that holds NaN or infinity."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not np.isfinite(np.asarray(leaf)).all():
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      raise ModelLoadError(f"{where}: parameter {name} holds NaN or infinity")


def load_tokenizer(path: str | os.PathLike):
  """The directory's tokenizer (transformers AutoTokenizer, fast)."""
  from transformers import AutoTokenizer
  path = pathlib.Path(path)
  if not any((path / f).is_file() for f in
             ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "tokenizer_config.json")):
    raise ModelLoadError(f"{path}: no tokenizer files (tokenizer.json, sentencepiece.bpe.model "
                         "or vocab.txt)")
  try:
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
  except Exception as e:  # transformers raises OSError/ValueError/... for broken files
    raise ModelLoadError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- export

def hf_config_dict(config: encoder_lib.EncoderConfig) -> dict[str, Any]:
  """A transformers config.json for BertModel or XLMRobertaModel."""
  roberta = config.model_type == "xlm-roberta"
  if roberta != (config.position_style == "roberta"):
    raise ValueError(f"model_type {config.model_type!r} does not match "
                     f"position_style {config.position_style!r}")
  return {
      "architectures": ["XLMRobertaModel" if roberta else "BertModel"],
      "model_type": config.model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_hidden_layers,
      "num_attention_heads": config.num_attention_heads,
      "intermediate_size": config.intermediate_size,
      "max_position_embeddings": config.max_position_embeddings,
      "type_vocab_size": config.type_vocab_size,
      "layer_norm_eps": config.layer_norm_eps,
      "hidden_act": config.hidden_act,
      "hidden_dropout_prob": 0.1,
      "attention_probs_dropout_prob": 0.1,
      "initializer_range": 0.02,
      "position_embedding_type": "absolute",
      "pad_token_id": config.pad_token_id,
      "bos_token_id": 0,
      "eos_token_id": 2,
      "dtype": "float32",
  }


def to_state_dict(config: encoder_lib.EncoderConfig, params) -> dict[str, np.ndarray]:
  """HF state dict (float32, [out, in] kernels), pooler included.

  BertModel / XLMRobertaModel have a pooler (dense + tanh over the first
  token). With `config.pooler_dense` (LaBSE) it holds the model's head, so
  `pooler_output` is the embedding before normalisation; otherwise retrieval
  does not use it and an identity pooler is written so that transformers loads
  the directory without "newly initialized weights" noise.
  """
  sd = {}
  for flax_path, hf_name, transpose in hf_names(config):
    value = np.asarray(_get(params, flax_path), np.float32)
    sd[hf_name] = np.ascontiguousarray(value.T if transpose else value)
  if not config.pooler_dense:
    sd["pooler.dense.weight"] = np.eye(config.hidden_size, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(config.hidden_size, np.float32)
  return sd


def save_hf_dir(out_dir: str | os.PathLike, config: encoder_lib.EncoderConfig, params,
                tokenizer, prompts: dict[str, str] | None = None) -> pathlib.Path:
  """Write a transformers + sentence-transformers loadable model directory.

  `prompts`: the model's {"query", "passage"} prompts (`LoadedModel.prompts`),
  written to config_sentence_transformers.json under every name sentence-transformers
  uses (`ST_PROMPT_NAMES`), with no default prompt; None: the E5 prompts (`PROMPTS`).
  Modules: Transformer, Pooling, Dense (pooler_dense only), Normalize.
  """
  from safetensors.numpy import save_file
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)

  def write_json(rel: str, obj) -> None:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

  import transformers
  # transformers_version, as every Hugging Face config carries: without it transformers
  # 5.x takes a local directory for a Mistral tokenizer and warns of a wrong regex.
  write_json("config.json", {**hf_config_dict(config),
                             "transformers_version": transformers.__version__})
  state = to_state_dict(config, params)
  save_file(state, str(out / SAFETENSORS), metadata={"format": "pt"})
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(out / SAFETENSORS, 0o666 & ~umask)  # safetensors writes 0600; match the other files
  tokenizer.save_pretrained(str(out))
  _portable_tokenizer_class(out / "tokenizer_config.json")
  positions = config.max_position_embeddings
  if config.position_style == "roberta":
    positions -= config.pad_token_id + 1  # positions start at pad_token_id + 1
  max_seq_length = int(min(tokenizer.model_max_length, positions))
  modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
  if config.pooler_dense:
    modules.append(("Dense", "2_Dense"))
    write_json("2_Dense/config.json", {
        "in_features": config.hidden_size, "out_features": config.hidden_size, "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"})
    save_file({"linear.weight": state["pooler.dense.weight"],
               "linear.bias": state["pooler.dense.bias"]},
              str(out / "2_Dense" / SAFETENSORS), metadata={"format": "pt"})
    os.chmod(out / "2_Dense" / SAFETENSORS, 0o666 & ~umask)
  normalize_dir = f"{len(modules)}_Normalize"
  modules.append(("Normalize", normalize_dir))
  write_json("modules.json", [
      {"idx": i, "name": str(i), "path": rel, "type": f"sentence_transformers.models.{kind}"}
      for i, (kind, rel) in enumerate(modules)])
  write_json("sentence_bert_config.json", {"max_seq_length": max_seq_length,
                                           "do_lower_case": False})
  write_json("1_Pooling/config.json", {
      "word_embedding_dimension": config.hidden_size,
      "pooling_mode_cls_token": config.pooling == "cls",
      "pooling_mode_mean_tokens": config.pooling == "mean",
      "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False,
      "pooling_mode_weightedmean_tokens": False,
      "pooling_mode_lasttoken": False,
      "include_prompt": True,
  })
  (out / normalize_dir).mkdir(exist_ok=True)
  write_json("config_sentence_transformers.json", {
      "prompts": sentence_transformers_prompts(prompts),
      "default_prompt_name": None, "similarity_fn_name": "cosine"})
  return out


def _portable_tokenizer_class(tokenizer_config: pathlib.Path) -> None:
  """Name the generic fast tokenizer class that transformers 4.x and 5.x both know.

  transformers 5 writes "TokenizersBackend" for a tokenizer built from a
  `tokenizers` object; 4.x calls the same class "PreTrainedTokenizerFast".
  """
  if not tokenizer_config.is_file():
    return
  tc = json.loads(tokenizer_config.read_text(encoding="utf-8"))
  if tc.get("tokenizer_class") == "TokenizersBackend":
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
