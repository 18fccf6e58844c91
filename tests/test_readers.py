"""Readers: counts against the published figures, relevance worked out by hand, issue logging."""
import collections
import json
import pathlib

import pytest

from data_pipelines import readers
from data_pipelines.readers import DataError

# data: the tests that take the data_dir fixture (tests/conftest.py marks them)
pytestmark = [pytest.mark.fast]

# Published counts (shared/data/README.md, LAReQA README): language -> candidate sentences.
XQUAD_R_CANDIDATES = dict(ar=1222, de=1276, el=1234, en=1180, es=1215, hi=1244, ru=1219,
                          th=852, tr=1167, vi=1209, zh=1196)
# language -> (questions, candidate sentences)
MLQA_R_COUNTS = dict(ar=(517, 2545), de=(512, 2362), en=(1148, 6264), es=(500, 1787),
                     hi=(507, 2426), vi=(511, 2828), zh=(504, 2322))
TYDI_DEV_QUESTIONS = dict(ar=921, bn=113, en=440, fi=782, id=565, ko=276, ru=812, sw=499, te=669)
# MIRACL v1.0 dev topics per language (MIRACL paper, Table 1).
MIRACL_DEV_TOPICS = dict(ar=2896, bn=411, de=305, en=799, es=648, fa=632, fi=1271, fr=343, hi=350,
                         id=960, ja=860, ko=213, ru=1252, sw=482, te=828, th=733, yo=119, zh=393)


# ---------------------------------------------------------------- real data

@pytest.mark.parametrize("language", readers.XQUAD_R_LANGUAGES)
def test_xquad_r_counts(data_dir, language):
  rs = readers.read_xquad_r(data_dir, language)
  assert (rs.benchmark, rs.language) == ("xquad_r", language)
  assert len(rs.questions) == 1190
  assert len(rs.candidates) == XQUAD_R_CANDIDATES[language]
  assert rs.issues.num_dropped == 0


@pytest.mark.parametrize("language", readers.MLQA_R_LANGUAGES)
def test_mlqa_r_counts(data_dir, language):
  rs = readers.read_mlqa_r(data_dir, language)
  assert (len(rs.questions), len(rs.candidates)) == MLQA_R_COUNTS[language]
  assert len(rs.issues) == 0


@pytest.mark.parametrize("language", readers.TYDI_LANGUAGES)
def test_tydi_goldp_counts_and_relevance(data_dir, language):
  rs = readers.read_tydi_goldp(data_dir, language)
  assert len(rs.questions) == TYDI_DEV_QUESTIONS[language]
  # Independent truth from the raw file: unique passages, and each answer lies in its passage.
  raw = json.loads((data_dir / "tydiqa_goldp" /
                    f"{readers.TYDI_FILE_NAMES[language]}_tydiqa_dev.json").read_text("utf-8"))
  answers = {}
  contexts = set()
  for article in raw["data"]:
    for paragraph in article["paragraphs"]:
      contexts.add(paragraph["context"])
      for qa in paragraph["qas"]:
        answers[qa["id"]] = qa["answers"]
  assert len(rs.candidates) == len(contexts)
  assert len({c.text for c in rs.candidates}) == len(rs.candidates)
  for q in rs.questions:
    (index, grade), = q.relevant.items()
    passage = rs.candidates[index].text
    assert grade == 1
    for ans in answers[q.qid]:
      assert passage[ans["answer_start"]:ans["answer_start"] + len(ans["text"])] == ans["text"]


def test_tydi_goldp_train_and_missing_split(data_dir):
  assert len(readers.read_tydi_goldp(data_dir, "sw", split="train").questions) == 2755
  with pytest.raises(DataError, match="arabic_tydiqa_train.json"):
    readers.read_tydi_goldp(data_dir, "ar", split="train")
  with pytest.raises(DataError, match="unknown language 'xx'"):
    readers.read_tydi_goldp(data_dir, "xx")


