"""What eval.run shows: one language without a pooled block, own files by path, merged
duplicates and cut texts in report.md, the reasons of an empty corpus, TREC run files."""
import json

import matplotlib.axes
import numpy as np
import pytest
import pytrec_eval

from eval import report, run
from mlir_train import models
from tests.test_eval_files import _paragraphs, _squad


@pytest.fixture(scope="module")
def tiny_model():
  return models.tiny_random_model(seed=0)


def _result(languages):
  per = lambda v: {l: {"map": v} for l in languages}
  return {"benchmark": "squad", "model": "hand-made", "languages": languages,
          "settings": {"mono": {"macro": {"map": 0.61}, "per_language": per(0.61)},
                       "multi": {"macro": {"map": 0.61}, "per_language": per(0.61)}},
          "language_bias": {"macro": 0.0, "per_language": {l: 0.0 for l in languages}},
          "options": {"split": "dev"}}


def test_one_language_has_no_multi_block_bias_or_plot_bar(tmp_path, monkeypatch):
  bars = []
  original = matplotlib.axes.Axes.bar
  monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                      lambda self, *a, **kw: bars.append(kw.get("label")) or original(self, *a, **kw))
  one = _result(["ar"])
  text = report.markdown(one)
  assert "**mono**" in text and "**multi**" not in text and "Language bias" not in text
  assert "multi" not in report.headline(one)
  report.plot_per_language(one, tmp_path / "one.png")
  assert bars == ["mono"]
  # Two languages: the pooled setting is a search among both, and stays.
  bars.clear()
  two = _result(["ar", "th"])
  assert "**multi**" in report.markdown(two) and "multi" in report.headline(two)
  report.plot_per_language(two, tmp_path / "two.png")
  assert bars == ["mono", "multi"]


def _cut(model, texts, prompt, max_length):
  """How many texts are longer than max_length tokens with their prompt (the hand count)."""
  return sum(len(model.tokenizer(prompt + t)["input_ids"]) > max_length for t in texts)


def test_own_file_report_shows_its_path_merged_duplicates_and_cut_texts(tiny_model, tmp_path):
  paragraphs = _paragraphs("ar")  # 7 paragraphs, the last repeats the first (its sentences)
  for sentences, _ in paragraphs[:2]:  # two longer ones
    sentences.append("It also has a very old stone church beside the long market street.")
  path = _squad(tmp_path / "ar.json", "ar", paragraphs)
  out = tmp_path / "ar.result.json"
  result = run.evaluate(tiny_model, "squad", files=f"ar:{path}", max_length=70,
                        progress=False, out=out)
  assert result["options"]["split"] is None and result["options"]["files"] == {"ar": [str(path)]}
  assert result["merged_duplicates"] == {"ar": {"paragraphs": 7, "unique": 6}}
  text = (tmp_path / "ar.result.report.md").read_text()
  assert f"Data: files ar: {path}." in text and "split dev" not in text
  assert "- ar: 7 paragraphs, 6 unique: 1 duplicates merged into one candidate each." in text
  contexts = sorted({" ".join(s) for s, _ in paragraphs})
  questions = [q for _, qs in paragraphs for _, q, _ in qs]
  cut = _cut(tiny_model, contexts, "passage: ", 70)
  assert len(contexts) == 6 and 0 < cut < len(contexts)  # the check below tells counts apart
  assert f"- candidates: {cut} of 6 texts ({100 * cut / 6:.1f}%) cut at max_length 70" in text
  assert _cut(tiny_model, questions, "query: ", 70) == 0 and "- questions:" not in text
  assert "**multi**" not in text


def test_no_candidates_names_the_first_dropped_records(tiny_model, tmp_path):
  topics, qrels, corpus = tmp_path / "t.tsv", tmp_path / "q.trec", tmp_path / "c.jsonl"
  topics.write_text("q0\tquestion\n")
  qrels.write_text("q0 Q0 d0 1\n")
  corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"passage {i}"}) + "\n"
                            for i in range(5)))  # "id", not MIRACL's "docid"
  with pytest.raises(run.EvalError) as error:
    run.evaluate(tiny_model, "miracl_files", files=f"sw:{topics}+{qrels}+{corpus}",
                 progress=False)
  message = str(error.value)
  assert message.startswith("miracl_files/sw: no candidates; ")
  assert f"{corpus}: record " in message and "docid" in message and "... " in message


