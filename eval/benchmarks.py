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

from configs import language_groups
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
class StudySection:
  """How a study reports a benchmark: a section of report.md, results.json's
  `summary[key]` and a plot, made by the generic code of `study` for its layout.

  layouts: "lareqa" (the paper-style table of the fold's LAReQA benchmark: mono / cross /
  multi mAP, R@1, R@10, language bias); "languages" (one score per language of `setting`
  and `metric`, change against the start, worst language, spread, seen / unseen and the
  `groups` means, and the pooled `multi` setting when `pooled` names it); "views"
  (several settings per language, e.g. AfriQA native / translated / "gap", the
  protocol's robustness_gap).
  """
  key: str                          # results.json summary key and report anchor
  layout: str                       # "lareqa", "languages" or "views"
  title: str = ""                   # report heading
  setting: str = "mono"             # "languages": the per-language setting
  metric: str = "map"
  views: tuple[str, ...] = ()       # "views": the settings shown, in order
  pooled: str = ""                  # "languages": title of the pooled (multi) table; "" none
  intro: str = ""                   # a paragraph under the heading
  plot: str = ""                    # per-language plot file ("" none)
  plot_title: str = ""


@dataclasses.dataclass(frozen=True)
class StudyTarget:
  """A macro score the study compares strategies on (paired tests, Holm within its family;
  a trained run against the start is always in the "vs start" family). setting "gap": the
  robustness_gap."""
  setting: str
  metric: str
  label: str                        # "{benchmark}" is replaced by the benchmark's name
  family: str                       # "planned" (named before the data), "mid-resource", "exploratory"
  group: str = ""                   # the macro over this `groups` entry only ("" all languages)


FAMILIES = ("planned", "mid-resource", "exploratory", "vs start")


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
  # What a study reports of it (`study` package): its sections and the targets it compares
  # strategies on; a benchmark without sections is evaluated by `eval.run` only.
  study: tuple[StudySection, ...] = ()
  targets: tuple[StudyTarget, ...] = ()
  # Named language groups reported beside seen / unseen (e.g. by resource level).
  groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  # Question ids are shared across languages (parallel groups: the unit of a query test).
  parallel: bool = False

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


def _files_of(options, language: str, name: str, count: int, directory: bool = False
              ) -> list[pathlib.Path]:
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
    if not (path.is_dir() if directory else path.is_file()):
      raise BenchmarkError(f"{name}: {path}: {'directory' if directory else 'file'} not found")
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


def _beir_files(data_dir, language, split, strict, options):
  """A BEIR directory per language (corpus.jsonl, queries.jsonl, qrels/{split}.tsv)."""
  path, = _files_of(options, language, "beir_files", 1, directory=True)
  for name in ("corpus.jsonl", "queries.jsonl"):
    if not (path / name).is_file():
      raise BenchmarkError(f"beir_files: {path} is no BEIR directory (no {name})")
  try:
    return readers.read_beir(path, language, split=split, strict=strict)
  except readers.DataError as e:
    raise BenchmarkError(f"beir_files: {e}") from None


# Languages listed for the file benchmarks (any code `train_files.is_language_code`
# accepts is evaluated): the project's benchmark languages, then ISO 639-1.
def _file_languages() -> tuple[str, ...]:
  from data_pipelines import train_files
  ours = dict.fromkeys([*readers.XQUAD_R_LANGUAGES, *readers.TYDI_LANGUAGES,
                        *readers.MIRACL_LANGUAGES, *readers.AFRIQA_LANGUAGES])
  return tuple(ours) + tuple(sorted(set(train_files.ISO_639_1) - set(ours)))


# Training folds use MLQA-R (fold A) or XQuAD-R (fold B) languages; none of these.
_TRAINED = frozenset(readers.XQUAD_R_LANGUAGES) | frozenset(readers.MLQA_R_LANGUAGES)

# What a study reports of each LAReQA benchmark (the fold's in-domain evaluation), of TyDi
# passages and sentences and of AfriQA.
_LAREQA_STUDY = dict(
    study=(StudySection("lareqa", "lareqa", "paper-style table"),),
    targets=(StudyTarget("multi", "map", "{benchmark} multi mAP", "planned"),
             StudyTarget("cross", "map", "{benchmark} cross mAP", "exploratory")),
    parallel=True)


