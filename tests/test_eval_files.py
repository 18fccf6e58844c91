"""eval.run on your own files: SQuAD-format (passages, sentences) and MIRACL-format triples."""
import json

import pytest

from data_pipelines import readers
from eval import run
from mlir_train import models


def _squad(path, language, paragraphs, breaks=False, bad_question=False):
  """paragraphs: [(sentences, [(qid, question, index of the answer sentence)])]."""
  out = []
  for sentences, questions in paragraphs:
    context = " ".join(sentences)
    starts = [sum(len(s) + 1 for s in sentences[:i]) for i in range(len(sentences))]
    para = {"context": context,
            "qas": [{"id": f"{language}-{qid}", "question": q,
                     "answers": [{"text": sentences[i], "answer_start": starts[i]}]}
                    for qid, q, i in questions]}
    if breaks:
      para["sentences"] = sentences
      para["sentence_breaks"] = [[s, s + len(t)] for s, t in zip(starts, sentences)]
    out.append(para)
  if bad_question:
    out[0]["qas"].append({"id": f"{language}-empty", "question": "  ",
                          "answers": [{"text": "x", "answer_start": 0}]})
  path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": out}]}, ensure_ascii=False))
  return path


def _paragraphs(language, n=6):
  paragraphs = []
  for p in range(n):
    sentences = [f"{language} town {p} lies by river {p}.", f"Its mayor {p} is called Vel{p}.",
                 f"It has {p + 3} bridges."]
    paragraphs.append((sentences, [(f"{p}a", f"{language}: which river is near town {p}?", 0),
                                   (f"{p}b", f"{language}: how many bridges has town {p}?", 2)]))
  paragraphs.append(paragraphs[0][:1] + ([("dup", f"{language}: who is mayor 0?", 1)],))  # same text
  return paragraphs


def test_squad_files_passages_from_the_command_line(tmp_path, capsys):
  from mlir_train import hf_io
  model_dir = tmp_path / "model"
  tiny = models.tiny_random_model(0)
  hf_io.save_hf_dir(model_dir, tiny.config, tiny.params, tiny.tokenizer)
  ar = _squad(tmp_path / "ar.json", "ar", _paragraphs("ar"), bad_question=True)
  th = _squad(tmp_path / "th.json", "th", _paragraphs("th", 4))
  out = tmp_path / "r.json"
  run.main(["--model", str(model_dir), "--benchmark", "squad", "--files", f"ar:{ar},th:{th}",
            "--max_length", "64", "--no_progress", "--out", str(out)])
  result = json.loads(out.read_text())
  assert result["benchmark"] == "squad" and result["languages"] == ["ar", "th"]
  assert result["options"]["files"] == {"ar": [str(ar)], "th": [str(th)]}
  assert result["options"]["batch_tokens"] == 1024  # the CPU default, resolved and recorded
  # Unique paragraphs (the 7th repeats the 1st) and questions, counted from what we wrote.
  assert result["options"]["candidates"] == {"ar": 6, "th": 4}
  assert result["options"]["questions"] == {"ar": 6 * 2 + 1, "th": 4 * 2 + 1}
  assert result["data_issues"]["ar"]["dropped"] == 1
  assert result["data_issues"]["ar"]["dropped_ids"] == [f"{ar}:ar-empty"]
  assert result["data_issues"]["th"]["dropped"] == 0
  for setting in ("mono", "multi"):
    for value in result["settings"][setting]["macro"].values():
      assert 0.0 <= value <= 1.0
  assert result["counts"]["pool_candidates"] == 10
  assert (tmp_path / "r.report.md").is_file() and (tmp_path / "r.per_language.png").is_file()
  assert "ar: 1 records dropped" in capsys.readouterr().out.replace("squad/", "")


def test_squad_sentence_files_breaks_given_or_segmented(tiny_model, tmp_path):
  given = _squad(tmp_path / "de.json", "de", _paragraphs("de", 3), breaks=True)
  plain = _squad(tmp_path / "en.json", "en", _paragraphs("en", 3))
  sets = run.load_sets("squad_sentences", ["de", "en"], files={"de": [given], "en": [plain]})
  # With breaks: every sentence of every paragraph (duplicates kept, as LAReQA): 4 x 3.
  assert len(sets["de"].candidates) == 4 * 3
  # Segmented: the unique paragraphs' sentences, by the segmenter.
  contexts = {c.context for c in sets["en"].candidates}
  assert len(contexts) == 3
  assert len(sets["en"].candidates) == sum(len(readers.sentence_spans(c, "en")) for c in contexts)
  for s in sets.values():  # each question's relevant sentence is the one we answered from
    for q in s.questions:
      sentence = s.candidates[next(iter(q.relevant))].text
      if "river" in q.text:
        assert "river" in sentence
      elif "bridges" in q.text:
        assert "bridges" in sentence
  result = run.evaluate(tiny_model, "squad_sentences", files={"de": [given], "en": [plain]},
                        max_length=64, progress=False)
  assert set(result["settings"]) == {"mono", "multi"}
  assert result["options"]["questions"] == {"de": 7, "en": 7}


