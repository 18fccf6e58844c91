"""AfriQA: reader counts against the raw files, bad records, protocol by hand, eval.run."""
import json
import math

import numpy as np
import pytest

from data_pipelines import datadir, readers
from data_pipelines.errors import DataError
from eval import protocols, run

# Queries per language in the test split: the upstream README's table.
TEST_QUERIES = {"bem": 314, "fon": 386, "hau": 300, "ibo": 409, "kin": 347, "swa": 302,
                "twi": 490, "wol": 334, "yor": 332, "zul": 325}


def _lines(path):
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _is_text(value):
  return isinstance(value, str) and bool(value.strip())


def _files(data_dir, language, split):
  stem = f"afriqa.{language}.{'fr' if language in ('fon', 'wol') else 'en'}.{split}.json"
  return (data_dir / "afriqa" / f"queries__{language}__queries.{stem}",
          data_dir / "afriqa" / f"gold_passages__{language}__gold_span_passages.{stem}")


@pytest.mark.fast
@pytest.mark.parametrize("split,language", [("test", l) for l in readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["test"]]
                         + [("dev", l) for l in readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["dev"]])
def test_counts_and_texts_against_the_files(data_dir, split, language):
  queries_path, gold_path = _files(data_dir, language, split)
  queries, gold = _lines(queries_path), _lines(gold_path)
  if split == "test":
    assert len(queries) == TEST_QUERIES[language]
  usable = {str(r["id"]): r for r in gold
            if _is_text(r.get("context")) and _is_text(r.get("question_lang"))
            and _is_text(r.get("question_translated"))}
  gold_ids = {str(r["id"]) for r in gold}
  without_gold = [q for q in queries if str(q["id"]) not in gold_ids]
  rs = readers.read_afriqa(data_dir, language, split)
  assert rs.benchmark == "afriqa" and rs.language == language
  assert len(rs.questions) == len(usable)
  assert len(rs.candidates) == len({r["context"] for r in usable.values()})
  assert rs.issues.num_dropped == (len(gold) - len(usable)) + len(without_gold)
  for question in rs.questions:
    record = usable[question.qid]
    assert question.text == record["question_lang"]
    assert question.translated == record["question_translated"]
    (index, grade), = question.relevant.items()
    assert grade == 1 and rs.candidates[index].text == record["context"]


@pytest.mark.fast
def test_languages_without_gold_passages_are_refused(data_dir):
  assert "wol" not in readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["test"]
  with pytest.raises(DataError, match="no gold passages for wol in test"):
    readers.read_afriqa(data_dir, "wol", "test")
  for language in ("swa", "yor"):
    assert not _files(data_dir, language, "dev")[1].exists()
    with pytest.raises(DataError, match=f"no gold passages for {language} in dev"):
      readers.read_afriqa(data_dir, language, "dev")
  with pytest.raises(DataError, match="unknown language 'en'"):
    readers.read_afriqa(data_dir, "en")
  with pytest.raises(DataError, match="unknown split"):
    readers.read_afriqa(data_dir, "hau", "validation")


@pytest.mark.fast
def test_packaged_sources_match_the_data_dir(data_dir):
  packaged = datadir.parse_sources(datadir.PACKAGED_SOURCES / "afriqa.txt")
  assert packaged == datadir.parse_sources(data_dir / "afriqa" / "SOURCES.txt")


def _hand_made(tmp_path):
  folder = tmp_path / "afriqa"
  folder.mkdir()
  queries = [{"id": i, "question": f"nq{i}", "translated_question": f"tq{i}"} for i in range(7)]
  queries[5]["question"] = "something else"
  (folder / "queries__hau__queries.afriqa.hau.en.test.json").write_text(
      "\n".join(json.dumps(q) for q in queries) + "\n")

  def gold(i, context, **extra):
    record = {"id": str(i), "context": context, "question_lang": f"nq{i}",
              "question_translated": f"tq{i}", "title": "t", "answer_pivot": {}}
    record.update(extra)
    return json.dumps(record)
  lines = [gold(0, "Passage A."), gold(1, "Passage B."), gold(1, "Passage C."),  # duplicate id
           "{not json", gold(2, None), gold(3, "Passage A.", question_lang=float("nan")),
           gold(4, "Passage A."),   # shares A: one candidate
           gold(5, "Passage D."),   # text differs from the queries file: kept, caveat
           gold(9, "Passage E.")]   # not in the queries file: kept, caveat
  (folder / "gold_passages__hau__gold_span_passages.afriqa.hau.en.test.json").write_text(
      "\n".join(lines) + "\n")
  return tmp_path  # query 6 has no gold-passage record


