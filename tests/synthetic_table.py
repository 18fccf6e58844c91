"""A small deterministic pair table built in code (no data files, no tokenizer, no rng).

Four languages; "en" holds every group, "de" and "es" most, "zh" only a few
(fewer than the batch size used by the tests, so MONO-zh takes the
repeats-are-unavoidable branch). Rows are laid out the way
`shards.load_pair_table` lays them out: shards sorted by (query, passage)
language, pairs within a shard by group id.
"""
import pathlib

import numpy as np

from data_pipelines import sampler
from data_pipelines import shards as shards_lib

LANGUAGES = ("de", "en", "es", "zh")
NUM_GROUPS = 240
QUERY_LEN, PASSAGE_LEN = 5, 7


def holds(language: str, g: int, num_groups: int = NUM_GROUPS) -> bool:
  return {"de": g % 3 != 0, "en": True, "es": g % 4 != 1, "zh": g % 23 == 0}[language]


def make_table(languages=LANGUAGES, num_groups: int = NUM_GROUPS) -> shards_lib.PairTable:
  columns = {k: [] for k in ("group_id", "query_language", "passage_language")}
  shard_rows, start = {}, 0
  index = {l: i for i, l in enumerate(languages)}
  for a in sorted(languages):
    for b in sorted(languages):
      groups = [g for g in range(num_groups) if holds(a, g) and holds(b, g)]
      columns["group_id"] += groups
      columns["query_language"] += [index[a]] * len(groups)
      columns["passage_language"] += [index[b]] * len(groups)
      shard_rows[(a, b)] = np.arange(start, start + len(groups))
      start += len(groups)
  cols = {k: np.asarray(v, np.int32) for k, v in columns.items()}
  r = np.arange(start, dtype=np.int64)[:, None]
  # Token ids that identify the row, so batches built from different rows differ.
  cols["query_ids"] = ((r * 31 + np.arange(QUERY_LEN)) % 30000).astype(np.int32)
  cols["query_mask"] = (np.arange(QUERY_LEN) <= r % QUERY_LEN).astype(np.int32)
  cols["passage_ids"] = ((r * 17 + 3 * np.arange(PASSAGE_LEN)) % 30000).astype(np.int32)
  cols["passage_mask"] = (np.arange(PASSAGE_LEN) <= r % PASSAGE_LEN).astype(np.int32)
  row_of = np.full((len(languages), len(languages), num_groups), -1, np.int32)
  row_of[cols["query_language"], cols["passage_language"], cols["group_id"]] = np.arange(start)
  return shards_lib.PairTable(languages=tuple(languages), row_of=row_of,
                              shard_rows=shard_rows, **cols)


def make_training_data(**kw) -> sampler.TrainingData:
  return sampler.TrainingData(table=make_table(**kw), directory=pathlib.Path("/nonexistent"),
                              manifest={})


# (name, sampler config overrides); batch 16 throughout.
CASES = {
    "mono": dict(sampling="mono"),
    "cross": dict(sampling="cross"),
    "hybrid": dict(sampling="hybrid", alpha=0.5),
    # alpha != 1 - alpha: a swap of alpha's meaning (MONO share) changes this plan.
    "hybrid-alpha0.25": dict(sampling="hybrid", alpha=0.25),
    "mixed": dict(sampling="mixed"),
    "hybrid-size": dict(sampling="hybrid", alpha=0.3, mono_language_sampling="size"),
    "mono-temperature": dict(sampling="mono", mono_language_sampling="temperature",
                             language_temperature=2.0),
    # 10 groups < batch 16: MIXED falls back to plain permutations of the pairs.
    "mixed-small": dict(sampling="mixed", _num_groups=10),
}


def config(seed: int, batch_size: int = 16, **overrides):
  import ml_collections
  c = dict(sampling="hybrid", alpha=0.5, seed=seed, batch_size=batch_size,
           mono_language_sampling="uniform", language_temperature=1.0)
  c.update(overrides)
  return ml_collections.ConfigDict(c)
