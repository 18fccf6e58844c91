"""TFDS builders (manual-dir style) for XQuAD-R, MLQA-R, TyDi QA GoldP,
MIRACL-format data and any SQuAD-format file.

Each builder config is one language (or, for `SquadFile`, one file). A
retrieval set has two kinds of rows, so each benchmark split becomes two TFDS
splits:

- `candidates`: the retrievable units in reader order; `index` is the position
  that questions refer to.
- `questions`: `relevant` holds candidate indices, `grades` their grades.

Both share one feature dict (`context`, `relevant`, `grades` stay empty where
they do not apply). The rows come from `data_pipelines.readers`, so counts,
ids and relevance are the readers' (unusable records are logged and, with the
builder's `strict` default True, stop the build with a `DataError`).

The manual dir is the raw data directory (the one holding `xquad_r/`,
`mlqa_r/`, `tydiqa_goldp/`, `miracl/`), e.g.

  builder = XquadR(config="en", data_dir="~/tensorflow_datasets")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=data_pipelines.datadir.resolve_data_dir(), try_download_gcs=False))
  questions = builder.as_dataset(split="questions")

MIRACL and SQuAD-format files that sit elsewhere are described by a config
instance (`MiraclConfig`, `SquadFileConfig`) whose paths are relative to the
manual dir (or absolute):

  config = SquadFileConfig(name="my_dev", file="my/dev.json", language="en")
  builder = SquadFile(config=config, data_dir="~/tensorflow_datasets")
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import readers

_MANUAL = """\
Pass the raw data directory (the one that holds `{folder}/`; see
data_pipelines/datadir.py) as `manual_dir`. It is `../shared/data` beside the
repository, `$MLIR_DATA_DIR`, or the download cache filled by
`python -m data_pipelines.datadir --folders {folder}` (files are checked
against the sha256 in SOURCES.txt).
"""


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "index": np.int64,                                # position within its split
      "id": tfds.features.Text(),                       # qid (parallel-group id) or candidate doc_id
      "text": tfds.features.Text(),                     # question or candidate text
      "context": tfds.features.Text(),                  # candidate's paragraph ("" for questions)
      "relevant": tfds.features.Sequence(np.int64),     # questions: candidate indices
      "grades": tfds.features.Sequence(np.int64),       # questions: their relevance grades
  })


def _question_rows(rs: readers.RetrievalSet):
  for i, q in enumerate(rs.questions):
    relevant = sorted(q.relevant)
    yield f"q{i:07d}", {"index": i, "id": q.qid, "text": q.text, "context": "",
                        "relevant": relevant, "grades": [q.relevant[c] for c in relevant]}


def _candidate_rows(rs: readers.RetrievalSet):
  for i, c in enumerate(rs.candidates):
    yield f"c{i:07d}", {"index": i, "id": c.doc_id, "text": c.text, "context": c.context,
                        "relevant": [], "grades": []}


def _language_configs(languages, what: str) -> list[tfds.core.BuilderConfig]:
  return [tfds.core.BuilderConfig(name=lang, description=f"{what}, language {lang}")
          for lang in languages]


class _RetrievalBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared body: read one language with the reader, write questions + candidates."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release, built on data_pipelines.readers."}
  FOLDER = ""
  HOMEPAGE = ""
  strict = True

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(), homepage=self.HOMEPAGE, disable_shuffling=True)

  def _read(self, data_dir: pathlib.Path, language: str, split: str) -> readers.RetrievalSet:
    raise NotImplementedError

  def _splits(self) -> dict[str, str]:
    """TFDS split prefix ("" or "train_") -> benchmark split."""
    return {"": "dev"}

  def _split_generators(self, dl_manager):
    data_dir = pathlib.Path(str(dl_manager.manual_dir))
    generators = {}
    for prefix, split in self._splits().items():
      rs = self._read(data_dir, self.builder_config.name, split)
      generators[f"{prefix}questions"] = self._generate_examples(_question_rows(rs))
      generators[f"{prefix}candidates"] = self._generate_examples(_candidate_rows(rs))
    return generators

  def _generate_examples(self, rows):
    yield from rows


class XquadR(_RetrievalBuilder):
  """XQuAD-R (LAReQA): 1,190 parallel questions per language, sentences as candidates."""
  BUILDER_CONFIGS = _language_configs(readers.XQUAD_R_LANGUAGES, "XQuAD-R")
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(folder="xquad_r")
  HOMEPAGE = "https://github.com/google-research-datasets/lareqa"

  def _read(self, data_dir, language, split):
    return readers.read_xquad_r(data_dir, language, strict=self.strict)


class MlqaR(_RetrievalBuilder):
  """MLQA-R (LAReQA, MLQA v1 dev with sentence breaks), sentences as candidates."""
  BUILDER_CONFIGS = _language_configs(readers.MLQA_R_LANGUAGES, "MLQA-R")
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(folder="mlqa_r")
  HOMEPAGE = "https://github.com/google-research-datasets/lareqa"

  def _read(self, data_dir, language, split):
    return readers.read_mlqa_r(data_dir, language, strict=self.strict)


class TydiqaGoldp(_RetrievalBuilder):
  """TyDi QA GoldP v1.1: unique gold passages per language as candidates.

  Splits `questions`/`candidates` are dev; en, ko and sw also get
  `train_questions`/`train_candidates`.
  """
  BUILDER_CONFIGS = _language_configs(readers.TYDI_LANGUAGES, "TyDi QA GoldP")
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL.format(folder="tydiqa_goldp")
  HOMEPAGE = "https://github.com/google-research-datasets/tydiqa"
  TRAIN_LANGUAGES = ("en", "ko", "sw")

  def _splits(self):
    splits = {"": "dev"}
    if self.builder_config.name in self.TRAIN_LANGUAGES:
      splits["train_"] = "train"
    return splits

  def _read(self, data_dir, language, split):
    return readers.read_tydi_goldp(data_dir, language, split=split, strict=self.strict)


# ----------------------------------------------------------------------------
# MIRACL format: topics TSV, qrels TREC, corpus JSONL

MIRACL_LANGUAGES = readers.MIRACL_LANGUAGES
MIRACL_TRAIN_LANGUAGES = tuple(l for l in MIRACL_LANGUAGES if l not in ("de", "yo"))

_MIRACL_MANUAL = """\
Pass the raw data directory as `manual_dir`. The default configs (one per MIRACL
v1.0 language) read the topics and qrels from `miracl/` in it (named as in
anserini-tools: `topics.miracl-v1.0-{language}-{split}.tsv`,
`qrels.miracl-v1.0-{language}-{split}.tsv`; `python -m data_pipelines.datadir
--folders miracl` fetches them) and the passage corpus from
`miracl/corpus/{language}.jsonl`, one {"docid", "title", "text"} object per line.
The corpora are not in the data directory (too large): concatenate the
uncompressed `docs-*.jsonl.gz` shards of the Hugging Face dataset
`miracl/miracl-corpus` (`miracl-corpus-v1.0-{language}/`) into that file. Other
MIRACL-format data: pass a `MiraclConfig` with its own paths.
"""


@dataclasses.dataclass(eq=False)
class MiraclConfig(tfds.core.BuilderConfig):
  """One language of MIRACL-format data.

  Paths are relative to the manual dir (or absolute); `{language}` and, for
  topics and qrels, `{split}` are filled in. The first split gives the TFDS
  splits `questions` / `candidates`; every further split gives
  `{split}_questions` only, since all splits share the one corpus (same
  candidate indices).
  """
  language: str = ""
  topics: str = "miracl/topics.miracl-v1.0-{language}-{split}.tsv"
  qrels: str = "miracl/qrels.miracl-v1.0-{language}-{split}.tsv"
  corpus: str = "miracl/corpus/{language}.jsonl"
  splits: tuple[str, ...] = ("dev",)


def _manual_file(manual_dir: pathlib.Path, relative: str) -> pathlib.Path:
  """`relative` in the manual dir; "miracl/name" also falls back to the download cache."""
  parts = pathlib.PurePosixPath(relative).parts
  if len(parts) == 2 and parts[0] == "miracl":
    from data_pipelines import datadir  # local import, as in readers
    return datadir.locate(manual_dir, parts[0], parts[1])
  return manual_dir / relative


class Miracl(_RetrievalBuilder):
  """MIRACL-format data: graded qrels (grade 0 = judged not relevant), passages as candidates.

  Splits `questions`/`candidates` are dev; languages with MIRACL v1.0 training
  topics also get `train_questions` (indices into the same `candidates`).
  """
  BUILDER_CONFIGS = [
      MiraclConfig(name=lang, language=lang, description=f"MIRACL v1.0, language {lang}",
                   splits=("dev", "train") if lang in MIRACL_TRAIN_LANGUAGES else ("dev",))
      for lang in MIRACL_LANGUAGES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MIRACL_MANUAL
  HOMEPAGE = "https://project-miracl.github.io/"

  def _read(self, data_dir, language, split):
    config = self.builder_config
    corpus = data_dir / config.corpus.format(language=language)
    if not corpus.is_file():
      raise readers.DataError(
          f"{corpus}: MIRACL-format corpus not found (the MIRACL corpora are not in the data "
          f"directory; see {type(self).__name__}.MANUAL_DOWNLOAD_INSTRUCTIONS)")
    names = {"language": language, "split": split}
    return readers.read_miracl(_manual_file(data_dir, config.topics.format(**names)),
                               _manual_file(data_dir, config.qrels.format(**names)),
                               corpus, language, strict=self.strict)

  def _split_generators(self, dl_manager):
    data_dir = pathlib.Path(str(dl_manager.manual_dir))
    config = self.builder_config
    language = config.language or config.name
    first, *others = config.splits
    rs = self._read(data_dir, language, first)
    generators = {"questions": self._generate_examples(_question_rows(rs)),
                  "candidates": self._generate_examples(_candidate_rows(rs))}
    for split in others:
      # Held as rows, not as a RetrievalSet: that would keep a second copy of the corpus.
      rows = list(_question_rows(self._read(data_dir, language, split)))
      generators[f"{split}_questions"] = self._generate_examples(rows)
    return generators


# ----------------------------------------------------------------------------
# Any SQuAD-format file, with or without sentence breaks

_SQUAD_MANUAL = """\
Pass as `manual_dir` the directory that holds the file named by the config's
`file` (the default config `v1_1_dev`: `squad/dev-v1.1.json`, the public SQuAD
v1.1 dev file). For any other SQuAD-format file pass
`config=SquadFileConfig(name=..., file=..., language=...)`.
"""


@dataclasses.dataclass(eq=False)
class SquadFileConfig(tfds.core.BuilderConfig):
  """One SQuAD-format JSON file (path relative to the manual dir, or absolute).

  `sentences=None` reads sentences as candidates when the paragraphs carry
  `sentence_breaks` (LAReQA style), else unique paragraphs (see
  `readers.read_squad_file`).
  """
  file: str = ""
  language: str = "en"
  benchmark: str = "squad"
  sentences: bool | None = None


class SquadFile(_RetrievalBuilder):
  """A generic SQuAD-format file: splits `questions` and `candidates`."""
  BUILDER_CONFIGS = [SquadFileConfig(name="v1_1_dev", file="squad/dev-v1.1.json", language="en",
                                     description="SQuAD v1.1 dev, paragraphs as candidates")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _SQUAD_MANUAL
  HOMEPAGE = "https://rajpurkar.github.io/SQuAD-explorer/"

  def _split_generators(self, dl_manager):
    config = self.builder_config
    rs = readers.read_squad_file(pathlib.Path(str(dl_manager.manual_dir)) / config.file,
                                 config.language, benchmark=config.benchmark,
                                 strict=self.strict, sentences=config.sentences)
    return {"questions": self._generate_examples(_question_rows(rs)),
            "candidates": self._generate_examples(_candidate_rows(rs))}