def test_lareqa_answers_lie_in_their_sentence_and_ids_are_parallel(data_dir):
  raw = json.loads((data_dir / "xquad_r" / "de.json").read_text("utf-8"))
  answer = {qa["id"]: qa["answers"][0] for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]}
  rs = readers.read_xquad_r(data_dir, "de")
  inside = 0
  for q in rs.questions:
    (index, _), = q.relevant.items()
    candidate = rs.candidates[index]
    start = answer[q.qid]["answer_start"]
    # The answer starts in this sentence: the sentence occurs in its context at a
    # position p with p <= answer_start < p + len(sentence).
    offsets = [i for i in range(len(candidate.context)) if candidate.context.startswith(candidate.text, i)]
    assert any(p <= start < p + len(candidate.text) for p in offsets), q.qid
    inside += answer[q.qid]["text"] in candidate.text
  assert inside >= 0.97 * len(rs.questions)  # answers rarely cross a sentence break
  # XQuAD-R is 11-way parallel: the same 1,190 question ids in every language.
  ids = {q.qid for q in rs.questions}
  assert all({q.qid for q in readers.read_xquad_r(data_dir, lang).questions} == ids
             for lang in ("ar", "th", "zh"))
  # MLQA-R: every non-English question id also exists in English.
  english = {q.qid for q in readers.read_mlqa_r(data_dir, "en").questions}
  assert {q.qid for q in readers.read_mlqa_r(data_dir, "hi").questions} <= english


def test_xquad_r_tr_caveat_is_logged_not_dropped(data_dir):
  # Two Turkish sentences differ from context[start:end] (offsets shifted by mojibake upstream).
  rs = readers.read_xquad_r(data_dir, "tr", strict=True)  # caveats never raise
  assert [(i.problem, i.dropped) for i in rs.issues] == [
      ("sentence text differs from context[start:end]", False)] * 2


@pytest.mark.parametrize("language", sorted(MIRACL_DEV_TOPICS))
def test_miracl_real_topics_and_qrels(data_dir, language):
  log = readers.IssueLog(strict=True)
  topics_path, qrels_path = readers.miracl_files(data_dir, language, "dev")
  topics = readers.read_topics(topics_path, log)
  qrels = readers.read_qrels(qrels_path, log)
  assert len(topics) == MIRACL_DEV_TOPICS[language]
  assert set(qrels) == set(topics)
  lines = [l.split() for l in qrels_path.read_text("utf-8").splitlines() if l.strip()]
  assert sum(len(judged) for judged in qrels.values()) == len(lines)
  assert {g for judged in qrels.values() for g in judged.values()} <= {0, 1}


# ---------------------------------------------------------------- hand-written files

CONTEXT_A = "Alpha one. Beta two. Gamma three."   # sentences [0,10) [11,20) [21,33)
CONTEXT_B = "Delta. Alpha one."                   # sentences [0,6) [7,17)


def _lareqa_bytes() -> bytes:
  paragraphs = [
      {"context": CONTEXT_A,
       "sentences": ["Alpha one.", "Beta two.", "Gamma three."],
       "sentence_breaks": [[0, 10], [11, 20], [21, 33]],
       "qas": [
           {"id": "q1", "question": "Which is beta?", "answers": [{"answer_start": 11, "text": "Beta"}]},
           {"id": "q2", "question": "Gap?", "answers": [{"answer_start": 20, "text": " "}]},
           {"id": "q1", "question": "Duplicate?", "answers": [{"answer_start": 0, "text": "Alpha"}]},
           {"id": "q3", "question": "   ", "answers": [{"answer_start": 0, "text": "Alpha"}]},
           {"id": "q4", "question": "Last char?", "answers": [{"answer_start": 32, "text": "."}]},
       ]},
      {"context": CONTEXT_B,
       "sentences": ["Delta.", "Alpha one."],
       "sentence_breaks": [[0, 6], [7, 17]],
       "qas": [
           {"id": "q5", "question": "Second alpha?", "answers": [{"answer_start": 7, "text": "Alpha"}]},
           {"id": "q6", "question": "BADBYTE here?", "answers": [{"answer_start": 0, "text": "Delta"}]},
       ]},
  ]
  data = json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]},
                    ensure_ascii=False).encode("utf-8")
  return data.replace(b"BADBYTE", b"bad \xff\xfe byte")


