"""Zero-shot evaluation of one model on one benchmark: JSON + report + plots.

  python -m eval.run --model e5-small --benchmark xquad_r --out results/e5-small/xquad_r.json

Loads each language of the benchmark with `data_pipelines.readers` (unusable
records are logged and counted, never dropped silently), embeds every question
and candidate once ("query: " / "passage: " prefixes), runs the protocol of
`eval.protocols` and writes the result JSON, `<stem>.report.md` and plots beside
it. `evaluate(...)` is the same as a Python call returning the JSON dict.
`--trec_run PATH` also writes each language's ranking as a TREC run file (and the
judgements as qrels beside it, `eval.trec`). Many models of one architecture in one
pass: `eval.population`, which shares `request`, `read`, `encode_sets_many` and `score`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import pathlib
import sys
import time
from typing import Mapping, Sequence

from configs import split_list
from data_pipelines import files, readers
from data_pipelines.errors import ProjectError
from eval import benchmarks, protocols, report, search, trec
from mlir_train import config_validation

log = logging.getLogger(__name__)

MIRACL_LANGUAGES = readers.MIRACL_LANGUAGES
# Benchmark name -> every language it accepts; the definitions are in eval.benchmarks.
BENCHMARK_LANGUAGES = benchmarks.languages()


class EvalError(ProjectError, ValueError):
  """Bad evaluation request (unknown benchmark or language, missing MIRACL corpus)."""


def load_sets(benchmark: str, languages: Sequence[str], data_dir=None, strict: bool = False,
              miracl_corpus: str | None = None, split: str | None = None,
              files: Mapping[str, Sequence[str]] | None = None
              ) -> dict[str, readers.RetrievalSet]:
  """Read one RetrievalSet per language with the benchmark's reader (`eval.benchmarks`);
  `split=None` is the benchmark's default (dev; AfriQA: test)."""
  try:
    bench = benchmarks.get(benchmark)
    return {language: bench.read(data_dir, language, split, strict, miracl_corpus=miracl_corpus,
                                 files=files)
            for language in languages}
  except benchmarks.BenchmarkError as e:
    raise EvalError(str(e)) from None


def subsample_questions(sets: dict[str, readers.RetrievalSet], max_questions: int | None):
  """Keep, in every language, its first `max_questions` question ids in sorted order.

  Parallel sets with one id list (XQuAD-R) keep the same ids in every language;
  corpora are kept whole. For quick checks only: the published protocol uses every
  question.
  """
  if not max_questions:
    return sets
  out = {}
  for language, data in sets.items():
    keep = set(sorted(q.qid for q in data.questions)[:max_questions])
    out[language] = dataclasses.replace(data, questions=[q for q in data.questions if q.qid in keep])
  return out


def document_key(candidate: readers.Candidate) -> str:
  """The document a candidate belongs to: its paragraph for sentence candidates
  (doc_id "article.paragraph:sentence"), else the passage itself."""
  return candidate.doc_id.split(":", 1)[0]


def subsample_documents(sets: dict[str, readers.RetrievalSet], max_documents: int | None):
  """Keep, in every language, its first `max_documents` documents (sorted by id) and the
  questions whose relevant candidates all lie in them.

  Shrinks corpus and questions together, so retrieval stays a search among whole
  paragraphs or passages. XQuAD-R's paragraph ids are shared by its languages, so it
  keeps the same parallel paragraphs and question ids everywhere. For quick studies
  only: the published protocol uses every document.
  """
  if not max_documents:
    return sets
  out = {}
  for language, data in sets.items():
    keep = set(sorted({document_key(c) for c in data.candidates})[:max_documents])
    new_index = {}
    for i, candidate in enumerate(data.candidates):
      if document_key(candidate) in keep:
        new_index[i] = len(new_index)
    questions = [
        dataclasses.replace(q, relevant={new_index[i]: g for i, g in q.relevant.items()})
        for q in data.questions if q.relevant and all(i in new_index for i in q.relevant)]
    candidates = [data.candidates[i] for i in new_index]
    out[language] = dataclasses.replace(data, questions=questions, candidates=candidates)
  return out


