"""The benchmarks `eval.run` can evaluate, each defined once.

A `Benchmark` names its languages, splits, reader (one language -> `RetrievalSet`),
protocol (`{language: EncodedSet}` -> result dict, see `eval.protocols`), the
setting and metric that headline it, and which of its languages no training fold
sees. Adding a benchmark is one entry in `BENCHMARKS` plus its reader (and a
protocol, unless an existing one fits).

  from eval import benchmarks
  bench = benchmarks.get("afriqa")
  sets = {l: bench.read(None, l, split="test") for l in bench.default_languages()}
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Mapping

from data_pipelines import readers
from data_pipelines.errors import ProjectError
from eval import protocols

# (data_dir, language, split, strict, options) -> RetrievalSet; options holds extra
# per-benchmark inputs (MIRACL: "miracl_corpus", a path template with {language}).
Reader = Callable[..., readers.RetrievalSet]
Protocol = Callable[..., dict]


class BenchmarkError(ProjectError, ValueError):
  """A benchmark, split or language that the registry does not have."""


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  languages: tuple[str, ...]          # every language the reader accepts
  reader: Reader
  protocol: Protocol
  main_setting: str                   # a key of the result's "settings"
  main_metric: str                    # a metric of that setting
  splits: tuple[str, ...] = ("dev",)  # the first is the default
  # split -> languages evaluated by default (those with data there); absent: all
  default_languages_by_split: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  # languages that no training fold trains on (data_pipelines.folds: MLQA-R / XQuAD-R)
  unseen_languages: tuple[str, ...] = ()
  description: str = ""
  # Reads the files of `eval.run --files` (options["files"]: language -> paths) instead of
  # the data dir; then any language code `train_files.is_language_code` accepts works, and
  # `languages` only lists the common ones.
  needs_files: int = 0               # how many paths per language (0: reads the data dir)

  @property
  def default_split(self) -> str:
    return self.splits[0]

  def check_split(self, split: str | None) -> str:
    split = split or self.default_split
    if split not in self.splits:
      raise BenchmarkError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(self.splits)}")
    return split

  def default_languages(self, split: str | None = None) -> tuple[str, ...]:
    return tuple(self.default_languages_by_split.get(self.check_split(split), self.languages))

  def read(self, data_dir, language: str, split: str | None = None, strict: bool = False,
           **options) -> readers.RetrievalSet:
    return self.reader(data_dir, language, self.check_split(split), strict, options)


# ----------------------------------------------------------------------------
# Reader adapters to the one signature


def _data_dir(name: str) -> Reader:
  """The data-dir reader of `name` (`readers.DATA_DIR_READERS`) in the registry's signature."""
  return lambda data_dir, language, split, strict, options: readers.read_benchmark(
      name, data_dir, language, split, strict)


def _miracl(data_dir, language, split, strict, options):
  template = options.get("miracl_corpus")
  if not template:
    raise BenchmarkError("miracl: the passage corpora are not in the data dir; pass "
                         "--miracl_corpus with a path template such as 'corpus/{language}.jsonl'")
  topics, qrels = readers.miracl_files(data_dir, language, split=split)
  corpus = pathlib.Path(template.format(language=language))
  if not corpus.is_file():
    raise BenchmarkError(f"{corpus}: MIRACL corpus for {language} not found")
  return readers.read_miracl(topics, qrels, corpus, language, strict=strict)


def parse_files(spec: str) -> dict[str, list[str]]:
  """`eval.run --files`: "ar:a.json,th:b.json" -> {"ar": ["a.json"], ...}; a MIRACL-format
  language names its three files joined by "+": "de:topics.tsv+qrels.trec+corpus.jsonl"."""
  from data_pipelines import train_files
  out: dict[str, list[str]] = {}
  for item in (i.strip() for i in spec.split(",")):
    if not item:
      continue
    language, sep, paths = item.partition(":")
    language = language.strip()
    if not sep or not paths.strip():
      raise BenchmarkError(f"--files: {item!r} is not LANGUAGE:PATH (e.g. ar:data/ar.json)")
    if not train_files.is_language_code(language):
      raise BenchmarkError(f"--files: unknown language code {language!r} (an ISO 639-1 code "
                           "or three lowercase letters)")
    if language in out:
      raise BenchmarkError(f"--files: language {language!r} given twice")
    out[language] = [p.strip() for p in paths.split("+")]
  if not out:
    raise BenchmarkError("--files is empty")
  return out


def _files_of(options, language: str, name: str, count: int) -> list[pathlib.Path]:
  files = options.get("files") or {}
  if language not in files:
    raise BenchmarkError(f"{name}: no file for language {language!r} in --files "
                         f"(given: {', '.join(files) or 'none'})")
  paths = [pathlib.Path(p) for p in files[language]]
  if len(paths) != count:
    form = "LANGUAGE:PATH" if count == 1 else "LANGUAGE:TOPICS.tsv+QRELS.trec+CORPUS.jsonl"
    raise BenchmarkError(f"{name}: --files for {language} needs {count} path(s), {form}; "
                         f"got {len(paths)}")
  for path in paths:
    if not path.is_file():
      raise BenchmarkError(f"{name}: {path}: file not found")
  return paths


def _squad_files(data_dir, language, split, strict, options):
  """Any SQuAD-format file: passage retrieval (its unique paragraphs are the candidates)."""
  path, = _files_of(options, language, "squad", 1)
  return readers.read_squad_file(path, language, "squad", strict=strict, sentences=False)


