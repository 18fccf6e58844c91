"""TyDi GoldP at sentence level: segmentation on all nine languages, relevance, protocol, run."""
import json

import numpy as np
import pytest

from data_pipelines import readers
from data_pipelines.errors import DataError
from eval import protocols, run

# TyDi GoldP dev questions per language (data README, counted in the files).
DEV_QUESTIONS = {"ar": 921, "bn": 113, "en": 440, "fi": 782, "id": 565, "ko": 276, "ru": 812,
                 "sw": 499, "te": 669}


def _raw(data_dir, language):
  """(unique passage texts in file order, [(passage, question id, [answer starts])]) from the file."""
  path = data_dir / "tydiqa_goldp" / f"{readers.TYDI_FILE_NAMES[language]}_tydiqa_dev.json"
  obj = json.loads(path.read_text(encoding="utf-8"))
  passages, questions = {}, []
  for article in obj["data"]:
    for paragraph in article["paragraphs"]:
      passages.setdefault(paragraph["context"], None)
      for qa in paragraph["qas"]:
        questions.append((paragraph["context"], qa["id"], [a["answer_start"] for a in qa["answers"]]))
  return list(passages), questions


def _offsets(passage, sentences):
  """Where each sentence text starts in the passage, found left to right (independent of the
  reader's spans); fails if a sentence is not the next non-space text of the passage."""
  starts, position = [], 0
  for sentence in sentences:
    found = passage.find(sentence, position)
    assert found >= 0 and not passage[position:found].strip(), (sentence, position)
    starts.append(found)
    position = found + len(sentence)
  assert not passage[position:].strip()
  return starts


@pytest.mark.fast
@pytest.mark.parametrize("language", readers.TYDI_LANGUAGES)
def test_segmentation_and_relevance_on_every_language(data_dir, language):
  passages, raw_questions = _raw(data_dir, language)
  rs = readers.read_tydi_goldp_sentences(data_dir, language)
  assert rs.benchmark == "tydiqa_goldp_sentences" and rs.language == language
  assert len(rs.questions) == len(raw_questions) == DEV_QUESTIONS[language]
  assert not rs.issues
  by_passage = {}
  for index, candidate in enumerate(rs.candidates):
    by_passage.setdefault(candidate.context, []).append(index)
    assert candidate.text.strip() == candidate.text and candidate.text
  # one group of sentences per unique passage, and the segmenter really splits
  assert list(by_passage) == passages
  assert len(rs.candidates) > 2 * len(passages)
  sentence_starts = {}
  for passage, indices in by_passage.items():
    texts = [rs.candidates[i].text for i in indices]
    # sentences cover the passage in order, whitespace between them
    sentence_starts[passage] = _offsets(passage, texts)
    assert "".join(passage.split()) == "".join("".join(texts).split())
    assert len({rs.candidates[i].doc_id for i in indices}) == len(indices)
    # the reader's spans partition the passage exactly
    spans = readers.sentence_spans(passage, language)
    assert spans[0][0] == 0 and spans[-1][1] == len(passage)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert [passage[s:e].strip() for s, e in spans] == texts
  questions = {q.qid: q for q in rs.questions}
  for passage, qid, answer_starts in raw_questions:
    indices = by_passage[passage]
    bounds = sentence_starts[passage][1:] + [len(passage)]
    expected = set()
    for start in answer_starts:
      holding = [i for i, s, e in zip(indices, [0] + sentence_starts[passage][1:], bounds)
                 if s <= start < e]
      assert len(holding) == 1  # the answer start lies in exactly one sentence
      expected.add(holding[0])
    assert set(questions[qid].relevant) == expected
    assert set(questions[qid].relevant.values()) == {1}


@pytest.mark.fast
def test_sentence_spans_hand_made():
  text = "  First sentence here. Second one!   \n Third?  "
  spans = readers.sentence_spans(text, "en")
  assert [text[s:e].strip() for s, e in spans] == ["First sentence here.", "Second one!", "Third?"]
  assert spans[0][0] == 0 and spans[-1][1] == len(text)
  assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
  assert readers.sentence_spans("   ", "en") == [] and readers.sentence_spans("", "en") == []
  assert readers.sentence_spans("No full stop", "en") == [(0, 12)]


def _write_tydi(tmp_path, qas_context):
  folder = tmp_path / "tydiqa_goldp"
  folder.mkdir()
  data = {"data": [{"paragraphs": [{"context": c, "qas": qas} for c, qas in qas_context]}]}
  (folder / "english_tydiqa_dev.json").write_text(json.dumps(data))
  return tmp_path


