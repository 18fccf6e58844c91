"""`encode.embed` tokenises a text once per tokenizer, prompt and cap: the cached ids are
the ids Hugging Face gives for that text, and anything that changes them misses the cache."""
import numpy as np
import pytest

from data_pipelines import tokenization
from mlir_train import encode, models

TEXTS = ["who wrote the first dictionary", "", "the river " * 80, "Ελληνικά και русский",
         "the river " * 80]  # a long text (cut at any cap below 160) twice


@pytest.fixture
def fresh_cache(monkeypatch):
  monkeypatch.setattr(encode, "_TOKEN_IDS", type(encode._TOKEN_IDS)())
  monkeypatch.setattr(encode, "_token_ids_held", 0)


def _counting(monkeypatch):
  calls = []
  real = tokenization.token_ids

  def spy(tokenizer, texts, *args, **kwargs):
    calls.append(list(texts))
    return real(tokenizer, texts, *args, **kwargs)

  monkeypatch.setattr(tokenization, "token_ids", spy)
  return calls


@pytest.mark.parametrize("name", ["tiny-random", "e5-small"])
def test_cached_ids_are_hugging_faces_and_the_second_call_tokenises_nothing(
    name, fresh_cache, monkeypatch):
  model = models.load_model(name)
  cap = 64
  # Independent truth: the tokenizer itself, prompt in front, Hugging Face's truncation.
  want = model.tokenizer([model.prompts["passage"] + t for t in TEXTS], truncation=True,
                         max_length=cap)["input_ids"]
  calls = _counting(monkeypatch)
  first, cut_first = encode.token_rows(model, TEXTS, "passage", cap)
  assert len(calls) == 2  # all texts at cap + 1, then the two long ones at the cap
  second, cut_second = encode.token_rows(model, TEXTS, "passage", cap)
  assert len(calls) == 2  # nothing tokenised again
  for got in (first, second):
    assert [list(r) for r in got] == want
  assert cut_first == cut_second == [False, False, True, False, True]


@pytest.mark.fast
def test_a_changed_tokenizer_prompt_or_cap_misses(fresh_cache, monkeypatch):
  model = models.load_model("tiny-random")
  calls = _counting(monkeypatch)
  encode.token_rows(model, TEXTS[:2], "query", 32)
  assert len(calls) == 1
  encode.token_rows(model, TEXTS[:2], "passage", 32)  # another prompt
  encode.token_rows(model, TEXTS[:2], "query", 48)    # another cap
  assert len(calls) == 3
  # The same words made one token: the ids change, and so must the cache key.
  before = [list(r) for r in encode.token_rows(model, TEXTS[:1], "query", 32)[0]]
  model.tokenizer.add_tokens(["dictionary"])
  after = [list(r) for r in encode.token_rows(model, TEXTS[:1], "query", 32)[0]]
  assert len(calls) == 4 and after != before
  assert after == model.tokenizer(["query: " + TEXTS[0]], truncation=True,
                                  max_length=32)["input_ids"]


@pytest.mark.fast
def test_embed_gives_the_same_vectors_and_counts_from_the_cache(fresh_cache):
  model = models.load_model("tiny-random")
  stats_a, stats_b = {}, {}
  a = encode.embed(model, TEXTS, "passage", max_length=40, progress=False, stats=stats_a)
  assert len(encode._TOKEN_IDS) == 4  # the repeated text once
  b = encode.embed(model, TEXTS, "passage", max_length=40, progress=False, stats=stats_b)
  np.testing.assert_array_equal(a, b)
  assert stats_a == stats_b == {"texts": 5, "truncated": 2}
  with pytest.raises(TypeError, match="list of strings"):
    encode.embed(model, "one string", "passage", progress=False)


@pytest.mark.fast
def test_the_cache_keeps_at_most_its_limit_and_drops_the_oldest(fresh_cache, monkeypatch):
  model = models.load_model("tiny-random")
  monkeypatch.setattr(encode, "TOKEN_IDS_KEPT", 40)
  rows, _ = encode.token_rows(model, ["a b c d e f g h i j k l"] * 1 + ["the"], None, 64)
  held = sum(len(r) for r in rows)
  assert encode._token_ids_held == held and held <= 40
  encode.token_rows(model, ["x y z " * 10], None, 64)  # 32 ids: the oldest must go
  assert encode._token_ids_held <= 40
  assert encode._token_ids_held == sum(len(v[0]) for v in encode._TOKEN_IDS.values())
  calls = _counting(monkeypatch)
  encode.token_rows(model, ["x y z " * 10], None, 64)
  assert not calls  # the newest is still held
