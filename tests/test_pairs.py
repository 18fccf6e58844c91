"""Folds, the overlap check, training pairs and tokenised shards."""
import copy
import json

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import folds, pairs, readers, sampler, shards
from mlir_train import models
from tests.training_data_helpers import LANGUAGES, make_config

# fast: the fold and pair tests (not the shard builds); data: the tests that take the
# data_dir fixture (tests/conftest.py marks them)


def _set(language, questions, candidates, benchmark="toy"):
  """A hand-written RetrievalSet: questions = [(qid, text, relevant candidate index)]."""
  cands = [readers.Candidate(text=t, context=c, doc_id=f"p:{i}") for i, (t, c) in enumerate(candidates)]
  qs = [readers.Question(qid=q, text=t, relevant={i: 1}) for q, t, i in questions]
  return readers.RetrievalSet(benchmark=benchmark, language=language, questions=qs,
                              candidates=cands, issues=readers.IssueLog())


# -- folds -------------------------------------------------------------------

@pytest.mark.fast
def test_folds_match_the_design_table():
  a, b = folds.get_fold("A"), folds.get_fold("B")
  assert (a.train_benchmark, a.train_languages) == ("mlqa_r", ("ar", "de", "en", "es", "hi", "vi", "zh"))
  assert dict(a.eval_benchmarks) == {
      "xquad_r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
      "tydiqa_goldp": ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"),
      # every AfriQA language with gold passages in the test split (wol has none upstream)
      "afriqa": ("bem", "fon", "hau", "ibo", "kin", "swa", "twi", "yor", "zul")}
  assert (b.train_benchmark, len(b.train_languages)) == ("xquad_r", 11)
  assert dict(b.eval_benchmarks)["mlqa_r"] == a.train_languages
  with pytest.raises(ValueError, match="unknown fold"):
    folds.get_fold("C")
  with pytest.raises(ValueError, match="th"):
    folds.train_languages(a, ["de", "th"])
  assert folds.train_languages(a, ["es", "de"]) == ("de", "es")
  assert folds.train_languages(a, "es, de") == ("de", "es")
  assert folds.train_languages(a, "") == folds.train_languages(a, None) == a.train_languages


@pytest.mark.fast
@pytest.mark.parametrize("fold", ["A", "B"])
def test_real_folds_have_no_overlap(data_dir, fold):
  f = folds.get_fold(fold)
  folds.check_no_overlap(folds.load_train_sets(f, data_dir).values(), folds.load_eval_sets(f, data_dir))


@pytest.mark.fast
def test_overlap_check_refuses_leaks_with_examples(data_dir):
  train = folds.load_train_sets(folds.get_fold("A"), data_dir, ["de"])["de"]
  with pytest.raises(folds.FoldOverlapError) as e:
    folds.check_no_overlap([train], [train])
  assert train.questions[0].qid in str(e.value) and "mlqa_r/de" in str(e.value)
  base = _set("en", [("q1", "Who wrote it?", 0)], [("Tolstoy wrote it.", "Tolstoy wrote it. Long ago.")])
  # Same question text under another id (case and spacing differ).
  other_q = _set("en", [("z9", "who  wrote it?", 0)], [("Unrelated.", "Unrelated.")], "evalset")
  with pytest.raises(folds.FoldOverlapError, match="question text"):
    folds.check_no_overlap([base], [other_q])
  # The training positive is an evaluation candidate.
  other_c = _set("en", [("z9", "Something else?", 0)], [("Tolstoy wrote it.", "x")], "evalset")
  with pytest.raises(folds.FoldOverlapError, match="positive"):
    folds.check_no_overlap([base], [other_c])
  clean = _set("en", [("z9", "Something else?", 0)], [("Other text.", "Other text.")], "evalset")
  folds.check_no_overlap([base], [clean])


# -- pairs -------------------------------------------------------------------

