"""End to end: eval.run with a tiny random model on real data subsets."""
import json

import pytest

from eval import run
from mlir_train import models


def _is_png(path):
  return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xquad_r_two_languages_json_report_and_plots(tiny_model, data_dir, tmp_path):
  out = tmp_path / "xquad_r.json"
  result = run.evaluate(tiny_model, "xquad_r", ["en", "de"], data_dir=data_dir, max_length=64,
                        progress=False, out=out)
  saved = json.loads(out.read_text())
  assert saved == result
  assert saved["benchmark"] == "xquad_r" and saved["model"] == "tiny-random-0"
  assert saved["languages"] == ["en", "de"]
  s = saved["settings"]
  assert set(s) == {"mono", "cross", "multi"}
  assert set(s["mono"]["macro"]) == {"map", "r@1"} and set(s["multi"]["macro"]) == {"map", "r@10"}
  assert set(s["mono"]["per_language"]) == {"en", "de"}
  assert set(s["cross"]["per_pair"]) == {"en-de", "de-en"}
  assert set(s["multi"]["per_language"]) == {"en", "de"}
  for table in [s["mono"]["macro"], s["cross"]["macro"], s["multi"]["macro"],
                *s["cross"]["per_pair"].values()]:
    for value in table.values():
      assert 0.0 <= value <= 1.0
  assert s["mono"]["macro"]["map"] == pytest.approx(
      (s["mono"]["per_language"]["en"]["map"] + s["mono"]["per_language"]["de"]["map"]) / 2)
  bias = saved["language_bias"]
  assert set(bias["per_language"]) == {"en", "de"}
  # two languages: each spread is |rank_en - rank_de| < pool size
  assert 0 <= bias["macro"] < saved["counts"]["pool_candidates"]
  # counts from the data README: 1,190 questions; en 1,180 and de 1,276 sentences
  assert saved["counts"]["per_language"] == {"en": {"queries": 1190, "candidates": 1180},
                                             "de": {"queries": 1190, "candidates": 1276}}
  assert saved["counts"]["pool_candidates"] == 1180 + 1276
  assert set(saved["data_issues"]) == {"en", "de"}
  assert saved["timing_seconds"]["total"] > 0
  report = tmp_path / "xquad_r.report.md"
  assert "en-de" not in report.read_text() and "| en | " in report.read_text()
  assert _is_png(tmp_path / "xquad_r.per_language.png")
  assert _is_png(tmp_path / "xquad_r.heatmap.png")


