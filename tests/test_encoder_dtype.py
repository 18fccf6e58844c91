"""bfloat16 compute: the same model, float32 unit vectors, close to float32 compute."""
import jax.numpy as jnp
import numpy as np
import pytest

from mlir_train import encode, models

# Different lengths (so rows are padded within a batch), scripts the tiny
# vocabulary covers (Latin, Cyrillic, Greek, Arabic) and one it maps to <unk>.
TEXTS = [
    "what is the capital of russia?",
    "это москва",
    "η πρωτεύουσα της ελλάδας είναι η αθήνα",
    "عاصمة مصر هي القاهرة",
    "who was the first president of the united states and when was he elected?",
    "日本の首都は東京です",
    "a",
    "",
]


@pytest.fixture(scope="module")
def embeddings():
  f32 = models.load_model("tiny-random")
  bf16 = models.load_model("tiny-random", dtype=jnp.bfloat16)
  return (encode.embed(f32, TEXTS, "query", batch_size=len(TEXTS), progress=False),
          encode.embed(bf16, TEXTS, "query", batch_size=len(TEXTS), progress=False), bf16)


def test_bfloat16_model_computes_in_bfloat16(embeddings):
  _, _, bf16 = embeddings
  assert bf16.module.dtype == jnp.bfloat16
  ids = np.asarray(bf16.tokenizer(["what is the capital"])["input_ids"], np.int32)
  states = bf16.module.apply({"params": bf16.params}, ids, np.ones_like(ids),
                             method=bf16.module.hidden_states)
  assert states.dtype == jnp.bfloat16
  # Parameters stay float32 (only the compute dtype changes).
  assert bf16.params["embeddings"]["word_embeddings"]["embedding"].dtype == jnp.float32


def test_bfloat16_embeddings_close_to_float32(embeddings):
  f32, bf16, _ = embeddings
  assert bf16.dtype == np.float32 and bf16.shape == f32.shape
  assert np.all(np.isfinite(bf16))
  np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
  cos = (bf16 * f32).sum(1)
  assert cos.min() >= 0.99, dict(zip(TEXTS, cos))
  # bfloat16 really ran (results are not bit-identical to float32) ...
  assert np.abs(bf16 - f32).max() > 1e-4
  # ... and the 0.99 bound is informative: different texts are further apart
  # in float32 than either precision is from the other on the same text.
  sim = f32 @ f32.T
  off_diagonal = sim[~np.eye(len(TEXTS), dtype=bool)]
  assert off_diagonal.max() < cos.min(), (off_diagonal.max(), cos.min())


def test_cpu_bfloat16_dots_accumulate_in_float32():
  """`encoder.dot_general` on a CPU: bfloat16 x bfloat16 is the float32 product of the
  bfloat16 operands rounded once to bfloat16 (within one bfloat16 step where float32
  summation order differs), its HLO dot returns float32 (XLA's fast CPU path), and float32
  operands go through `lax.dot_general` unchanged, bit for bit."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mlir_train import encoder
  rng = np.random.default_rng(0)
  a32 = rng.standard_normal((16, 96)).astype(np.float32)
  b32 = rng.standard_normal((96, 24)).astype(np.float32)
  a, b = jnp.asarray(a32, jnp.bfloat16), jnp.asarray(b32, jnp.bfloat16)
  dn = (((1,), (0,)), ((), ()))
  got = jax.jit(lambda x, y: encoder.dot_general(x, y, dn))(a, b)
  assert got.dtype == jnp.bfloat16
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  # one bfloat16 step of the result, plus float32 summation error (near-cancelling sums)
  scale = np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64))
  step = np.abs(np.asarray(jnp.asarray(exact, jnp.bfloat16), np.float64)) * 2 ** -7 + 1e-6 * scale
  assert np.all(np.abs(np.asarray(got, np.float64) - exact) <= step)
  hlo = jax.jit(lambda x, y: encoder.dot_general(x, y, dn)).lower(a, b).as_text()
  assert "-> tensor<16x24xf32>" in hlo or "f32[16,24]" in hlo
  for x, y in ((a32, b32), (a, b)):   # einsum's path too
    via = jnp.einsum("ik,kj->ij", x, y, _dot_general=encoder.dot_general)
    assert via.dtype == x.dtype
  f32 = jax.jit(lambda x, y: encoder.dot_general(x, y, dn))(a32, b32)
  np.testing.assert_array_equal(f32, jax.jit(lambda x, y: jax.lax.dot_general(x, y, dn))(a32, b32))
