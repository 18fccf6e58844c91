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