@pytest.mark.fast
def test_hand_made_file_relevance_and_bad_records(tmp_path):
  context = "Alpha is first. Beta is second. Gamma is third."
  beta, gamma = context.index("Beta"), context.index("Gamma")
  data_dir = _write_tydi(tmp_path, [(context, [
      {"id": "q1", "question": "second?", "answers": [{"text": "Beta", "answer_start": beta}]},
      {"id": "q2", "question": "two starts?", "answers": [{"text": "Beta", "answer_start": beta},
                                                          {"text": "Gamma", "answer_start": gamma}]},
      {"id": "q3", "question": "space?", "answers": [{"text": " ", "answer_start": beta - 1}]},
      {"id": "q4", "question": "outside?", "answers": [{"text": "x", "answer_start": 999}]},
      {"id": "q5", "question": "", "answers": [{"text": "Beta", "answer_start": beta}]},
  ]), (context, [{"id": "q6", "question": "again?", "answers": [{"text": "Alpha", "answer_start": 0}]}])])
  rs = readers.read_tydi_goldp_sentences(data_dir, "en")
  assert [c.text for c in rs.candidates] == ["Alpha is first.", "Beta is second.", "Gamma is third."]
  relevant = {q.qid: dict(q.relevant) for q in rs.questions}
  # the space before "Beta" belongs to the first sentence's span
  assert relevant == {"q1": {1: 1}, "q2": {1: 1, 2: 1}, "q3": {0: 1}, "q6": {0: 1}}
  assert sorted((i.record_id, i.problem) for i in rs.issues) == [
      ("q4", "answer start outside the passage"), ("q5", "empty question")]
  with pytest.raises(DataError, match="q4.*answer start outside the passage"):
    readers.read_tydi_goldp_sentences(data_dir, "en", strict=True)


def _encoded(language, vectors, candidates, relevant):
  data = readers.RetrievalSet(
      "tydiqa_goldp_sentences", language,
      [readers.Question(f"{language}{i}", "q", {r: 1}) for i, r in enumerate(relevant)],
      [readers.Candidate(f"{language}{i}", "p", f"p:{i}") for i in range(len(candidates))],
      readers.IssueLog())
  return protocols.EncodedSet(data, np.asarray(vectors, np.float32), np.asarray(candidates, np.float32))


@pytest.mark.fast
def test_protocol_mono_and_pooled_by_hand():
  eye = np.eye(6, dtype=np.float32)
  # language a: candidates e0 e1 e2; b: e3 e4 e5. Queries equal their relevant sentence,
  # except b's second query, which points at a's e0 (rank 2 in the pool, absent in b's mono).
  a = _encoded("a", [eye[0], eye[2]], eye[:3], [0, 2])
  b = _encoded("b", [eye[4], 0.8 * eye[0] + 0.6 * eye[3]], eye[3:], [1, 0])
  result = protocols.tydi_sentences({"a": a, "b": b})
  mono, multi = result["settings"]["mono"], result["settings"]["multi"]
  assert set(mono["macro"]) == {"map", "r@1"}
  assert set(multi["macro"]) == {"map", "r@10", "top10_same_language"}
  assert mono["per_language"]["a"] == {"map": 1.0, "r@1": 1.0}
  assert mono["per_language"]["b"] == {"map": 1.0, "r@1": 1.0}  # b's pool has no e0
  assert multi["per_language"]["b"]["map"] == pytest.approx((1 + 0.5) / 2)
  assert multi["per_language"]["b"]["r@10"] == 1.0
  # the pool has 6 items: top 10 = all of them, half in each language
  assert multi["per_language"]["a"]["top10_same_language"] == pytest.approx(0.5)
  assert result["counts"]["pool_candidates"] == 6
  assert result["per_query"]["multi"]["b"] == pytest.approx([1.0, 0.5])


def test_eval_run_two_languages(data_dir, tmp_path):
  from mlir_train import models
  out = tmp_path / "sent.json"
  result = run.evaluate(models.tiny_random_model(seed=0), "tydiqa_goldp_sentences", ["bn", "sw"],
                        data_dir=data_dir, max_length=32, progress=False, out=out)
  assert set(result["settings"]) == {"mono", "multi"}
  direct = {l: readers.read_tydi_goldp_sentences(data_dir, l) for l in ("bn", "sw")}
  for language, rs in direct.items():
    assert result["counts"]["per_language"][language] == {"queries": len(rs.questions),
                                                          "candidates": len(rs.candidates)}
    mono = result["settings"]["mono"]["per_language"][language]
    assert 0 <= mono["r@1"] <= mono["map"] <= 1
  assert result["counts"]["pool_candidates"] == sum(len(rs.candidates) for rs in direct.values())
  assert result["options"]["split"] == "dev"
  text = (tmp_path / "sent.report.md").read_text()
  assert "| bn |" in text and f"Pooled setting: {result['counts']['pool_candidates']}" in text
