"""Prompts belong to the model: read from config_sentence_transformers.json, E5's for the E5
family, none otherwise; inherited by training workdirs, overridable, exported, and used when
encoding and when building training shards.

Truths: sentence-transformers applying its own prompts (`prompt_name=`) to the same
directories, and the Hugging Face tokenizer on prompt + text.
"""
import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from data_pipelines import sampler
from data_pipelines import tokenization
from mlir_train import e5_small, encode, export, models, prompts
from tests.test_model_families import cosines, make_xlmr_dir, train_3_steps
from tests.training_data_helpers import make_config

# data: the tests that take the data_dir fixture (tests/conftest.py marks them)
pytestmark = [pytest.mark.torch]

TEXTS = ["hello", "what is the capital of russia? это москва", ""]
CUSTOM = {"query": "question: ", "passage": "answer: "}


@pytest.mark.parametrize("name, want", [
    ("e5-small", prompts.E5), ("intfloat/multilingual-e5-base", prompts.E5),
    ("/models/e5_large_v2", prompts.E5), ("xlm-roberta-base", prompts.NONE),
    ("sentence-transformers/LaBSE", prompts.NONE), ("/tmp/run-abce5f12", prompts.NONE),
    ("bge-m3", prompts.NONE), ("e52-thing", prompts.NONE)])
def test_prompts_by_name(name, want):
  assert prompts.for_model(name) == want


def test_name_in_config_json_counts():
  assert prompts.for_model("/no/such/dir", {"_name_or_path": "intfloat/e5-base"}) == prompts.E5


def test_empty_sentence_transformers_prompts_fall_back_to_the_name(tmp_path):
  """sentence-transformers 6 saves {"query": "", "document": ""} by default."""
  for name, want in (("multilingual-e5-base", prompts.E5), ("LaBSE", prompts.NONE)):
    (tmp_path / name).mkdir()
    (tmp_path / name / prompts.ST_CONFIG).write_text(
        json.dumps({"prompts": {"query": "", "document": ""}}))
    assert prompts.for_model(tmp_path / name) == want


def test_default_models_keep_e5_prompts():
  assert prompts.for_model(e5_small.ensure_hf_dir()) == prompts.E5  # from its ST config
  assert models.load_model("e5-small").prompts == prompts.E5
  assert models.load_model("tiny-random-0").prompts == prompts.E5  # stands in for e5-small


@pytest.fixture(scope="module")
def custom_dir(tmp_path_factory):
  """A tiny XLM-R saved by sentence-transformers with prompts in its
  config_sentence_transformers.json ("document": sentence-transformers' usual name
  for the passage prompt)."""
  root = tmp_path_factory.mktemp("m")
  st = SentenceTransformer(str(make_xlmr_dir(root / "xlmr-hf")), device="cpu")
  st.prompts = {"query": CUSTOM["query"], "document": CUSTOM["passage"]}
  st.save(str(root / "xlmr-custom"))
  saved = json.loads((root / "xlmr-custom" / prompts.ST_CONFIG).read_text())
  assert saved["prompts"] == st.prompts
  return root / "xlmr-custom"


def test_sentence_transformers_prompts_are_read_and_used(custom_dir):
  model = models.load_model(str(custom_dir))
  assert model.prompts == CUSTOM
  st = SentenceTransformer(str(custom_dir), device="cpu")
  for kind, st_name in (("query", "query"), ("passage", "document")):
    ref = st.encode(TEXTS, prompt_name=st_name, convert_to_numpy=True)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    st_ids = st.tokenize([CUSTOM[kind] + t for t in TEXTS])["input_ids"].numpy()
    ids = tokenization.tokenize(model.tokenizer, TEXTS, kind, 64, prompts=model.prompts)
    np.testing.assert_array_equal(ids["input_ids"], st_ids)
    got = encode.embed(model, TEXTS, kind, batch_size=4, progress=False)
    assert cosines(got, ref).min() >= 0.9999, cosines(got, ref)
    # Not vacuous: without the prompt the embeddings differ.
    bare = encode.embed(model, TEXTS, None, batch_size=4, progress=False)
    assert cosines(got, bare).max() < 0.999


def test_workdir_inherits_overrides_and_exports_prompts(custom_dir, tmp_path):
  workdir = train_3_steps(custom_dir, tmp_path / "run", passage_prompt="text: ")
  trained = models.load_model(str(workdir))
  want = {"query": CUSTOM["query"], "passage": "text: "}  # the base's query prompt, overridden
  assert trained.prompts == want
  out = tmp_path / "export"
  assert export.main(["--model", str(workdir), "--out", str(out)]) == 0
  assert json.loads((out / prompts.ST_CONFIG).read_text())["prompts"] == {
      "query": want["query"], "document": want["passage"], "passage": want["passage"]}
  assert models.load_model(str(out)).prompts == want
  st = SentenceTransformer(str(out), device="cpu")
  for kind in ("query", "passage"):
    ref = st.encode(TEXTS, prompt_name=kind, convert_to_numpy=True)
    got = encode.embed(trained, TEXTS, kind, batch_size=4, progress=False)
    assert cosines(got, ref).min() >= 0.9999


def test_bad_prompt_override_is_refused():
  from configs import default
  with pytest.raises(TypeError):  # the config key only takes a string (or None)
    default.get_config().query_prompt = 3
  with pytest.raises(prompts.PromptError, match="query prompt must be a string"):
    prompts.from_config(prompts.E5, {"query_prompt": 3})  # e.g. a hand-edited config.json
  assert prompts.from_config(prompts.E5, {"query_prompt": "", "passage_prompt": None}) == \
      {"query": "", "passage": "passage: "}


def test_shards_are_tokenised_with_the_model_prompts(tmp_path, data_dir):
  """Shards built with other prompts: another cache directory, rows start with the prompt."""
  tokenizer = models.tiny_random_model().tokenizer
  config = make_config(tmp_path, data_dir=str(data_dir), train_languages=["de"])
  e5 = sampler.build_training_data(config, tokenizer, progress=False)
  custom = sampler.build_training_data(config, tokenizer, progress=False, prompts=CUSTOM)
  default = sampler.build_training_data(config, tokenizer, progress=False, prompts=prompts.E5)
  assert custom.directory != e5.directory and default.directory == e5.directory
  for data, used in ((e5, prompts.E5), (custom, CUSTOM)):
    for field, kind in (("query_ids", "query"), ("passage_ids", "passage")):
      rows = getattr(data.table, field)
      # The tokenizer's own ids of the prompt (ending in "▁" like "query: " + "").
      head = tokenizer(used[kind], add_special_tokens=False)["input_ids"]
      head = head[:-1] if tokenizer.convert_ids_to_tokens(head[-1:]) == ["▁"] else head
      assert (rows[:, 1:1 + len(head)] == head).all(), (kind, head, rows[:2])
  assert not np.array_equal(e5.table.query_ids, custom.table.query_ids)