def test_miracl_files_triple(tiny_model, tmp_path):
  topics, qrels, corpus = tmp_path / "t.tsv", tmp_path / "q.trec", tmp_path / "c.jsonl"
  topics.write_text("".join(f"q{i}\tquestion {i} about Zent\n" for i in range(5)))
  qrels.write_text("".join(f"q{i} Q0 d{i} 1\n" for i in range(5)) + "q0 Q0 missing 1\n"
                   + "q4 Q0 d3 0\n")
  corpus.write_text("".join(json.dumps({"docid": f"d{i}", "title": "Zent", "text": f"passage {i}"})
                            + "\n" for i in range(7)))
  out = tmp_path / "m.json"
  result = run.evaluate(tiny_model, "miracl_files", files=f"sw:{topics}+{qrels}+{corpus}",
                        max_length=32, progress=False, out=out)
  assert result["options"]["questions"] == {"sw": 5} and result["options"]["candidates"] == {"sw": 7}
  assert result["data_issues"]["sw"]["by_problem"] == {"qrels docid missing from the corpus (dropped)": 1}
  assert 0 <= result["settings"]["mono"]["macro"]["ndcg@10"] <= 1
  assert result["settings"]["mono"]["macro"]["r@100"] == 1.0  # 7 passages: all retrieved


@pytest.mark.fast
def test_files_errors(tiny_model, tmp_path):
  path = _squad(tmp_path / "en.json", "en", _paragraphs("en", 2))
  with pytest.raises(run.EvalError, match="--files"):
    run.evaluate(tiny_model, "squad", progress=False)
  with pytest.raises(run.EvalError, match="reads the data dir"):
    run.evaluate(tiny_model, "xquad_r", files=f"en:{path}", progress=False)
  with pytest.raises(run.EvalError, match="unknown language code 'EN'"):
    run.evaluate(tiny_model, "squad", files=f"EN:{path}", progress=False)
  with pytest.raises(run.EvalError, match="needs 3 path"):
    run.evaluate(tiny_model, "miracl_files", files=f"en:{path}", progress=False)
  with pytest.raises(run.EvalError, match="not found"):
    run.evaluate(tiny_model, "squad", files=f"en:{tmp_path / 'nope.json'}", progress=False)


def test_beir_directory_per_language(tiny_model, tmp_path):
  root = tmp_path / "beir_sw"
  (root / "qrels").mkdir(parents=True)
  (root / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": f"d{i}", "title": "Zent", "text": f"passage {i}"}) + "\n" for i in range(7)))
  (root / "queries.jsonl").write_text("".join(
      json.dumps({"_id": f"q{i}", "text": f"question {i} about Zent"}) + "\n" for i in range(6)))
  (root / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4))
      + "q0\tmissing\t1\nq3\td5\t0\n")
  (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq5\td5\t1\n")
  result = run.evaluate(tiny_model, "beir_files", files=f"sw:{root}", max_length=32,
                        progress=False, out=tmp_path / "b.json")
  # The test split's judged queries only (q4, q5 are not in qrels/test.tsv).
  assert result["options"]["questions"] == {"sw": 4} and result["options"]["candidates"] == {"sw": 7}
  assert result["data_issues"]["sw"]["by_problem"] == {"qrels docid missing from the corpus (dropped)": 1}
  assert result["settings"]["mono"]["macro"]["r@100"] == 1.0
  train = run.evaluate(tiny_model, "beir_files", files=f"sw:{root}", split="train", max_length=32,
                       progress=False)
  assert train["options"]["questions"] == {"sw": 1}
  with pytest.raises(run.EvalError, match=r"no qrels/dev.tsv \(its qrels: test, train"):
    run.evaluate(tiny_model, "beir_files", files=f"sw:{root}", split="dev", progress=False)