def _squad_sentence_files(data_dir, language, split, strict, options):
  """Any SQuAD-format file at sentence level: the file's `sentence_breaks` when its
  paragraphs carry them (LAReQA), else each unique paragraph cut by `sentencex`."""
  path, = _files_of(options, language, "squad_sentences", 1)
  obj = readers._load_json(path)
  first = next(readers._squad_paragraphs(obj, path, readers.IssueLog()), (None, {}))[1]
  if "sentence_breaks" in first:
    return readers.read_squad_file(path, language, "squad_sentences", strict=strict,
                                   sentences=True)
  return readers.segmented_sentences(obj, path, "squad_sentences", language, strict)


def _miracl_files(data_dir, language, split, strict, options):
  """A MIRACL-format triple per language (topics TSV, qrels TREC, corpus JSONL)."""
  topics, qrels, corpus = _files_of(options, language, "miracl_files", 3)
  return dataclasses.replace(readers.read_miracl(topics, qrels, corpus, language, strict=strict),
                             benchmark="miracl_files")


# Languages listed for the file benchmarks (any code `train_files.is_language_code`
# accepts is evaluated): the project's benchmark languages, then ISO 639-1.
def _file_languages() -> tuple[str, ...]:
  from data_pipelines import train_files
  ours = dict.fromkeys([*readers.XQUAD_R_LANGUAGES, *readers.TYDI_LANGUAGES,
                        *readers.MIRACL_LANGUAGES, *readers.AFRIQA_LANGUAGES])
  return tuple(ours) + tuple(sorted(set(train_files.ISO_639_1) - set(ours)))


# Training folds use MLQA-R (fold A) or XQuAD-R (fold B) languages; none of these.
_TRAINED = frozenset(readers.XQUAD_R_LANGUAGES) | frozenset(readers.MLQA_R_LANGUAGES)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("xquad_r", readers.XQUAD_R_LANGUAGES, _data_dir("xquad_r"), protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="XQuAD-R (LAReQA): sentences, mono / cross / multi, mAP, R@1, R@10, "
                          "language bias"),
    Benchmark("mlqa_r", readers.MLQA_R_LANGUAGES, _data_dir("mlqa_r"), protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="MLQA-R (LAReQA): sentences, mono / cross / multi"),
    Benchmark("tydiqa_goldp", readers.TYDI_LANGUAGES, _data_dir("tydiqa_goldp"), protocols.tydi,
              main_setting="mono", main_metric="mrr@10",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev: unique gold passages, mono and pooled"),
    Benchmark("tydiqa_goldp_sentences", readers.TYDI_LANGUAGES, _data_dir("tydiqa_goldp_sentences"),
              protocols.tydi_sentences, main_setting="mono", main_metric="map",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev at sentence level (sentencex): mono mAP, R@1; "
                          "pooled nine languages mAP, R@10"),
    Benchmark("afriqa", readers.AFRIQA_LANGUAGES, _data_dir("afriqa"), protocols.afriqa,
              main_setting="native", main_metric="ndcg@10", splits=("test", "dev"),
              default_languages_by_split={s: readers.AFRIQA_GOLD_PASSAGE_LANGUAGES[s]
                                          for s in ("test", "dev")},
              unseen_languages=readers.AFRIQA_LANGUAGES,
              description="AfriQA: native and translated questions -> the language's gold "
                          "passages (en / fr); nDCG@10, MRR@10, R@1, R@10, robustness gap"),
    Benchmark("miracl", readers.MIRACL_LANGUAGES, _miracl, protocols.miracl,
              main_setting="mono", main_metric="ndcg@10",
              description="MIRACL-format data (your corpus): nDCG@10, R@100"),
    # Your own files: eval.run --files LANGUAGE:PATH[,...] (see parse_files).
    Benchmark("squad", _file_languages(), _squad_files, protocols.tydi,
              main_setting="mono", main_metric="mrr@10", needs_files=1,
              description="any SQuAD-format file per language (--files ar:PATH.json,...): unique "
                          "paragraphs as candidates, mono and pooled, like TyDi GoldP"),
    Benchmark("squad_sentences", _file_languages(), _squad_sentence_files,
              protocols.tydi_sentences, main_setting="mono", main_metric="map", needs_files=1,
              description="any SQuAD-format file at sentence level (its sentence_breaks, else "
                          "sentencex): mono mAP, R@1; pooled mAP, R@10"),
    Benchmark("miracl_files", _file_languages(), _miracl_files, protocols.miracl,
              main_setting="mono", main_metric="ndcg@10", needs_files=3,
              description="MIRACL-format triples (--files de:topics.tsv+qrels.trec+corpus.jsonl): "
                          "nDCG@10, R@100"),
]}


def get(name: str) -> Benchmark:
  try:
    return BENCHMARKS[name]
  except KeyError:
    raise BenchmarkError(f"unknown benchmark {name!r}; expected one of {', '.join(sorted(BENCHMARKS))}") from None


def languages() -> dict[str, tuple[str, ...]]:
  """Benchmark name -> every language it accepts (eval.run.BENCHMARK_LANGUAGES)."""
  return {name: b.languages for name, b in BENCHMARKS.items()}


def main_metrics() -> dict[str, str]:
  """Benchmark name -> its main metric (eval.report.MAIN_METRIC must agree)."""
  return {name: b.main_metric for name, b in BENCHMARKS.items()}