def test_tydi_cli_two_languages(data_dir, tmp_path, capsys):
  out = tmp_path / "tydi.json"
  run.main(["--model", str(_export_tiny(tmp_path)), "--benchmark", "tydiqa_goldp",
            "--languages", "en,ru", "--data_dir", str(data_dir), "--max_length", "64",
            "--no_progress", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert set(saved["settings"]) == {"mono", "multi"} and "language_bias" not in saved
  names = {"mrr@10", "r@1", "r@10", "ndcg@10", "map"}
  assert set(saved["settings"]["mono"]["macro"]) == names
  assert set(saved["settings"]["multi"]["macro"]) == names | {"top10_same_language"}
  # TyDi GoldP dev questions (data README): en 440, ru 812
  assert saved["counts"]["per_language"]["en"]["queries"] == 440
  assert saved["counts"]["per_language"]["ru"]["queries"] == 812
  for language in ("en", "ru"):
    mono = saved["settings"]["mono"]["per_language"][language]
    assert mono["r@1"] <= mono["mrr@10"] <= mono["r@10"] <= 1
  assert (tmp_path / "tydi.report.md").is_file() and _is_png(tmp_path / "tydi.per_language.png")
  assert "tydiqa_goldp" in capsys.readouterr().out


def _export_tiny(tmp_path):
  """The tiny model as a Hugging Face directory, so the CLI loads it by path."""
  from mlir_train import hf_io
  model = models.tiny_random_model(seed=1)
  path = tmp_path / "tiny_hf"
  hf_io.save_hf_dir(path, model.config, model.params, model.tokenizer)
  return path


@pytest.mark.fast
def test_unknown_language_and_benchmark_are_clear_errors(tiny_model):
  with pytest.raises(run.EvalError, match="unknown language.*xx"):
    run.evaluate(tiny_model, "xquad_r", ["en", "xx"], progress=False)
  with pytest.raises(run.EvalError, match="unknown benchmark"):
    run.evaluate(tiny_model, "squadx", progress=False)
  with pytest.raises(run.EvalError, match="--miracl_corpus"):
    run.evaluate(tiny_model, "miracl", ["sw"], progress=False)


def _subsample_invariants(full, small, max_documents):
  """Every kept question keeps exactly its relevant texts; documents are whole and first."""
  for language, data in small.items():
    source = full[language]
    keys = sorted({run.document_key(c) for c in source.candidates})[:max_documents]
    assert {run.document_key(c) for c in data.candidates} == set(keys)
    # whole documents: every candidate of a kept document is kept, in the original order
    assert [c.doc_id for c in data.candidates] == [
        c.doc_id for c in source.candidates if run.document_key(c) in set(keys)]
    by_qid = {q.qid: q for q in source.questions}
    for question in data.questions:
      original = by_qid[question.qid]
      assert question.text == original.text
      assert ({data.candidates[i].doc_id: g for i, g in question.relevant.items()}
              == {source.candidates[i].doc_id: g for i, g in original.relevant.items()})
    # no question answered inside the kept documents was lost
    kept_ids = {c.doc_id for c in data.candidates}
    expected = {q.qid for q in source.questions
                if all(source.candidates[i].doc_id in kept_ids for i in q.relevant)}
    assert {q.qid for q in data.questions} == expected


@pytest.mark.fast
def test_subsample_documents_keeps_whole_paragraphs_and_their_questions(data_dir):
  languages = ["de", "en", "th"]
  full = run.load_sets("xquad_r", languages, data_dir, False, None)
  small = run.subsample_documents(full, 12)
  _subsample_invariants(full, small, 12)
  # XQuAD-R is 11-way parallel: the same question ids survive in every language
  qids = [{q.qid for q in small[l].questions} for l in languages]
  assert qids[0] == qids[1] == qids[2] and 0 < len(qids[0]) < len(full["en"].questions)
  assert run.subsample_documents(full, None) is full


@pytest.mark.fast
def test_subsample_documents_tydi_passages(data_dir):
  full = run.load_sets("tydiqa_goldp", ["bn", "sw"], data_dir, False, None)
  small = run.subsample_documents(full, 50)
  _subsample_invariants(full, small, 50)
  assert all(len(small[l].candidates) == 50 for l in small)


def _markdown_tables(text):
  """Every markdown table in `text`: (header cells, [row cells])."""
  tables, block = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    elif block:
      tables.append((block[0], block[2:]))  # block[1] is the |---| rule
      block = []
  return tables


def _per_pair_rows_of_report(text):
  """{(query language, corpus language): {metric: cell}} from the report's per-pair table."""
  found = [(header, rows) for header, rows in _markdown_tables(text) if header[:2] == ["query", "corpus"]]
  assert len(found) == 1, "exactly one per-pair table"
  header, rows = found[0]
  table = {(row[0], row[1]): dict(zip(header[2:], row[2:])) for row in rows}
  assert len(table) == len(rows), "one row per pair"
  return table


def _check_every_pair_in_report(result):
  from eval import report
  per_pair = result["settings"]["cross"]["per_pair"]
  table = _per_pair_rows_of_report(report.markdown(result))
  assert set(table) == {tuple(key.split("-")) for key in per_pair}
  for key, metrics in per_pair.items():
    assert set(metrics) == {"map", "r@1"}
    row = table[tuple(key.split("-"))]
    assert row == {name: f"{value:.3f}" for name, value in metrics.items()}, key


@pytest.mark.fast
def test_report_has_a_per_pair_table_with_every_cross_pair(tmp_path):
  import pathlib
  languages = ["en", "de", "th"]
  pairs = [(a, b) for a in languages for b in languages if a != b]
  # distinct values per pair and metric (3 decimals tell them apart)
  per_pair = {f"{a}-{b}": {"map": 0.1 + 0.111 * i, "r@1": 0.05 + 0.107 * i}
              for i, (a, b) in enumerate(pairs)}
  result = {"benchmark": "xquad_r", "model": "hand-made", "languages": languages,
            "settings": {"mono": {"macro": {"map": 0.9, "r@1": 0.8},
                                  "per_language": {l: {"map": 0.9, "r@1": 0.8} for l in languages}},
                         "cross": {"macro": {"map": 0.5, "r@1": 0.4}, "per_pair": per_pair},
                         "multi": {"macro": {"map": 0.3, "r@10": 0.7},
                                   "per_language": {l: {"map": 0.3, "r@10": 0.7} for l in languages}}},
            "language_bias": {"macro": 12.0, "per_language": {l: 12.0 for l in languages}}}
  _check_every_pair_in_report(result)
  from eval import report
  text = report.markdown(result)
  # rows follow the languages order: query language, then corpus language
  rows = list(_per_pair_rows_of_report(text))
  assert rows == pairs
  # hand-written cell for one pair: en -> th is pair 1: map 0.211, r@1 0.157
  assert "| en | th | 0.211 | 0.157 |" in text
  # written to the report file beside the JSON as well
  report.write_report(result, tmp_path / "hand.json")
  assert _per_pair_rows_of_report((tmp_path / "hand.report.md").read_text()) == \
      _per_pair_rows_of_report(text)
  # the committed default-model results (110 and 42 ordered pairs)
  for name, n_pairs in (("xquad_r", 110), ("mlqa_r", 42)):
    saved = json.loads((pathlib.Path(__file__).resolve().parents[1] / "results" / "e5-small"
                        / f"{name}.json").read_text())
    assert len(saved["settings"]["cross"]["per_pair"]) == n_pairs
    _check_every_pair_in_report(saved)
  # TyDi has no cross setting: no per-pair table
  assert not [h for h, _ in _markdown_tables(report.markdown(
      {**result, "settings": {"mono": result["settings"]["mono"]}})) if h[:2] == ["query", "corpus"]]


@pytest.mark.fast
def test_a_bad_batch_bound_is_refused_before_any_work(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    run.main(["--model", "no-such-model", "--benchmark", "xquad_r", "--batch_tokens", "-1",
              "--no_progress", "--out", str(tmp_path / "r.json")])
  assert e.value.code == 2  # not the unknown model: the bound is checked first
  assert "--batch_tokens must be an integer >= 0, got -1" in capsys.readouterr().err
