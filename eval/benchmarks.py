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


def _xquad_r(data_dir, language, split, strict, options):
  return readers.read_xquad_r(data_dir, language, strict=strict)


def _mlqa_r(data_dir, language, split, strict, options):
  return readers.read_mlqa_r(data_dir, language, strict=strict)


def _tydi_goldp(data_dir, language, split, strict, options):
  return readers.read_tydi_goldp(data_dir, language, split=split, strict=strict)


def _tydi_goldp_sentences(data_dir, language, split, strict, options):
  return readers.read_tydi_goldp_sentences(data_dir, language, split=split, strict=strict)


def _afriqa(data_dir, language, split, strict, options):
  return readers.read_afriqa(data_dir, language, split=split, strict=strict)


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


# Training folds use MLQA-R (fold A) or XQuAD-R (fold B) languages; none of these.
_TRAINED = frozenset(readers.XQUAD_R_LANGUAGES) | frozenset(readers.MLQA_R_LANGUAGES)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("xquad_r", readers.XQUAD_R_LANGUAGES, _xquad_r, protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="XQuAD-R (LAReQA): sentences, mono / cross / multi, mAP, R@1, R@10, "
                          "language bias"),
    Benchmark("mlqa_r", readers.MLQA_R_LANGUAGES, _mlqa_r, protocols.lareqa,
              main_setting="multi", main_metric="map",
              description="MLQA-R (LAReQA): sentences, mono / cross / multi"),
    Benchmark("tydiqa_goldp", readers.TYDI_LANGUAGES, _tydi_goldp, protocols.tydi,
              main_setting="mono", main_metric="mrr@10",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev: unique gold passages, mono and pooled"),
    Benchmark("tydiqa_goldp_sentences", readers.TYDI_LANGUAGES, _tydi_goldp_sentences,
              protocols.tydi_sentences, main_setting="mono", main_metric="map",
              unseen_languages=tuple(l for l in readers.TYDI_LANGUAGES if l not in _TRAINED),
              description="TyDi QA GoldP dev at sentence level (sentencex): mono mAP, R@1; "
                          "pooled nine languages mAP, R@10"),
    Benchmark("afriqa", readers.AFRIQA_LANGUAGES, _afriqa, protocols.afriqa,
              main_setting="native", main_metric="ndcg@10", splits=("test", "dev"),
              default_languages_by_split={s: readers.AFRIQA_GOLD_PASSAGE_LANGUAGES[s]
                                          for s in ("test", "dev")},
              unseen_languages=readers.AFRIQA_LANGUAGES,
              description="AfriQA: native and translated questions -> the language's gold "
                          "passages (en / fr); nDCG@10, MRR@10, R@1, R@10, robustness gap"),
    Benchmark("miracl", readers.MIRACL_LANGUAGES, _miracl, protocols.miracl,
              main_setting="mono", main_metric="ndcg@10",
              description="MIRACL-format data (your corpus): nDCG@10, R@100"),
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