def _read_run(path):
  run_, ranks = {}, {}
  for line in path.read_text().splitlines():
    qid, q0, docid, rank, score, tag = line.split()
    assert q0 == "Q0" and tag
    run_.setdefault(qid, {})[docid] = float(score)
    ranks.setdefault(qid, []).append((int(rank), float(score)))
  for qid, ranked in ranks.items():  # ranks 1..k, best first
    assert [r for r, _ in ranked] == list(range(1, len(ranked) + 1))
    assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))
  return run_


def test_trec_run_read_back_by_pytrec_eval_gives_our_metrics(tiny_model, tmp_path):
  """Your MIRACL-format qrels (the independent truth) against the written run."""
  rng = np.random.default_rng(0)
  topics, qrels_file, corpus = tmp_path / "t.tsv", tmp_path / "q.trec", tmp_path / "c.jsonl"
  words = ["river", "bridge", "mayor", "town", "forest", "school", "market", "harbour"]
  corpus.write_text("".join(json.dumps({"docid": f"doc-{i}", "title": "", "text": " ".join(
      rng.choice(words, 6))}) + "\n" for i in range(150)))
  qrels = {f"q{i}": {f"doc-{j}": 1 for j in rng.choice(150, 1 + i % 3, replace=False)}
           for i in range(12)}
  topics.write_text("".join(f"{q}\twhere is the {words[i % 8]} {i}?\n" for i, q in enumerate(qrels)))
  qrels_file.write_text("".join(f"{q} Q0 {d} {g}\n" for q, ds in qrels.items() for d, g in ds.items()))
  out, trec_path = tmp_path / "r.json", tmp_path / "r.trec"
  run.main(["--model", "tiny-random", "--benchmark", "miracl_files", "--files",
            f"sw:{topics}+{qrels_file}+{corpus}", "--max_length", "32", "--no_progress",
            "--out", str(out), "--trec_run", str(trec_path)])
  result = json.loads(out.read_text())
  ranked = _read_run(trec_path)
  assert set(ranked) == set(qrels) and all(len(d) == 100 for d in ranked.values())
  scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100"}).evaluate(ranked)
  ours = result["settings"]["mono"]["macro"]
  assert np.mean([s["ndcg_cut_10"] for s in scores.values()]) == pytest.approx(ours["ndcg@10"], abs=1e-6)
  assert np.mean([s["recall_100"] for s in scores.values()]) == pytest.approx(ours["r@100"], abs=1e-6)
  assert 0 < ours["ndcg@10"] < 1 and 0 < ours["r@100"] < 1  # neither end: the check bites
  written = {}
  for line in (tmp_path / "r.qrels").read_text().splitlines():
    qid, _, docid, grade = line.split()
    written.setdefault(qid, {})[docid] = int(grade)
  assert written == qrels


def test_trec_run_of_two_languages_prefixes_ids_and_gives_our_map(tiny_model, tmp_path):
  """Parallel files share question ids: LANG/ prefixes keep them apart; the run holds
  every candidate (5 < depth), so trec_eval's MAP is the project's mono mAP."""
  files = {l: _squad(tmp_path / f"{l}.json", l, _paragraphs(l, 5)) for l in ("ar", "th")}
  result = run.evaluate(tiny_model, "squad", files={l: [p] for l, p in files.items()},
                        max_length=32, progress=False, trec_run=tmp_path / "run.txt",
                        trec_depth=10)
  ranked = _read_run(tmp_path / "run.txt")
  qrels = {}
  for line in (tmp_path / "run.qrels").read_text().splitlines():
    qid, _, docid, grade = line.split()
    qrels.setdefault(qid, {})[docid] = int(grade)
  assert set(ranked) == set(qrels)
  scores = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(ranked)
  for language in ("ar", "th"):
    mine = {q: d for q, d in ranked.items() if q.startswith(language + "/")}
    assert len(mine) == result["options"]["questions"][language]
    assert all(len(d) == 5 and all(x.startswith(language + "/") for x in d) for d in mine.values())
    trec_map = np.mean([scores[q]["map"] for q in mine])
    assert trec_map == pytest.approx(result["settings"]["mono"]["per_language"][language]["map"],
                                     abs=1e-6)