def encode_sets(model, sets: Mapping[str, readers.RetrievalSet], batch_size: int = 64,
                max_length: int = 512, progress: bool = True,
                batch_tokens: int | None = None) -> tuple[dict, dict, dict]:
  """Embed every question and candidate once: ({language: EncodedSet}, seconds per language,
  {kind: {"texts": n, "truncated": texts longer than max_length}}).

  All languages' texts of one kind go through one `encode.embed` call: sorted
  together by length, batches are fuller and padded less (a language's few long
  texts no longer pad a whole batch of short ones; on XQuAD-R 16% fewer padded
  FLOPs than one call per language). The seconds per
  language are the total split in proportion to each language's texts.
  """
  from mlir_train import encode  # imported here so protocol code needs no model stack

  def embed(texts, kind, stats):
    return [encode.embed(model, texts, kind, batch_size=batch_size, max_length=max_length,
                         progress=progress, stats=stats[0], batch_tokens=batch_tokens)]
  return _encode_sets(embed, sets, 1)[0]


def encode_sets_many(models: Sequence, sets: Mapping[str, readers.RetrievalSet],
                     batch_size: int = 64, max_length: int = 512, progress: bool = True,
                     batch_tokens: int | None = None, stacked: bool = True
                     ) -> list[tuple[dict, dict, dict]]:
  """`encode_sets` of each of `models` (one architecture and tokenizer), in one pass: each
  kind's texts tokenised once and encoded by every model (`encode.embed_many`: in one
  stacked forward pass, or with `stacked=False` one model after another). The seconds are
  the pass's, split evenly between the models."""
  from mlir_train import encode

  def embed(texts, kind, stats):
    return encode.embed_many(models, texts, kind, batch_size=batch_size, max_length=max_length,
                             progress=progress, stats=stats, batch_tokens=batch_tokens,
                             stacked=stacked)
  return _encode_sets(embed, sets, len(models))


def _encode_sets(embed, sets: Mapping[str, readers.RetrievalSet], n_models: int
                 ) -> list[tuple[dict, dict, dict]]:
  """`encode_sets` for `n_models` models; embed(texts, kind, [stats per model]) gives one
  [len(texts), hidden] array per model."""
  truncation = [{} for _ in range(n_models)]

  def pooled(texts_by_language: dict, kind: str, name: str) -> list[dict]:
    flat = [t for texts in texts_by_language.values() for t in texts]
    vectors = embed(flat, kind, [t.setdefault(name, {}) for t in truncation])
    outs = []
    for model_vectors in vectors:
      out, start = {}, 0
      for language, texts in texts_by_language.items():
        out[language] = model_vectors[start:start + len(texts)]
        start += len(texts)
      outs.append(out)
    return outs

  start = time.perf_counter()
  questions = pooled({lang: [q.text for q in d.questions] for lang, d in sets.items()}, "query",
                     "questions")
  candidates = pooled({lang: [c.text for c in d.candidates] for lang, d in sets.items()},
                      "passage", "candidates")
  # AfriQA: the pivot-language queries.
  has_translated = {lang: [q.translated or "" for q in d.questions] for lang, d in sets.items()
                    if any(q.translated is not None for q in d.questions)}
  translated = (pooled(has_translated, "query", "translated") if has_translated
                else [{}] * n_models)
  total = (time.perf_counter() - start) / n_models
  n_texts = {lang: len(d.questions) + len(d.candidates)
             + (len(d.questions) if lang in has_translated else 0) for lang, d in sets.items()}
  seconds = {language: round(total * n_texts[language] / max(1, sum(n_texts.values())), 2)
             for language in sets}
  results = []
  for k in range(n_models):
    encoded = {}
    for language, data in sets.items():
      encoded[language] = protocols.EncodedSet(data, questions[k][language],
                                               candidates[k][language],
                                               translated[k].get(language))
    results.append((encoded, seconds, truncation[k]))
  for language, data in sets.items():
    log.info("%s/%s: %d questions, %d candidates embedded (~%.1fs of %.1fs)%s", data.benchmark,
             language, len(data.questions), len(data.candidates), seconds[language], total,
             f" by each of {n_models} models" if n_models > 1 else "")
  return results


