"""A Flax dual encoder for the BERT family used by multilingual retrievers.

One module covers BERT, multilingual-e5 (BERT with 250k XLM-R pieces), XLM-RoBERTa
(positions offset by the padding id) and LaBSE (CLS pooling, then its
sentence-transformers Dense module: dense + tanh, the same weights as BERT's
pooler, `pooler_dense`; then L2 normalisation). Parameter names
mirror Hugging Face's `BertModel` / `XLMRobertaModel` state dicts so that import
and export are a mechanical rename plus a transpose of dense kernels
(see `mlir_train.hf_io`).

Parameters are kept in float32; `dtype` sets the compute dtype (float32 or
bfloat16). Sharding is applied from outside (`mlir_train.partitioning`) on the
parameter pytree, so the module itself stays plain.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Architecture of a BERT-family encoder (Hugging Face config.json fields)."""
  vocab_size: int = 250037
  hidden_size: int = 384
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 1
  # "bert": positions 0..L-1.  "roberta": pad_token_id + 1 + i for real tokens.
  position_style: str = "bert"
  # "mean" (E5) or "cls" (LaBSE).
  pooling: str = "mean"
  # LaBSE: tanh(pooled @ kernel + bias) before normalisation (params "pooler_dense",
  # HF "pooler.dense.*"; sentence-transformers' Dense(hidden, hidden, Tanh) module).
  pooler_dense: bool = False
  # Hugging Face model_type to write back on export ("bert" or "xlm-roberta").
  model_type: str = "bert"

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def tiny_config(**overrides) -> EncoderConfig:
  """A small random-weight config for tests (fast to compile and run)."""
  base = dict(vocab_size=256, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=128)
  base.update(overrides)
  return EncoderConfig(**base)


@jax.custom_vjp
def gelu_exact(x: jax.Array) -> jax.Array:
  """x * Phi(x) (erf GELU, as Hugging Face's "gelu"), with a one-pass derivative.

  Autodiff of `nn.gelu(approximate=False)` leaves XLA three elementwise passes over
  each [tokens, intermediate] activation in the backward pass (memory-bound on CPU);
  the derivative written out, Phi(x) + x * phi(x), is one: a training step 1.07x
  faster on CPU (perf/PROFILE.md, "Training step on a CPU"). Same values as autodiff (test).
  """
  return nn.gelu(x, approximate=False)


def _gelu_exact_fwd(x):
  return gelu_exact(x), x


def _gelu_exact_bwd(x, g):
  cdf = 0.5 * jax.lax.erfc(x * -0.7071067811865476)  # Phi(x) (erfc: exact in the left tail)
  pdf = jnp.exp(-0.5 * x * x) * 0.3989422804014327  # phi(x), 1/sqrt(2 pi)
  return (g * (cdf + x * pdf).astype(g.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


def _act(name: str):
  if name in ("gelu", "gelu_python"):
    return gelu_exact
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: nn.gelu(x, approximate=True)
  if name == "relu":
    return nn.relu
  raise ValueError(f"unsupported hidden_act {name!r}")


def position_ids(attention_mask: jax.Array, config: EncoderConfig) -> jax.Array:
  """Position ids as Hugging Face computes them for right-padded input."""
  batch, length = attention_mask.shape
  if config.position_style == "roberta":
    mask = attention_mask.astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + config.pad_token_id
  return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


class Embeddings(nn.Module):
  config: EncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids):
    c = self.config
    init = nn.initializers.normal(0.02)
    word = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init,
                    name="word_embeddings")(input_ids)
    pos = nn.Embed(c.max_position_embeddings, c.hidden_size,
                   embedding_init=init, name="position_embeddings")(
                       position_ids(attention_mask, c))
    typ = nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init,
                   name="token_type_embeddings")(token_type_ids)
    x = (word + pos + typ).astype(self.dtype)  # [batch, length, hidden]
    return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype,
                        name="LayerNorm")(x)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                **kwargs):
  """`lax.dot_general`, except bfloat16 x bfloat16 on a CPU: accumulated and returned in
  float32, then cast back. XLA's CPU runs that form through its fast library path (AMX
  where the CPU has it: 930-1,310 GFLOP/s on the 2-core dev machine, against 155 for a
  bfloat16 result and 180-240 for float32; perf/results/matmul_dtypes.md). The
  result is the same product rounded once to bfloat16. Other backends: unchanged."""
  if (lhs.dtype == jnp.bfloat16 and rhs.dtype == jnp.bfloat16
      and preferred_element_type in (None, jnp.bfloat16) and jax.default_backend() == "cpu"):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                               preferred_element_type=jnp.float32, **kwargs).astype(jnp.bfloat16)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                             preferred_element_type=preferred_element_type, **kwargs)


def _einsum(spec: str, a, b):
  """jnp.einsum through `dot_general` (its CPU bfloat16 path)."""
  return jnp.einsum(spec, a, b, _dot_general=dot_general)


