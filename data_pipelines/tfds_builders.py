"""TFDS builders (manual-dir style) for XQuAD-R, MLQA-R and TyDi QA GoldP.

Each builder config is one language. A retrieval set has two kinds of rows, so
each benchmark split becomes two TFDS splits:

- `candidates`: the retrievable units in reader order; `index` is the position
  that questions refer to.
- `questions`: `relevant` holds candidate indices, `grades` their grades.

Both share one feature dict (`context`, `relevant`, `grades` stay empty where
they do not apply). The rows come from `data_pipelines.readers`, so counts,
ids and relevance are the readers' (unusable records are logged and, with the
builder's `strict` default True, stop the build with a `DataError`).

The manual dir is the raw data directory (the one holding `xquad_r/`,
`mlqa_r/`, `tydiqa_goldp/`), e.g.

  builder = XquadR(config="en", data_dir="~/tensorflow_datasets")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=data_pipelines.datadir.resolve_data_dir(), try_download_gcs=False))
  questions = builder.as_dataset(split="questions")
"""
from __future__ import annotations

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