FIRST_REASONS = 3  # dropped records named in an error about an empty set


def check_candidates(sets: Mapping[str, readers.RetrievalSet]) -> None:
  """A language left without candidates: one `EvalError` that names why its first dropped
  records were dropped (the protocol would only say "no candidates")."""
  for language, data in sets.items():
    if data.candidates:
      continue
    dropped = [i for i in data.issues if i.dropped]
    why = ("; ".join(i.message() for i in dropped[:FIRST_REASONS])
           + (f"; ... {len(dropped) - FIRST_REASONS} more" if len(dropped) > FIRST_REASONS else "")
           if dropped else "no record was dropped: the corpus is empty")
    raise EvalError(f"{data.benchmark}/{language}: no candidates; {len(dropped)} records "
                    f"dropped, first: {why}")


def merged_paragraphs(benchmark: str, files: Mapping[str, Sequence[str]] | None,
                      sets: Mapping[str, readers.RetrievalSet]) -> dict:
  """{language: {"paragraphs", "unique"}} of SQuAD-format files whose candidates are
  their unique paragraphs (squad; squad_sentences cut by sentencex), when some repeat
  (the readers merge paragraphs of the same text into one candidate)."""
  if not files or benchmark not in ("squad", "squad_sentences"):
    return {}
  out = {}
  for language in sets:
    path = pathlib.Path(files[language][0])
    obj = readers._load_json(path)
    contexts = [c for _, _, c in readers._usable_paragraphs(obj, path, readers.IssueLog())]
    if benchmark == "squad_sentences" and any(
        "sentence_breaks" in p for _, p in readers._squad_paragraphs(obj, path, readers.IssueLog())):
      continue  # the file's own sentences: duplicates kept (LAReQA)
    if len(set(contexts)) < len(contexts):
      out[language] = {"paragraphs": len(contexts), "unique": len(set(contexts))}
  return out


def _issues(sets: Mapping[str, readers.RetrievalSet]) -> dict:
  out = {}
  for language, data in sets.items():
    by_problem = {}
    for issue in data.issues:
      key = f"{issue.problem} ({'dropped' if issue.dropped else 'kept'})"
      by_problem[key] = by_problem.get(key, 0) + 1
    out[language] = {"records": len(data.issues), "dropped": data.issues.num_dropped,
                     "by_problem": by_problem,
                     "dropped_ids": [f"{i.file}:{i.record_id}" for i in data.issues if i.dropped]}
  return out


def _json_safe(value):
  """NaN/inf -> None (strict JSON), numpy scalars -> Python numbers."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


@dataclasses.dataclass(frozen=True)
class Request:
  """One benchmark evaluation's checked options (`request`), shared by every model it scores."""
  benchmark: str
  bench: benchmarks.Benchmark
  languages: list
  split: str
  files: dict | None
  data_dir: object = None
  batch_size: int = 64
  batch_tokens: int = 0
  max_length: int = 512
  progress: bool = True
  strict: bool = False
  miracl_corpus: str | None = None
  chunk_size: int | None = None
  query_block: int | None = None
  per_query: bool = False
  max_questions: int | None = None
  max_documents: int | None = None