def test_lareqa_hand_written(tmp_path):
  path = tmp_path / "lareqa.json"
  path.write_bytes(_lareqa_bytes())
  rs = readers.read_squad_file(path, "xx", benchmark="xquad_r")
  # Every sentence is a candidate, the repeated "Alpha one." included.
  assert [c.text for c in rs.candidates] == ["Alpha one.", "Beta two.", "Gamma three.", "Delta.", "Alpha one."]
  assert [c.doc_id for c in rs.candidates] == ["0.0:0", "0.0:1", "0.0:2", "0.1:0", "0.1:1"]
  assert rs.candidates[4].context == CONTEXT_B
  # q1 -> "Beta two." (11 in [11,20)); q4 -> "Gamma three." (32 in [21,33));
  # q5 -> the second paragraph's "Alpha one.", not the first one's.
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"q1": {1: 1}, "q4": {2: 1}, "q5": {4: 1}}
  assert [(i.record_id, i.problem) for i in rs.issues] == [
      ("q2", "answer start outside every sentence"),   # 20 is the space between [11,20) and [21,33)
      ("q1", "duplicate question id"),
      ("q3", "empty question"),
      ("q6", "bad UTF-8 in question"),
  ]
  assert all(i.file == str(path) and i.dropped for i in rs.issues)
  counts = rs.issues.counts()
  assert counts[(str(path), "duplicate question id")] == 1 and sum(counts.values()) == 4
  summary = rs.issues.summary()
  assert "answer start outside every sentence" in summary and str(path) in summary


def test_lareqa_strict_names_file_and_record(tmp_path):
  path = tmp_path / "lareqa.json"
  path.write_bytes(_lareqa_bytes())
  with pytest.raises(DataError) as error:
    readers.read_squad_file(path, "xx", strict=True)
  assert str(error.value) == f"{path}: record q2: answer start outside every sentence (answer_start=20)"


def test_bad_utf8_in_sentence_drops_the_sentence_and_its_question(tmp_path):
  data = json.dumps({"data": [{"paragraphs": [{
      "context": "One. SENT",
      "sentences": ["One.", "SENT"], "sentence_breaks": [[0, 4], [5, 9]],
      "qas": [{"id": "a", "question": "first?", "answers": [{"answer_start": 0}]},
              {"id": "b", "question": "second?", "answers": [{"answer_start": 6}]}]}]}]}).encode()
  # Bad bytes in the sentence only (the context keeps plain text).
  data = data.replace(b'"SENT"]', b'"S\xc3NT"]')
  path = tmp_path / "s.json"
  path.write_bytes(data)
  rs = readers.read_squad_file(path, "xx")
  assert [c.text for c in rs.candidates] == ["One."]
  assert [q.qid for q in rs.questions] == ["a"]
  assert [(i.record_id, i.problem) for i in rs.issues] == [
      ("0.0:1", "bad UTF-8 in sentence"), ("b", "answer sentence unusable")]


def test_squad_paragraph_candidates_dedupe(tmp_path):
  squad = {"data": [
      {"title": "A", "paragraphs": [
          {"context": "Passage one.", "qas": [{"id": "x1", "question": "q?", "answers": [{"answer_start": 0}]}]},
          {"context": "Passage two.", "qas": [{"id": "x2", "question": "q?", "answers": [{"answer_start": 0}]}]}]},
      {"title": "B", "paragraphs": [
          {"context": "Passage one.", "qas": [{"id": "x3", "question": "q?", "answers": [{"answer_start": 0}]},
                                              {"id": "", "question": "no id", "answers": []}]}]}]}
  path = tmp_path / "squad.json"
  path.write_text(json.dumps(squad))
  rs = readers.read_squad_file(path, "en")
  assert [c.text for c in rs.candidates] == ["Passage one.", "Passage two."]
  assert all(c.context == c.text for c in rs.candidates)
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"x1": {0: 1}, "x2": {1: 1}, "x3": {0: 1}}
  assert [(i.record_id, i.problem) for i in rs.issues] == [("paragraph 1.0", "question without an id")]