class SelfAttention(nn.Module):
  config: EncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, attention_mask):
    c = self.config
    heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    dense = lambda name: nn.Dense(c.hidden_size, dtype=self.dtype, name=name,
                                  dot_general=dot_general)
    split = lambda t: t.reshape(t.shape[:2] + (heads, head_dim))
    q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
    return attention(q, k, v, attention_mask).reshape(x.shape[:2] + (c.hidden_size,))


def attention(q, k, v, attention_mask):
  """Softmax attention over real keys; q, k, v [batch, length, heads, head_dim].

  Laid out as [batch, heads, length, head_dim] so both products are plain batched
  matmuls, the 1/sqrt(d) scale applied to q (L*d, not L*L, multiplies), the mask
  added as a [batch, 1, 1, k_len] bias, and the softmax normalisation applied
  to the [.., q_len, head_dim] output instead of the [.., q_len, k_len]
  probabilities. On CPU this is 2-3.5x faster than the textbook form at 128-256
  tokens; scores, exp and the row sums are float32
  whatever the compute dtype. Returns [batch, q_len, heads, head_dim].
  """
  dtype = q.dtype
  scale = 1.0 / float(q.shape[-1]) ** 0.5
  q, k, v = (t.transpose(0, 2, 1, 3) for t in (q * jnp.asarray(scale, dtype), k, v))
  scores = _einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
  # Padded keys get exp(min - max) = 0 (a row with no real key at all: uniform, no NaN).
  bias = jnp.where(attention_mask > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
  scores = scores + bias[:, None, None, :]
  weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
  out = _einsum("bhqk,bhkd->bhqd", weights.astype(dtype), v).astype(jnp.float32)
  out = out / weights.sum(-1, keepdims=True)  # [batch, heads, q_len, head_dim]
  return out.astype(dtype).transpose(0, 2, 1, 3)


class Layer(nn.Module):
  """One post-LayerNorm transformer block, named like Hugging Face's BertLayer."""
  config: EncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, attention_mask):
    c = self.config
    ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    # attention/self, attention/output/{dense,LayerNorm}
    attn = SelfAttention(c, self.dtype, name="attention_self")(x, attention_mask)
    attn = nn.Dense(c.hidden_size, dtype=self.dtype, name="attention_output_dense",
                    dot_general=dot_general)(attn)
    x = ln("attention_output_LayerNorm")(attn + x)
    # intermediate/dense, output/{dense,LayerNorm}
    h = _act(c.hidden_act)(
        nn.Dense(c.intermediate_size, dtype=self.dtype, name="intermediate_dense",
                 dot_general=dot_general)(x))
    h = nn.Dense(c.hidden_size, dtype=self.dtype, name="output_dense",
                 dot_general=dot_general)(h)
    return ln("output_LayerNorm")(h + x)


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
  """Mean over real tokens or the first token; returns [batch, hidden] float32."""
  hidden = hidden.astype(jnp.float32)
  if pooling == "cls":
    return hidden[:, 0]
  if pooling == "mean":
    mask = attention_mask.astype(jnp.float32)[..., None]  # [batch, length, 1]
    return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
  raise ValueError(f"unknown pooling {pooling!r} (expected 'mean' or 'cls')")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class Encoder(nn.Module):
  """Token ids -> L2-normalised sentence embeddings.

  `__call__` returns [batch, hidden] float32 unit vectors; `hidden_states`
  returns the last layer's token states [batch, length, hidden].
  """
  config: EncoderConfig
  dtype: Any = jnp.float32
  # Rematerialise each layer in the backward pass (saves activation memory).
  remat: bool = False

  def setup(self):
    self.embeddings = Embeddings(self.config, self.dtype)
    layer_cls = nn.remat(Layer) if self.remat else Layer
    self.layers = [layer_cls(self.config, self.dtype, name=f"layer_{i}")
                   for i in range(self.config.num_hidden_layers)]
    if self.config.pooler_dense:
      self.pooler_dense = nn.Dense(self.config.hidden_size, dtype=jnp.float32)

  def hidden_states(self, input_ids, attention_mask, token_type_ids=None):
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, attention_mask, token_type_ids)
    for layer in self.layers:
      x = layer(x, attention_mask)
    return x  # [batch, length, hidden]

  def __call__(self, input_ids, attention_mask, token_type_ids=None):
    x = self.hidden_states(input_ids, attention_mask, token_type_ids)
    pooled = pool(x, attention_mask, self.config.pooling)  # [batch, hidden] float32
    if self.config.pooler_dense:
      # In float32 like the pooling: a small head, and tanh saturates in bfloat16.
      pooled = jnp.tanh(self.pooler_dense(pooled))
    return l2_normalize(pooled)


def init_params(config: EncoderConfig, seed: int = 0) -> dict:
  """Random float32 parameters (for tests and from-scratch runs)."""
  ids = jnp.ones((1, 8), jnp.int32)
  return Encoder(config).init(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))["params"]