def request(benchmark: str, languages: Sequence[str] | None = None, data_dir=None,
            batch_size: int = 64, max_length: int = 512, progress: bool = True,
            strict: bool = False, miracl_corpus: str | None = None,
            chunk_size: int | None = None, query_block: int | None = None,
            per_query: bool = False, max_questions: int | None = None,
            max_documents: int | None = None, split: str | None = None,
            files: str | Mapping[str, Sequence[str]] | None = None,
            batch_tokens: int | None = None) -> Request:
  """The options of `evaluate` checked (one `EvalError` line each) and resolved (split,
  languages, files, batch_tokens, search shapes), before any model is loaded."""
  try:
    bench = benchmarks.get(benchmark)
    split = bench.check_split(split)
  except benchmarks.BenchmarkError as e:
    raise EvalError(str(e)) from None
  try:
    files = benchmarks.parse_files(files) if isinstance(files, str) else (
        {l: [p] if isinstance(p, (str, os.PathLike)) else list(p) for l, p in files.items()}
        if files else None)
  except benchmarks.BenchmarkError as e:
    raise EvalError(str(e)) from None
  if bench.needs_files and not files:
    raise EvalError(f"{benchmark} evaluates your files: pass --files LANGUAGE:PATH,... "
                    f"(python API: files={{language: [paths]}})")
  if files and not bench.needs_files:
    file_benchmarks = ", ".join(n for n, b in benchmarks.BENCHMARKS.items() if b.needs_files)
    raise EvalError(f"--files is for the file benchmarks ({file_benchmarks}); {benchmark} "
                    "reads the data dir")
  languages = list(languages or (list(files) if files else bench.default_languages(split)))
  unknown = [l for l in languages if l not in (files if files else bench.languages)]
  if unknown:
    raise EvalError(f"{benchmark}: unknown language(s) {', '.join(unknown)}; expected some of "
                    f"{', '.join(files if files else bench.languages)}"
                    + (" (those given in --files)" if files else ""))
  for name, value, least in (("batch_size", batch_size, 1), ("batch_tokens", batch_tokens, 0)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
      raise EvalError(f"--{name} must be an integer >= {least}, got {value!r}")
  from mlir_train import encode
  batch_tokens = encode.default_batch_tokens() if batch_tokens is None else batch_tokens
  chunk_size, query_block = search.resolve_shapes(chunk_size, query_block)
  return Request(benchmark, bench, languages, split, files, data_dir, batch_size, batch_tokens,
                 max_length, progress, strict, miracl_corpus, chunk_size, query_block, per_query,
                 max_questions, max_documents)


def read(req: Request) -> tuple[dict[str, readers.RetrievalSet], dict]:
  """(the request's sets, read and subsampled; `merged_paragraphs` of its files)."""
  sets = load_sets(req.benchmark, req.languages, req.data_dir, req.strict, req.miracl_corpus,
                   req.split, req.files)
  check_candidates(sets)
  merged = merged_paragraphs(req.benchmark, req.files, sets)
  sets = subsample_questions(subsample_documents(sets, req.max_documents), req.max_questions)
  check_candidates(sets)
  return sets, merged


def score(req: Request, model_name: str, encoded: Mapping[str, protocols.EncodedSet],
          sets: Mapping[str, readers.RetrievalSet], merged: dict, truncation: dict,
          timing: dict, trec_run: str | os.PathLike | None = None,
          trec_depth: int = trec.DEFAULT_DEPTH) -> dict:
  """One model's result dict from its encoded sets: the benchmark's protocol (and the TREC
  run), the data issues, the options and `timing` ("load_model", "encode",
  "encode_per_language" seconds; the search's and the total are added)."""
  started = time.perf_counter()
  search_options = {"chunk_size": req.chunk_size, "query_block": req.query_block}
  result = req.bench.protocol(encoded, search_options=search_options)
  per_query_values = result.pop("per_query", None)
  if trec_run is not None:
    trec.write_run(encoded, trec_run, trec_depth, model_name, search_options)
  searched = time.perf_counter() - started
  files, languages = req.files, req.languages
  result = {
      "benchmark": req.benchmark,
      "model": model_name,
      "languages": languages,
      **result,
      "data_issues": _issues(sets),
      "options": {"batch_size": req.batch_size, "batch_tokens": req.batch_tokens,
                  "max_length": req.max_length, "chunk_size": req.chunk_size,
                  "query_block": req.query_block,
                  "search_shapes": search.shape_rule(req.chunk_size, req.query_block),
                  "strict": req.strict, "max_questions": req.max_questions,
                  "max_documents": req.max_documents, "split": None if files else req.split,
                  **({"files": {l: [str(p) for p in files[l]] for l in languages}} if files else {}),
                  "questions": {l: len(d.questions) for l, d in sets.items()},
                  "candidates": {l: len(d.candidates) for l, d in sets.items()},
                  "truncated": truncation,  # texts longer than max_length, cut
                  **({"trec_run": str(trec_run), "trec_depth": trec_depth} if trec_run else {})},
      **({"merged_duplicates": merged} if merged else {}),
      "timing_seconds": {"load_model": round(timing["load_model"], 2),
                         "encode": round(timing["encode"], 2),
                         "encode_per_language": timing["encode_per_language"],
                         "search_and_metrics": round(searched, 2),
                         "total": round(timing["load_model"] + timing["encode"] + searched, 2)},
  }
  if req.per_query and per_query_values is not None:
    result["per_query"] = per_query_values
  return _json_safe(result)


def evaluate(model_or_name, benchmark: str, languages: Sequence[str] | None = None, data_dir=None,
             batch_size: int = 64, max_length: int = 512, progress: bool = True,
             out: str | os.PathLike | None = None, strict: bool = False,
             miracl_corpus: str | None = None, chunk_size: int | None = None,
             query_block: int | None = None, per_query: bool = False,
             max_questions: int | None = None, max_documents: int | None = None,
             split: str | None = None,
             files: str | Mapping[str, Sequence[str]] | None = None,
             batch_tokens: int | None = None, trec_run: str | os.PathLike | None = None,
             trec_depth: int = trec.DEFAULT_DEPTH) -> dict:
  """Evaluate a model (a `LoadedModel`, or a name/path for `load_model`) on one benchmark.

  `split=None` is the benchmark's default split (dev; AfriQA: test); `languages=None`
  all of the benchmark's languages that have data in that split (`eval.benchmarks`).

  `batch_size` and `batch_tokens` bound the texts and padded tokens of one encoder call
  (`mlir_train.encode.embed`; batch_tokens None: the backend's default, recorded in the
  result's options).

  `max_questions` keeps only that many question ids (see `subsample_questions`);
  `max_documents` only that many paragraphs or passages (see `subsample_documents`).
  With `per_query`, the result also holds `per_query[setting][language]`: each
  query's average precision in reading order (for paired tests across queries).

  `trec_run`: a path for each language's "mono" ranking (top `trec_depth`) as a TREC
  run file, with its qrels beside it (`eval.trec`).

  Returns the result dict (see module docstring of eval.protocols for the
  settings); with `out`, also writes it as JSON plus a report and plots. Own files
  (`files`) are recorded by path, with split None. The parts (`request`, `read`,
  `encode_sets`, `score`) are shared with `eval.population.evaluate_many`.
  """
  req = request(benchmark, languages, data_dir, batch_size, max_length, progress, strict,
                miracl_corpus, chunk_size, query_block, per_query, max_questions, max_documents,
                split, files, batch_tokens)
  started = time.perf_counter()
  model = load(model_or_name)
  loaded = time.perf_counter()
  sets, merged = read(req)
  encoded, encode_seconds, truncation = encode_sets(model, sets, req.batch_size, req.max_length,
                                                    req.progress, req.batch_tokens)
  timing = {"load_model": loaded - started, "encode": time.perf_counter() - loaded,
            "encode_per_language": encode_seconds}
  result = score(req, model.name, encoded, sets, merged, truncation, timing, trec_run, trec_depth)
  if out is not None:
    write(result, out)
  return result


def load(model_or_name):
  """A `LoadedModel` as it is, or a name/path loaded with `models.load_model`."""
  if isinstance(model_or_name, (str, os.PathLike)):
    from mlir_train import models
    return models.load_model(model_or_name)
  return model_or_name


def write(result: dict, out: str | os.PathLike) -> list[pathlib.Path]:
  """The JSON at `out`, then the report and plots beside it; returns every path written."""
  out = pathlib.Path(out)
  files.atomic_write_json(out, result, ensure_ascii=False)  # whole or not at all
  return [out] + report.write_report(result, out)


def output_lock(out: str | os.PathLike) -> files.DirectoryLock:
  """One evaluation per result file: the lock `.<name>.lock` beside `out` (its report, plots
  and `--interpolate` results share it); evaluations of other files in the directory go on."""
  out = pathlib.Path(out)
  return files.DirectoryLock(out.parent, f"evaluation writing {out.name}",
                             lock_name=f".{out.name}.lock")


def main(argv=None) -> None:
  """The command line; the project's errors end in one `error: ...` line and exit code 2."""
  from mlir_train import compile_cache
  compile_cache.enable()  # before the first compilation
  try:
    _main(argv)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


PROTOCOLS_HELP = ("XQuAD-R / MLQA-R: mono, cross and multi settings (mAP, R@1, R@10) and "
                  "language bias; TyDi GoldP: mono and pooled (MRR@10, R@1, R@10, nDCG@10, MAP); "
                  "TyDi GoldP sentences: mono and pooled (mAP, R@1, R@10); AfriQA: native and "
                  "translated queries (nDCG@10, MRR@10, R@1, R@10, robustness gap); "
                  "MIRACL-format: nDCG@10, R@100.")


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
  """The options of one benchmark evaluation (`request`'s), shared by eval.population."""
  parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARK_LANGUAGES))
  parser.add_argument("--languages", default=None,
                      help="comma-separated subset, e.g. en,de (default: all of the benchmark)")
  parser.add_argument("--split", default=None,
                      help="data split (default: the benchmark's, dev; afriqa: test, or dev)")
  parser.add_argument("--data_dir", default=None,
                      help="raw data directory (default: $MLIR_DATA_DIR, else ../shared/data)")
  parser.add_argument("--batch_size", type=int, default=64,
                      help="most texts per encoder call (64)")
  parser.add_argument("--batch_tokens", type=int, default=None,
                      help="most padded tokens per encoder call; long texts go in fewer rows "
                           "(default: 1024 on CPU, where [1024, hidden] activations stay in "
                           "cache; 0 on GPU/TPU: no limit beyond --batch_size)")
  parser.add_argument("--max_length", type=int, default=512,
                      help="tokens per text incl. prefix; longer texts are truncated")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="corpus rows scored at once per device (bounds search memory; "
                           "default 2048 on CPU, 4096 on GPU/TPU)")
  parser.add_argument("--strict", action="store_true",
                      help="fail on the first unusable data record instead of logging it")
  parser.add_argument("--miracl_corpus", default=None,
                      help="MIRACL only: corpus JSONL path template with {language}")
  parser.add_argument("--files", default=None, metavar="LANG:PATH,...",
                      help="squad / squad_sentences: one SQuAD-format file per language, e.g. "
                           "ar:ar.json,th:th.json; miracl_files: three files per language joined "
                           "by '+', e.g. de:topics.tsv+qrels.trec+corpus.jsonl; beir_files: a BEIR "
                           "directory per language, e.g. de:beir_de/")
  parser.add_argument("--max_questions", type=int, default=None,
                      help="quick checks only: keep the first N question ids (sorted) in every "
                           "language; corpora stay whole")
  parser.add_argument("--max_documents", type=int, default=None,
                      help="quick checks only: keep the first N paragraphs/passages (sorted ids) "
                           "in every language and the questions answered in them")
  parser.add_argument("--no_progress", action="store_true", help="hide progress bars")


