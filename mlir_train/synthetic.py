"""Random token batches shaped like the sampler's, for trainer tests and benchmarks.

Each global batch is a deterministic function of (seed, step); process i gets
rows [i * host_batch, (i + 1) * host_batch), like `data_pipelines.sampler`.
About a quarter of the rows share a parallel group with another row, so the
loss mask is exercised. Not a data pipeline: no text, no languages.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

FIRST_ORDINARY_ID = 4  # ids 0..3 are <s>, <pad>, </s>, <unk>


@dataclasses.dataclass
class SyntheticKind:
  name: str = "SYNTHETIC"


@dataclasses.dataclass
class SyntheticBatch:
  step: int
  kind: SyntheticKind
  languages: str
  query_ids: np.ndarray      # int32 [host_batch, max_query_len]
  query_mask: np.ndarray
  passage_ids: np.ndarray    # int32 [host_batch, max_passage_len]
  passage_mask: np.ndarray
  group_id: np.ndarray       # int32 [host_batch]


def _ids_and_mask(rng, batch: int, length: int, vocab_size: int):
  lengths = rng.integers(max(2, length // 2), length + 1, size=batch)
  ids = rng.integers(FIRST_ORDINARY_ID, vocab_size, size=(batch, length), dtype=np.int32)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 0                                      # <s>
  ids[np.arange(batch), lengths - 1] = 2             # </s>
  ids = np.where(mask > 0, ids, 1).astype(np.int32)  # <pad>
  return ids, mask


def global_batch(config, vocab_size: int, step: int, stream: int = 7) -> SyntheticBatch:
  rng = np.random.default_rng([int(config.seed), int(step), stream])
  batch = int(config.batch_size)
  q_ids, q_mask = _ids_and_mask(rng, batch, int(config.max_query_len), vocab_size)
  p_ids, p_mask = _ids_and_mask(rng, batch, int(config.max_passage_len), vocab_size)
  group_id = np.arange(batch, dtype=np.int32)
  twins = rng.choice(batch, size=batch // 4, replace=False)
  group_id[twins] = group_id[rng.permutation(twins)]  # some rows share a group
  return SyntheticBatch(step, SyntheticKind(), "synthetic", q_ids, q_mask, p_ids, p_mask,
                        group_id)


def batch_stream(config, vocab_size: int, *, process_index: int = 0, process_count: int = 1,
                 start_step: int = 0) -> Iterator[SyntheticBatch]:
  host_batch = int(config.batch_size) // process_count
  rows = slice(process_index * host_batch, (process_index + 1) * host_batch)
  step = start_step
  while True:
    b = global_batch(config, vocab_size, step)
    yield dataclasses.replace(
        b, query_ids=b.query_ids[rows], query_mask=b.query_mask[rows],
        passage_ids=b.passage_ids[rows], passage_mask=b.passage_mask[rows],
        group_id=b.group_id[rows])
    step += 1


def validation_batches(config, vocab_size: int, count: int, *, process_index: int = 0,
                       process_count: int = 1) -> list[SyntheticBatch]:
  """`count` fixed batches from their own random stream (never a training batch)."""
  host_batch = int(config.batch_size) // process_count
  rows = slice(process_index * host_batch, (process_index + 1) * host_batch)
  out = []
  for i in range(count):
    b = global_batch(config, vocab_size, i, stream=8)
    out.append(dataclasses.replace(
        b, step=-1, query_ids=b.query_ids[rows], query_mask=b.query_mask[rows],
        passage_ids=b.passage_ids[rows], passage_mask=b.passage_mask[rows],
        group_id=b.group_id[rows]))
  return out