def _tydi_study(key: str, title: str, pooled: str, intro: str, plot: str, plot_title: str,
                label: str) -> dict:
  return dict(
      study=(StudySection(key, "languages", title, "mono", "map", pooled=pooled, intro=intro,
                          plot=plot, plot_title=plot_title),),
      groups=language_groups.TYDI_GROUPS,
      targets=(StudyTarget("mono", "map", f"{label} mono mAP, low-resource (bn sw te)", "planned",
                           "low-resource"),
               StudyTarget("mono", "map", f"{label} mono mAP, mid-resource (fi id ko ru)",
                           "mid-resource", "mid-resource"),
               StudyTarget("mono", "map", f"{label} mono mAP (macro)", "exploratory"),
               StudyTarget("multi", "map", f"{label} multi mAP", "exploratory")))


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("xquad_r", readers.XQUAD_R_LANGUAGES, _data_dir("xquad_r"), protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="XQuAD-R (LAReQA): sentences, mono / cross / multi, mAP, R@1, R@10, "
                          "language bias", **_LAREQA_STUDY),
    Benchmark("mlqa_r", readers.MLQA_R_LANGUAGES, _data_dir("mlqa_r"), protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="MLQA-R (LAReQA): sentences, mono / cross / multi", **_LAREQA_STUDY),
    Benchmark("tydiqa_goldp", readers.TYDI_LANGUAGES, _data_dir("tydiqa_goldp"), protocols.tydi,
              main_setting="mono", main_metric="mrr@10",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev: unique gold passages, mono and pooled",
              **_tydi_study("tydi", "TyDi QA GoldP: robustness across languages",
                            "Pooled (multilingual) TyDi corpus:", "", "tydi_per_language.png",
                            "TyDi QA GoldP", "TyDi")),
    Benchmark("tydiqa_goldp_sentences", readers.TYDI_LANGUAGES, _data_dir("tydiqa_goldp_sentences"),
              protocols.tydi_sentences, main_setting="mono", main_metric="map",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev at sentence level (sentencex): mono mAP, R@1; "
                          "pooled nine languages mAP, R@10",
              **_tydi_study("tydi_sentences", "TyDi QA GoldP sentences: robustness across languages",
                            "Pooled nine-language sentence corpus:",
                            "Candidates are the sentences of each language's gold passages; the "
                            "relevant one holds the answer start.",
                            "tydi_sentences_per_language.png", "TyDi QA GoldP sentences",
                            "TyDi sentences")),
    Benchmark("afriqa", readers.AFRIQA_LANGUAGES, _data_dir("afriqa"), protocols.afriqa,
              main_setting="native", main_metric="ndcg@10", splits=("test", "dev"),
              default_languages_by_split={s: readers.AFRIQA_GOLD_PASSAGE_LANGUAGES[s]
                                          for s in ("test", "dev")},
              unseen_languages=readers.AFRIQA_LANGUAGES,
              description="AfriQA: native and translated questions -> the language's gold "
                          "passages (en / fr); nDCG@10, MRR@10, R@1, R@10, robustness gap",
              study=(StudySection(
                  "afriqa", "views", "AfriQA: native against translated questions",
                  metric="ndcg@10", views=("native", "translated", "gap"),
                  intro="Per-language {metric} of the native questions and of their human "
                        "translations (English; French for fon) against the same gold passages, "
                        "and the gap native - translated (negative = the model loses by the "
                        "question being in the African language); mean ± 95% interval over "
                        "seeds. Every AfriQA language is unseen by training: {unseen}.",
                  plot="afriqa_per_language.png", plot_title="AfriQA (native questions)"),),
              targets=(StudyTarget("native", "ndcg@10", "AfriQA native nDCG@10 (macro)", "planned"),
                       StudyTarget("gap", "ndcg@10", "AfriQA gap nDCG@10 (native - translated)",
                                   "exploratory"))),
    Benchmark("ntrex128", readers.NTREX_LANGUAGES, _data_dir("ntrex128"), protocols.bitext,
              main_setting="x_to_en", main_metric="acc@1", splits=("test",),
              unseen_languages=tuple(l for l in readers.NTREX_LANGUAGES if l not in _TRAINED),
              groups=language_groups.NTREX_GROUPS, parallel=True,
              description="NTREX-128 bitext: each language's 1,997 news sentences against the "
                          "English ones, both ways (accuracy@1, MRR@10) and pooled",
              study=(StudySection("ntrex", "languages", "NTREX-128 bitext: translation retrieval "
                                  "by language", "x_to_en", "acc@1",
                                  intro="Each language's 1,997 human-translated news sentences "
                                        "retrieve their English source among all 1,997 English "
                                        "lines (accuracy@1; the reverse direction and the pooled "
                                        "setting are in results.json).",
                                  plot="ntrex_per_language.png", plot_title="NTREX-128 X->en"),),
              targets=(StudyTarget("x_to_en", "acc@1", "NTREX X->en accuracy@1, low-resource",
                                   "planned", "low-resource"),
                       StudyTarget("x_to_en", "acc@1", "NTREX X->en accuracy@1, mid-resource",
                                   "mid-resource", "mid-resource"),
                       StudyTarget("x_to_en", "acc@1", "NTREX X->en accuracy@1 (macro)", "exploratory"),
                       StudyTarget("en_to_x", "acc@1", "NTREX en->X accuracy@1 (macro)", "exploratory"))),
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
    Benchmark("beir_files", _file_languages(), _beir_files, protocols.miracl,
              main_setting="mono", main_metric="ndcg@10", needs_files=1,
              splits=("test", "dev", "train"),
              description="a BEIR directory per language (--files de:DIR with corpus.jsonl, "
                          "queries.jsonl, qrels/test.tsv; --split dev / train for the others): "
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
  """Benchmark name -> its main metric."""
  return {name: b.main_metric for name, b in BENCHMARKS.items()}


def main_metric(name: str, default: str = "map") -> str:
  """A benchmark's main metric; `default` for a name the registry does not have."""
  return BENCHMARKS[name].main_metric if name in BENCHMARKS else default