def _main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m eval.run",
      description="Zero-shot retrieval evaluation. " + PROTOCOLS_HELP + " Writes the "
                  "result JSON, <stem>.report.md and plots beside it.")
  parser.add_argument("--model", required=True,
                      help='"e5-small", a Hugging Face model directory, or a training workdir')
  add_evaluation_options(parser)
  parser.add_argument("--trec_run", default=None, metavar="PATH",
                      help="also write each language's ranking (its own candidates: the mono "
                           "setting) as a TREC run file 'qid Q0 docid rank score tag', and the "
                           "judgements scored as PATH's .qrels beside it (trec_eval, ranx); "
                           "ids get a LANG/ prefix when several languages are evaluated")
  parser.add_argument("--trec_depth", type=int, default=trec.DEFAULT_DEPTH,
                      help="candidates per question in the TREC run (100)")
  parser.add_argument("--out", required=True, help="result JSON path")
  parser.add_argument("--interpolate", default=None, metavar="LAMBDAS",
                      help="training workdirs only: evaluate (1 - lambda) * starting weights + "
                           "lambda * fine-tuned weights (WiSE-FT) for each comma-separated "
                           "lambda in [0, 1]; writes <stem>.lambda<LAMBDA>.json (+ report) "
                           "beside --out for each, recording the lambda")
  parser.add_argument("--interpolate_start", default=None, choices=("provenance", "config"),
                      help="with --interpolate, when the workdir's provenance.json and "
                           "config.json name different start models (a resume with "
                           "--allow_config_change): interpolate from the one the weights were "
                           "trained from (provenance) or config.json's")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  config_validation.check_writable(pathlib.Path(args.out).parent)  # before any work
  if args.trec_run:
    config_validation.check_writable(pathlib.Path(args.trec_run).parent)
    if args.interpolate is not None:
      raise EvalError("--trec_run writes one model's ranking; evaluate one lambda at a time")
  if args.trec_depth < 1:
    raise EvalError(f"--trec_depth must be >= 1, got {args.trec_depth}")
  with output_lock(args.out):
    _evaluate_and_write(args)