def _toy_sets():
  en = _set("en", [("b", "B en?", 1), ("a", "A en?", 0), ("c", "C en?", 2)],
            [("sa", "para a"), ("sb", "para b"), ("sc", "para c")])
  de = _set("de", [("a", "A de?", 1), ("b", "B de?", 0)], [("sb-de", "pb-de"), ("sa-de", "pa-de")])
  fr = _set("fr", [("c", "C fr?", 0)], [("sc-fr", "pc-fr")])
  return {"en": en, "de": de, "fr": fr}


@pytest.mark.fast
def test_pairs_by_hand():
  sets = _toy_sets()
  assert pairs.group_ids(sets.values()) == {"a": 0, "b": 1, "c": 2}
  built = pairs.build_pairs(sets, "sentence")
  summary = {k: [(p.qid, p.group_id, p.query, p.positive) for p in v] for k, v in built.items()}
  assert summary[("en", "en")] == [("a", 0, "A en?", "sa"), ("b", 1, "B en?", "sb"), ("c", 2, "C en?", "sc")]
  assert summary[("de", "en")] == [("a", 0, "A de?", "sa"), ("b", 1, "B de?", "sb")]
  assert summary[("en", "de")] == [("a", 0, "A en?", "sa-de"), ("b", 1, "B en?", "sb-de")]
  assert summary[("fr", "en")] == [("c", 2, "C fr?", "sc")]
  assert summary[("de", "fr")] == [] and summary[("fr", "de")] == []
  assert all(p.query_language == a and p.passage_language == b
             for (a, b), v in built.items() for p in v)
  para = pairs.build_pairs(sets, "paragraph")
  assert [p.positive for p in para[("en", "de")]] == ["pa-de", "pb-de"]
  assert set(pairs.build_pairs(sets, cross=False)) == {("en", "en"), ("de", "de"), ("fr", "fr")}
  with pytest.raises(ValueError, match="positive"):
    pairs.build_pairs(sets, "document")


@pytest.mark.fast
def test_pairs_on_mlqa_r(data_dir):
  sets = folds.load_train_sets(folds.get_fold("A"), data_dir)
  built = pairs.build_pairs(sets)
  n = {l: len(s.questions) for l, s in sets.items()}
  # Counts from the data README: every non-English question id exists in English.
  assert n == {"ar": 517, "de": 512, "en": 1148, "es": 500, "hi": 507, "vi": 511, "zh": 504}
  for l in sets:
    assert len(built[(l, l)]) == n[l]
    assert len(built[(l, "en")]) == len(built[("en", l)]) == n[l]
  ids = {l: {q.qid for q in s.questions} for l, s in sets.items()}
  assert len(built[("de", "es")]) == len(ids["de"] & ids["es"])
  # The positive is the sentence holding the answer start.
  q = sets["de"].questions[0]
  pair = next(p for p in built[("de", "de")] if p.qid == q.qid)
  assert pair.positive == sets["de"].candidates[min(q.relevant)].text


# -- shards ------------------------------------------------------------------

def _records(path, lq, lp):
  spec = {"query_ids": tf.io.FixedLenFeature([lq], tf.int64),
          "query_mask": tf.io.FixedLenFeature([lq], tf.int64),
          "passage_ids": tf.io.FixedLenFeature([lp], tf.int64),
          "passage_mask": tf.io.FixedLenFeature([lp], tf.int64),
          "group_id": tf.io.FixedLenFeature([], tf.int64),
          "qid": tf.io.FixedLenFeature([], tf.string)}
  return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
          for r in tf.data.TFRecordDataset(str(path))]