def test_malformed_json_file_is_a_data_error(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text('{"data": [')
  with pytest.raises(DataError, match=f"{path}: not valid JSON"):
    readers.read_squad_file(path, "en")
  with pytest.raises(DataError, match="file not found"):
    readers.read_squad_file(tmp_path / "absent.json", "en")


def test_cache_sees_a_changed_file(tmp_path):
  path = tmp_path / "squad.json"
  one = {"data": [{"paragraphs": [{"context": "P.", "qas": [
      {"id": "a", "question": "q?", "answers": [{"answer_start": 0}]}]}]}]}
  path.write_text(json.dumps(one))
  assert len(readers.read_squad_file(path, "en").questions) == 1
  one["data"][0]["paragraphs"][0]["qas"].append({"id": "b", "question": "q2?", "answers": [{"answer_start": 0}]})
  path.write_text(json.dumps(one) + "  ")  # different size -> different cache key
  assert len(readers.read_squad_file(path, "en").questions) == 2


# ---------------------------------------------------------------- MIRACL format

def _write_miracl(tmp_path):
  topics = tmp_path / "topics.tsv"
  qrels = tmp_path / "qrels.txt"
  corpus = tmp_path / "corpus.jsonl"
  topics.write_bytes(
      b"1\tWhere is Mombasa?\n"
      b"2\tCapital of Australia?\n"
      b"3\tOnly irrelevant judgements?\n"
      b"4\t\n"                      # empty question
      b"5\tbad \xff text\n"         # bad UTF-8 line
      b"1\tduplicate topic\n")
  qrels.write_text(
      "1 Q0 d1#0 1\n"
      "1 Q0 d2#0 0\n"
      "1 Q0 d3#0 2\n"
      "2 Q0 d2#0 1\n"
      "2 Q0 gone#9 1\n"             # docid missing from the corpus
      "3 Q0 d1#0 0\n"
      "9 Q0 d1#0 1\n"               # topic missing from topics file
      "2 Q0 d1#0\n")                # malformed line (3 fields)
  docs = [{"docid": "d1#0", "title": "Mombasa", "text": "Mombasa is a port."},
          {"docid": "d2#0", "title": "", "text": "Canberra is the capital."},
          {"docid": "d3#0", "title": "Kenya", "text": "Kenya's ports."}]
  corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n{not json\n"
                    + json.dumps({"docid": "d1#0", "title": "dup", "text": "again"}) + "\n")
  return topics, qrels, corpus


def test_miracl_hand_written(tmp_path):
  topics, qrels, corpus = _write_miracl(tmp_path)
  rs = readers.read_miracl(topics, qrels, corpus, "sw")
  assert [c.doc_id for c in rs.candidates] == ["d1#0", "d2#0", "d3#0"]
  assert rs.candidates[0].text == "Mombasa Mombasa is a port."
  assert rs.candidates[1].text == "Canberra is the capital."  # no title -> text alone
  # Graded relevance; grade 0 means judged not relevant.
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"1": {0: 1, 2: 2}, "2": {1: 1}}
  problems = collections.Counter((pathlib.Path(i.file).name, i.record_id, i.problem) for i in rs.issues)
  assert problems == collections.Counter({
      ("topics.tsv", "4", "empty question"): 1,
      ("topics.tsv", "line 5", "bad UTF-8"): 1,
      ("topics.tsv", "1", "duplicate topic id"): 1,
      ("qrels.txt", "line 8", "malformed qrels line (want qid Q0 docid grade)"): 1,
      ("corpus.jsonl", "line 4", "malformed JSON line"): 1,
      ("corpus.jsonl", "d1#0", "duplicate docid"): 1,
      ("qrels.txt", "9", "qrels topic missing from the topics file"): 1,
      ("qrels.txt", "2/gone#9", "qrels docid missing from the corpus"): 1,
      ("topics.tsv", "3", "no relevant passage in the corpus"): 1,
  })


def test_miracl_strict_raises_on_first_problem(tmp_path):
  topics, qrels, corpus = _write_miracl(tmp_path)
  with pytest.raises(DataError) as error:
    readers.read_miracl(topics, qrels, corpus, "sw", strict=True)
  assert str(error.value) == f"{topics}: record 4: empty question (line 4)"