def evaluation_options(args) -> dict:
  """The keyword arguments of `evaluate` (and `request`) that `add_evaluation_options` parsed,
  --benchmark aside."""
  return dict(languages=split_list(args.languages) or None, data_dir=args.data_dir,
              batch_size=args.batch_size, max_length=args.max_length,
              progress=not args.no_progress, strict=args.strict,
              miracl_corpus=args.miracl_corpus, chunk_size=args.chunk_size,
              max_questions=args.max_questions, max_documents=args.max_documents,
              split=args.split, files=args.files, batch_tokens=args.batch_tokens)


def _evaluate_and_write(args) -> None:
  if args.interpolate is not None:
    _main_interpolated(args)
    return
  result = evaluate(args.model, args.benchmark, out=args.out, trec_run=args.trec_run,
                    trec_depth=args.trec_depth, **evaluation_options(args))
  print(report.headline(result))
  print_dropped(result)
  if args.trec_run:
    print(f"wrote TREC run {args.trec_run} (top {args.trec_depth}) and qrels "
          f"{trec.qrels_path(args.trec_run)}")
  print(f"wrote {args.out} in {result['timing_seconds']['total']:.0f}s")


def print_dropped(result: dict) -> None:
  """One console line per language that lost records (the JSON lists their ids)."""
  for language, issues in (result.get("data_issues") or {}).items():
    if issues.get("dropped"):
      problems = ", ".join(f"{n} {p}" for p, n in sorted(issues["by_problem"].items()))
      print(f"{result['benchmark']}/{language}: {issues['dropped']} records dropped ({problems}); "
            f"ids in data_issues of the JSON")


def interpolated_out(out: str | os.PathLike, lam: float) -> pathlib.Path:
  """results/run.json, 0.5 -> results/run.lambda0.5.json"""
  out = pathlib.Path(out)
  return out.with_name(f"{out.stem}.lambda{lam:g}{out.suffix or '.json'}")


def _main_interpolated(args) -> None:
  """--interpolate: one evaluation and one result JSON per lambda (see mlir_train.interpolate)."""
  from mlir_train import interpolate
  lams = interpolate.parse_lambdas(args.interpolate)
  start = args.interpolate_start
  interpolate.base_model_name(args.model, start)  # a training workdir, or a one-line error
  grid = interpolate.interpolate_grid(args.model, lams, start=start)
  for lam, model in grid:
    out = interpolated_out(args.out, lam)
    result = evaluate(model, args.benchmark, **evaluation_options(args))
    result["interpolation"] = interpolate.describe(args.model, lam, start)
    write(result, out)
    print(report.headline(result))
    print_dropped(result)
    print(f"wrote {out} (lambda={lam:g}) in {result['timing_seconds']['total']:.0f}s")


if __name__ == "__main__":
  main()