@pytest.mark.fast
def test_hand_made_files_bad_records(tmp_path):
  data_dir = _hand_made(tmp_path)
  rs = readers.read_afriqa(data_dir, "hau")
  assert [q.qid for q in rs.questions] == ["0", "1", "4", "5", "9"]
  assert [c.text for c in rs.candidates] == ["Passage A.", "Passage B.", "Passage D.", "Passage E."]
  assert [dict(q.relevant) for q in rs.questions] == [{0: 1}, {1: 1}, {0: 1}, {2: 1}, {3: 1}]
  assert [q.translated for q in rs.questions] == ["tq0", "tq1", "tq4", "tq5", "tq9"]
  problems = sorted((i.record_id, i.problem, i.dropped) for i in rs.issues)
  assert problems == [
      ("1", "duplicate record id", True),
      ("2", "no gold passage text (null or empty context)", True),
      ("3", "empty question", True),
      ("5", "question text differs from the queries file", False),
      ("6", "no gold-passage record for this question", True),
      ("9", "question id missing from the queries file", False),
      ("line 4", "malformed JSON line", True),
  ]
  with pytest.raises(DataError, match="gold_span_passages.afriqa.hau.en.test.json: record 1: duplicate"):
    readers.read_afriqa(data_dir, "hau", strict=True)


@pytest.mark.fast
def test_protocol_native_translated_and_gap_by_hand():
  eye = np.eye(3, dtype=np.float32)
  data = readers.RetrievalSet(
      "afriqa", "hau",
      [readers.Question("0", "n0", {0: 1}, "t0"), readers.Question("1", "n1", {1: 1}, "t1")],
      [readers.Candidate(f"p{i}", f"p{i}", f"d{i}") for i in range(3)], readers.IssueLog())
  # native queries hit their passage first; the translated ones rank it second
  translated = np.stack([0.8 * eye[2] + 0.6 * eye[0], 0.8 * eye[0] + 0.6 * eye[1]])
  enc = protocols.EncodedSet(data, eye[:2], eye, translated)
  result = protocols.afriqa({"hau": enc})
  native = result["settings"]["native"]["per_language"]["hau"]
  trans = result["settings"]["translated"]["per_language"]["hau"]
  assert native == {"ndcg@10": 1.0, "mrr@10": 1.0, "r@1": 1.0, "r@10": 1.0}
  assert trans == pytest.approx({"ndcg@10": 1 / math.log2(3), "mrr@10": 0.5, "r@1": 0.0, "r@10": 1.0})
  gap = result["robustness_gap"]["per_language"]["hau"]
  assert gap == pytest.approx({"ndcg@10": 1 - 1 / math.log2(3), "mrr@10": 0.5, "r@1": 1.0, "r@10": 0.0})
  assert result["robustness_gap"]["macro"] == pytest.approx(gap)
  assert result["counts"]["per_language"]["hau"] == {"queries": 2, "candidates": 3, "pivot_language": "en"}
  assert result["per_query"]["translated"]["hau"] == pytest.approx([0.5, 0.5])
  with pytest.raises(protocols.ProtocolError, match="translated"):
    protocols.afriqa({"hau": protocols.EncodedSet(data, eye[:2], eye)})


def test_eval_run_and_cli(data_dir, tmp_path, capsys):
  from mlir_train import models
  out = tmp_path / "afriqa.json"
  result = run.evaluate(models.tiny_random_model(seed=0), "afriqa", ["fon", "hau"], data_dir=data_dir,
                        max_length=32, progress=False, out=out)
  assert json.loads(out.read_text()) == result
  assert set(result["settings"]) == {"native", "translated"}
  assert result["options"]["split"] == "test"
  for language in ("fon", "hau"):
    rs = readers.read_afriqa(data_dir, language)
    assert result["counts"]["per_language"][language]["queries"] == len(rs.questions)
    assert result["counts"]["per_language"][language]["candidates"] == len(rs.candidates)
    native = result["settings"]["native"]["per_language"][language]
    translated = result["settings"]["translated"]["per_language"][language]
    for name in protocols.AFRIQA_METRICS:
      assert result["robustness_gap"]["per_language"][language][name] == pytest.approx(
          native[name] - translated[name])
    assert native["r@1"] <= native["mrr@10"] <= native["r@10"] <= 1
    assert result["data_issues"][language]["dropped"] == rs.issues.num_dropped
  assert result["counts"]["per_language"]["fon"]["pivot_language"] == "fr"
  report = (tmp_path / "afriqa.report.md").read_text()
  assert "## Robustness gap" in report and "Not evaluated: bem" in report

  # the command line, dev split, by model name
  run.main(["--model", "tiny-random", "--benchmark", "afriqa", "--split", "dev", "--languages", "fon",
            "--data_dir", str(data_dir), "--max_length", "32", "--no_progress",
            "--out", str(tmp_path / "dev.json")])
  saved = json.loads((tmp_path / "dev.json").read_text())
  assert saved["options"]["split"] == "dev"
  assert saved["counts"]["per_language"]["fon"]["queries"] == len(
      readers.read_afriqa(data_dir, "fon", "dev").questions)
  assert "gap" in capsys.readouterr().out
