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
  # With config.hard_negatives_per_pair = n > 0 (else None): [host_batch, n, max_passage_len]
  # ids / mask, [host_batch, n] validity (about 1 in 8 missing) and source group (-1 or,
  # for about 1 in 8, another row's group, so the loss's group mask is exercised).
  negative_ids: np.ndarray | None = None
  negative_mask: np.ndarray | None = None
  negative_valid: np.ndarray | None = None
  negative_group_id: np.ndarray | None = None


_ROW_FIELDS = ("query_ids", "query_mask", "passage_ids", "passage_mask", "group_id",
               "negative_ids", "negative_mask", "negative_valid", "negative_group_id")


def _rows(b: "SyntheticBatch", rows: slice, **changes) -> "SyntheticBatch":
  """This process's rows of a global batch (fields that are None stay None)."""
  sliced = {f: getattr(b, f)[rows] for f in _ROW_FIELDS if getattr(b, f) is not None}
  return dataclasses.replace(b, **sliced, **changes)


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
  half = len(twins) // 2  # the first half takes the second half's groups: pairs of rows share one
  group_id[twins[:half]] = group_id[twins[half:2 * half]]
  out = SyntheticBatch(step, SyntheticKind(), "synthetic", q_ids, q_mask, p_ids, p_mask,
                       group_id)
  n = int(config.get("hard_negatives_per_pair", 0) or 0) if hasattr(config, "get") else 0
  if n:  # a separate generator: the batch without negatives is unchanged
    neg_rng = np.random.default_rng([int(config.seed), int(step), stream, 1])
    length = int(config.max_passage_len)
    ids, mask = _ids_and_mask(neg_rng, batch * n, length, vocab_size)
    out.negative_ids, out.negative_mask = ids.reshape(batch, n, length), mask.reshape(batch, n, length)
    out.negative_valid = (neg_rng.random((batch, n)) >= 0.125).astype(np.int32)
    other = group_id[neg_rng.integers(0, batch, size=(batch, n))]
    out.negative_group_id = np.where(neg_rng.random((batch, n)) < 0.125, other, -1).astype(np.int32)
  return out


def batch_stream(config, vocab_size: int, *, process_index: int = 0, process_count: int = 1,
                 start_step: int = 0) -> Iterator[SyntheticBatch]:
  host_batch = int(config.batch_size) // process_count
  rows = slice(process_index * host_batch, (process_index + 1) * host_batch)
  step = start_step
  while True:
    yield _rows(global_batch(config, vocab_size, step), rows)
    step += 1


def validation_batches(config, vocab_size: int, count: int, *, process_index: int = 0,
                       process_count: int = 1) -> list[SyntheticBatch]:
  """`count` fixed batches from their own random stream (never a training batch)."""
  host_batch = int(config.batch_size) // process_count
  rows = slice(process_index * host_batch, (process_index + 1) * host_batch)
  out = []
  for i in range(count):
    out.append(_rows(global_batch(config, vocab_size, i, stream=8), rows, step=-1))
  return out
