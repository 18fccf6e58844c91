"""A study's later runs of one fold reuse its overlap check and its pair table in-process,
and only while nothing they were made from changed (`folds.check_fold`,
`shards.load_pair_table`). The truth: a fresh read, and the check's own verdict."""
import dataclasses
import os
import shutil

import numpy as np
import pytest

from data_pipelines import folds, sampler, shards
from mlir_train import models
from tests.training_data_helpers import make_config

pytestmark = [pytest.mark.data]

FIELDS = ("query_ids", "query_mask", "passage_ids", "passage_mask", "group_id",
          "query_language", "passage_language", "row_of")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, data_dir):
  config = make_config(tmp_path_factory.mktemp("shards"), data_dir=str(data_dir))
  tokenizer = models.tiny_random_model().tokenizer
  return sampler.build_training_data(config, tokenizer, progress=False).directory


def counting(monkeypatch, module, name):
  calls = []
  real = getattr(module, name)

  def wrapper(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)
  monkeypatch.setattr(module, name, wrapper)
  return calls


def test_pair_table_is_read_once_while_the_shards_are_unchanged(shard_dir, tmp_path, monkeypatch):
  directory = tmp_path / "shards"
  shutil.copytree(shard_dir, directory)
  reads = counting(monkeypatch, shards, "_read_pair_table")
  first = shards.load_pair_table(directory, use_tensorflow=False)
  again = shards.load_pair_table(directory, use_tensorflow=False)
  assert len(reads) == 1 and again is first
  fresh = shards._read_pair_table(directory, False)
  for k in FIELDS:
    np.testing.assert_array_equal(getattr(first, k), getattr(fresh, k), err_msg=k)
    assert not getattr(first, k).flags.writeable, k  # shared: nobody may change it
  with pytest.raises(ValueError, match="read-only"):
    first.query_ids[0, 0] = 7
  shard = next(directory.glob("*.tfrecord"))
  os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
  shards.load_pair_table(directory, use_tensorflow=False)
  assert len(reads) == 3  # the fresh read above, then a changed file read again


def test_overlap_check_is_repeated_when_training_texts_or_data_files_change(
    data_dir, tmp_path, monkeypatch):
  fold = folds.get_fold("A")
  train = folds.load_train_sets(fold, data_dir, ["de"])
  loads = counting(monkeypatch, folds, "load_eval_sets")
  folds.check_fold(fold, train, data_dir)
  folds.check_fold(fold, train, data_dir)
  assert len(loads) <= 1  # at most once (an earlier test in this process may have checked)
  before = len(loads)

  # A leak in the training texts is found, though the same fold passed just before.
  eval_question = folds.load_eval_sets(fold, data_dir)[0].questions[0]
  de = train["de"]
  leaked = dataclasses.replace(de, questions=[dataclasses.replace(
      de.questions[0], text=eval_question.text)] + list(de.questions[1:]))
  with pytest.raises(folds.FoldOverlapError, match="question text"):
    folds.check_fold(fold, {"de": leaked}, data_dir)

  # A raw data file changed: the check runs again (on a copy of the data directory).
  copy = tmp_path / "data"
  shutil.copytree(data_dir, copy)
  folds.check_fold(fold, train, copy)
  loads_after_copy = len(loads)
  folds.check_fold(fold, train, copy)
  assert len(loads) == loads_after_copy
  some_file = next(p for p in sorted(copy.rglob("*.json")) if p.is_file())
  os.utime(some_file, ns=(some_file.stat().st_atime_ns, some_file.stat().st_mtime_ns + 10**9))
  folds.check_fold(fold, train, copy)
  assert len(loads) == loads_after_copy + 1 > before