def test_shards_hold_the_tokenised_pairs(tmp_path, data_dir, tokenizer):
  config = make_config(tmp_path, data_dir=str(data_dir))
  data = sampler.build_training_data(config, tokenizer, progress=False)
  manifest = json.loads((data.directory / "manifest.json").read_text())
  sets = folds.load_train_sets(folds.get_fold("A"), data_dir, LANGUAGES)
  built = pairs.build_pairs(sets)
  assert len(manifest["shards"]) == 9
  assert {(s["query_language"], s["passage_language"]): s["count"] for s in manifest["shards"]} == \
      {k: len(v) for k, v in built.items()}
  assert manifest["tokenizer"]["vocab_size"] == len(tokenizer)
  assert set(manifest["inputs"]) == {f"mlqa_r/{l}.json" for l in LANGUAGES}
  groups = pairs.group_ids(sets.values())
  by_qid = {l: {q.qid: q for q in s.questions} for l, s in sets.items()}
  recs = _records(data.directory / "es-de.tfrecord", 32, 64)
  assert len(recs) == len(built[("es", "de")])
  for rec in recs[:25]:
    qid = rec["qid"].decode()
    assert rec["group_id"] == groups[qid]
    q = by_qid["es"][qid]
    positive = sets["de"].candidates[min(by_qid["de"][qid].relevant)].text
    # Independent truth: the tokenizer called directly on the prefixed texts.
    want_q = tokenizer("query: " + q.text, truncation=True, max_length=32)["input_ids"]
    want_p = tokenizer("passage: " + positive, truncation=True, max_length=64)["input_ids"]
    for ids, mask, want, length in ((rec["query_ids"], rec["query_mask"], want_q, 32),
                                    (rec["passage_ids"], rec["passage_mask"], want_p, 64)):
      assert len(ids) == length and mask.sum() == len(want)
      assert list(ids[:len(want)]) == want and set(ids[len(want):]) <= {tokenizer.pad_token_id}
      assert list(mask[:len(want)]) == [1] * len(want) and not mask[len(want):].any()


def test_shards_rebuild_only_when_inputs_change(tmp_path, data_dir, tokenizer):
  config = make_config(tmp_path, data_dir=str(data_dir), train_languages=["de", "es"])
  first = sampler.build_training_data(config, tokenizer, progress=False)
  manifest_path = first.directory / "manifest.json"
  stamp = manifest_path.stat().st_mtime_ns
  again = sampler.build_training_data(config, tokenizer, progress=False)
  assert again.directory == first.directory and manifest_path.stat().st_mtime_ns == stamp
  # A changed input file hash (as if the data changed) triggers a rebuild.
  manifest = json.loads(manifest_path.read_text())
  manifest["inputs"]["mlqa_r/de.json"] = "0" * 64
  manifest_path.write_text(json.dumps(manifest))
  rebuilt = sampler.build_training_data(config, tokenizer, progress=False)
  assert json.loads(manifest_path.read_text())["inputs"]["mlqa_r/de.json"] != "0" * 64
  np.testing.assert_array_equal(rebuilt.table.query_ids, first.table.query_ids)
  # Another sequence length is another shard set, side by side.
  longer = sampler.build_training_data(make_config(tmp_path, data_dir=str(data_dir),
                                                   train_languages=["de", "es"], max_query_len=48),
                                       tokenizer, progress=False)
  assert longer.directory != first.directory and longer.table.query_ids.shape[1] == 48
  # The tokenizer identity does not change by using the tokenizer.
  ident = shards.tokenizer_identity(tokenizer)
  tokenizer(["x"], truncation=True, max_length=7, padding="max_length")
  assert shards.tokenizer_identity(tokenizer) == ident
  # The canonical hash is memoised by the serialised tokenizer: a changed one (an added
  # token) is another identity, and a fresh computation agrees with the memo.
  changed = copy.deepcopy(tokenizer)
  changed.add_tokens(["<a-new-token>"])
  assert (shards.tokenizer_identity(changed)["tokenizer_json_sha256"]
          != ident["tokenizer_json_sha256"])
  shards._CANONICAL_SHA256.clear()
  assert shards.tokenizer_identity(tokenizer) == ident
