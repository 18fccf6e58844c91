"""The hybrid batch sampler: which pairs make up each global training batch.

Batch kinds (the method's X-X-mono, X-Y and hybrid, drawn once per global step):

  BatchKind.MONO   X-X-mono: every pair has query and passage in one language l.
  BatchKind.CROSS  X-Y: every pair crosses languages; for each pair the query and
                   passage languages are drawn uniformly among the languages that
                   hold its question id, with a != b.
  BatchKind.MIXED  pairs from all shards (X-X and X-Y) without regard to kind.

Sampling modes (`config.sampling`): "mono" (MONO every step), "cross" (CROSS
every step), "hybrid" (MONO with probability `config.alpha`, else CROSS),
"mixed" (MIXED every step). The language of a MONO batch is drawn uniformly,
proportionally to its number of pairs, or temperature-scaled
(p_l proportional to n_l^(1/T)), `config.mono_language_sampling`.

Determinism and multi-host: the kind (and MONO language) of global step s is a
function of (seed, s) alone, drawn from numpy generators keyed on
(seed, s // PLAN_BLOCK), so every host agrees without communicating. Each
source (one per MONO language, CROSS, MIXED) walks through its units in
per-epoch permutations keyed on (seed, source, epoch); its k-th batch is
computed directly from k. Resuming at step s therefore only counts, per
source, how many of the steps before s chose it (a vectorised pass over the
plan), then starts each source at that position: no batch before s is built.
Within an epoch a unit appears once, so a MONO batch never holds two pairs of
one parallel group and a CROSS batch holds distinct groups, unless a source
has fewer units than the global batch (then repeats are unavoidable and the
loss masks them by group id).

MIXED batches hold distinct groups too, where the data allow. Its units are
all pairs, and one group owns up to L^2 of them, so a plain permutation would
put two pairs of a group in one batch now and then. Instead each epoch lays
the pairs out group by group (groups in a random order, pairs in a random
order within their group) and deals position i to batch i mod n, for n
batches per epoch; a group's pairs sit in consecutive positions, so they land
in different batches as long as the group has at most n pairs. n is the
largest number with sum_g min(size_g, n) >= n * batch_size (a group with more
than n pairs gives only n of them to an epoch; with enough data no group is
capped and every pair but the remainder appears once per epoch). The dealt
batches are then shuffled. With fewer groups than the batch size the data do
not allow distinct groups, and MIXED falls back to a plain permutation of the
pairs.

Every batch also carries `language_pairs`, the counts of
(query language, passage language) over the whole global batch
({"de-en": 3, "en-es": 5, ...}), so a host that holds only a slice of the
batch can still log which language pairs a step trained on.

The pipeline is batch-unmixed in the t5x_retrieval way
(`get_batch_unmixed_dataset`): each source is a tf.data dataset of whole
global batches (row indices into the pair table), and
`tf.data.Dataset.choose_from_datasets` picks one source per step from the
shared plan. Each host keeps its slice (process_index of process_count) of the
global batch and gathers those rows' token ids from the in-memory pair table
(loaded once from the TFRecord shards).

Without TensorFlow (or with `config.input_pipeline` / `$MLIR_INPUT_PIPELINE`
set to "numpy") a plain numpy iterator (`_numpy_plan`) walks the same plan
and yields byte-identical batches; TensorFlow is imported only on the tf path.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from configs import value as config_value
from data_pipelines import folds
from data_pipelines import shards as shards_lib
from data_pipelines import train_files
from data_pipelines.shards import TrainingData, default_shards_dir, load_training_data
from data_pipelines.tfrecord import input_pipeline

LANGUAGE_SAMPLING = ("uniform", "size", "temperature")
PLAN_BLOCK = 1024          # steps drawn per generator call of the kind plan
_INF = np.iinfo(np.int64).max
# Stream ids keep the generators of different decisions independent.
_PLAN, _MONO, _CROSS_GROUPS, _CROSS_LANGS, _MIXED = 1, 2, 3, 4, 5
# The hard-negative fields of a Batch (and of a PairTable's negative bank).
NEGATIVE_FIELDS = ("negative_ids", "negative_mask", "negative_valid", "negative_group_id")


class BatchKind(enum.Enum):
  MONO = "mono"
  CROSS = "cross"
  MIXED = "mixed"


@dataclasses.dataclass
class Batch:
  step: int
  kind: BatchKind
  languages: str                 # MONO: its language ("de"); CROSS: "x"; MIXED: "mixed"
  query_ids: np.ndarray          # int32 [host_batch, max_query_len]
  query_mask: np.ndarray         # int32 [host_batch, max_query_len]
  passage_ids: np.ndarray        # int32 [host_batch, max_passage_len]
  passage_mask: np.ndarray       # int32 [host_batch, max_passage_len]
  group_id: np.ndarray           # int32 [host_batch]; same id => parallel => masked as negatives
  query_language: np.ndarray     # str [host_batch]
  passage_language: np.ndarray   # str [host_batch]
  # "{query_language}-{passage_language}" -> pairs of the whole global batch (all hosts).
  language_pairs: dict[str, int] = dataclasses.field(default_factory=dict)
  # Hard negatives (config.hard_negatives_per_pair = n > 0; else None): each pair's first n
  # negatives, padded with missing ones (valid 0, masked out of the loss).
  negative_ids: np.ndarray | None = None       # int32 [host_batch, n, max_passage_len]
  negative_mask: np.ndarray | None = None      # int32 [host_batch, n, max_passage_len]
  negative_valid: np.ndarray | None = None     # int32 [host_batch, n]
  negative_group_id: np.ndarray | None = None  # int32 [host_batch, n]; -1: no training group



def build_training_data(config, tokenizer, *, progress: bool = True,
                        prompts=None) -> TrainingData:
  """Build (or reuse, by manifest) the fold's shards and load them into memory.

  Reads config.fold, positive, max_query_len, max_passage_len,
  train_languages (optional subset), data_dir (None: the default data
  directory) and shards_dir (None: $MLIR_TRAIN_CACHE/shards). `prompts`: the
  model's {"query", "passage"} prompts (`LoadedModel.prompts`); None: E5's.

  With config.data_source == "files" the pairs come from config.train_files
  instead (`data_pipelines.train_files.build_training_data`: same shards, table
  and batches; the files are checked against the fold's evaluation sets).

  The fold's overlap check (`folds.check_fold`: training question ids, texts
  and positives against every evaluation set) runs on every call, before the
  shards are built or reused, so reused shards are checked against the
  current readers and evaluation data too (in one process, a check that passed
  is repeated only when the training texts or a raw data file changed); it raises
  `folds.FoldOverlapError`.
  It reads the raw training and evaluation sets and compares them: about 2 s
  of CPU time for fold A and 3 s for fold B (all languages; measured on a
  2-core machine), small next to model loading and compilation. The training
  sets read for it are reused if the shards need building.
  """
  if config_value(config, "data_source") == "files":  # your own files: data_pipelines.train_files
    check_data_fits(config)  # the sampling mode against the files' pairs, before any shard
    return train_files.build_training_data(config, tokenizer, progress=progress, prompts=prompts)
  if int(config_value(config, "hard_negatives_per_pair") or 0):
    from data_pipelines.errors import DataError
    raise DataError("hard_negatives_per_pair needs data_source 'files' (records with "
                    "negatives); the folds' pairs have none")
  fold = folds.get_fold(config_value(config, "fold"))
  languages = folds.train_languages(fold, config_value(config, "train_languages"))
  data_dir = config_value(config, "data_dir")
  spec = shards_lib.ShardSpec(fold=fold.name, languages=languages,
                              positive=config_value(config, "positive"),
                              max_query_len=int(config.max_query_len),
                              max_passage_len=int(config.max_passage_len),
                              **({} if prompts is None else
                                 {"query_prompt": prompts["query"],
                                  "passage_prompt": prompts["passage"]}))

  start = time.perf_counter()
  train_sets = folds.load_train_sets(fold, data_dir, languages)
  folds.check_fold(fold, train_sets, data_dir)
  logging.info("fold %s overlap check passed in %.1f s", fold.name, time.perf_counter() - start)

  root = config_value(config, "shards_dir") or default_shards_dir()
  directory = shards_lib.build_or_load(root, spec, tokenizer,
                                       folds.train_input_files(fold, data_dir, languages),
                                       lambda: train_sets, progress=progress)
  return load_training_data(directory)


def language_probabilities(sizes: np.ndarray, how: str, temperature: float = 1.0) -> np.ndarray:
  """p_l for MONO batches: uniform, proportional to size, or proportional to n_l^(1/T)."""
  sizes = np.asarray(sizes, np.float64)
  if how == "uniform":
    weights = np.ones_like(sizes)
  elif how == "size":
    weights = sizes
  elif how == "temperature":
    if not temperature > 0:
      raise ValueError(f"language_temperature must be > 0, got {temperature}")
    weights = sizes ** (1.0 / temperature)
  else:
    raise ValueError(f"mono_language_sampling must be one of {LANGUAGE_SAMPLING}, got {how!r}")
  return weights / weights.sum()


@functools.lru_cache(maxsize=256)
def _permutation(key: tuple[int, ...], n: int) -> np.ndarray:
  return np.random.default_rng(list(key)).permutation(n)


def mixed_batches_per_epoch(group_id: np.ndarray, batch: int) -> int:
  """n, the MIXED batches per epoch: the largest n with sum_g min(size_g, n) >= n * batch.

  0 when there are fewer groups than `batch` (distinct groups are impossible).
  """
  sizes = np.bincount(np.asarray(group_id, np.int64))
  sizes = sizes[sizes > 0]
  n = len(group_id) // batch
  # Decreasing fixed-point iteration; it stops at the largest feasible n (each
  # iterate stays >= it, and it stops only where n is feasible).
  while n > 0:
    fits = int(np.minimum(sizes, n).sum()) // batch
    if fits >= n:
      return n
    n = fits
  return 0


def _mixed_epoch(group_id: np.ndarray, batch: int, n: int, key: tuple[int, ...]) -> np.ndarray:
  """Rows of one epoch's MIXED batches, no group twice in a batch; int64 [n, batch]."""
  rng = np.random.default_rng(list(key))
  num_pairs = len(group_id)
  group_rank = rng.permutation(int(group_id.max()) + 1)      # a random order of the groups
  order = np.lexsort((rng.random(num_pairs), group_rank[group_id]))  # group by group
  grouped = group_id[order]
  first = np.r_[True, grouped[1:] != grouped[:-1]]
  positions = np.arange(num_pairs)
  occurrence = positions - np.maximum.accumulate(np.where(first, positions, 0))
  kept = order[occurrence < n][:n * batch]         # at most n pairs of a group, then cut
  dealt = kept.reshape(batch, n).T                 # batch j = positions j, j + n, j + 2n, ...
  return dealt[rng.permutation(n)].astype(np.int64)


def _epoch_batch(n: int, batch: int, key: tuple[int, ...], ordinal: int) -> np.ndarray:
  """Positions (into n units) of a source's `ordinal`-th batch; int64 [batch].

  Batches never straddle epochs (the remainder of each epoch's permutation is
  dropped; it differs per epoch), so no unit repeats within a batch when
  n >= batch. With n < batch, fresh permutations are concatenated.
  """
  if n >= batch:
    epoch, offset = divmod(ordinal, n // batch)
    return _permutation((*key, epoch), n)[offset * batch:(offset + 1) * batch]
  rng = np.random.default_rng([*key, ordinal, n])
  reps = -(-batch // n)
  return np.concatenate([rng.permutation(n) for _ in range(reps)])[:batch]


# ----------------------------------------------------------------------------
# The composition rule as data: batch sources and sampling modes
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BatchSource:
  """A kind of batch: which pair-table rows its `ordinal`-th global batch holds.

  `per_language`: one source per training language (the batch is in that
  language), else one source for the whole table. `rows(plan, language, ordinal)`
  gives int64 [batch_size] rows (`language` is an index, None when not per
  language); `label(language)` is the batches.jsonl "languages" field.
  """
  kind: BatchKind
  per_language: bool
  rows: Callable[["BatchPlan", int | None, int], np.ndarray]
  label: Callable[[str | None], str]


@dataclasses.dataclass(frozen=True)
class SamplingMode:
  """`config.sampling`: the batch sources a run draws each step from, with weights.

  `weights(config) -> {source name: weight}`; each step picks a source with these
  probabilities (in this order), and a per-language source its language by
  `config.mono_language_sampling`. `label` names the strategy in reports ("{}": its
  `config.alpha`, when `uses_alpha`); `alpha_axis` is its place on the report's
  alpha axis (None: off it; for modes that use alpha, their alpha).
  """
  label: str
  weights: Callable[[Any], dict[str, float]]
  uses_alpha: bool = False
  alpha_axis: float | None = None


def _mono_rows(plan: "BatchPlan", language: int, ordinal: int) -> np.ndarray:
  """X-X-mono: pairs of one language's X-X shard, each group once per epoch."""
  units = plan.table.shard_rows[(plan.languages[language],) * 2]
  return units[_epoch_batch(len(units), plan.batch_size, (plan.seed, _MONO, language), ordinal)]


def _cross_rows(plan: "BatchPlan", language: None, ordinal: int) -> np.ndarray:
  """X-Y: distinct groups; per pair, query and passage languages drawn uniformly among
  the languages holding the group, a != b."""
  b = plan.batch_size
  groups = plan.cross_groups[_epoch_batch(len(plan.cross_groups), b,
                                          (plan.seed, _CROSS_GROUPS), ordinal)]  # [B]
  u = np.random.default_rng([plan.seed, _CROSS_LANGS, ordinal]).random((b, 2))
  count = plan.holder_count[groups]                                # [B]
  i = np.floor(u[:, 0] * count).astype(np.int64)                   # query language slot
  j = np.floor(u[:, 1] * (count - 1)).astype(np.int64)             # passage slot, != i
  j = j + (j >= i)
  a = plan.holder_list[groups, i]
  p = plan.holder_list[groups, j]
  return plan.table.row_of[a, p, groups].astype(np.int64)


def _mixed_rows(plan: "BatchPlan", language: None, ordinal: int) -> np.ndarray:
  """Mixed: pairs of every shard, no group twice in a batch where the data allow."""
  n = plan.mixed_per_epoch
  if n == 0:  # fewer groups than the batch: repeats are unavoidable
    return _epoch_batch(len(plan.table.group_id), plan.batch_size, (plan.seed, _MIXED), ordinal)
  epoch, offset = divmod(ordinal, n)
  cache = plan._mixed_cache
  if epoch not in cache:
    if len(cache) >= 2:
      cache.pop(next(iter(cache)))
    cache[epoch] = _mixed_epoch(plan.table.group_id, plan.batch_size, n,
                                (plan.seed, _MIXED, epoch))
  return cache[epoch][offset]


# Source order fixes the source numbering (0..L-1 MONO of language l, then CROSS,
# then MIXED), which the plan's random draws and resume positions depend on:
# append new kinds at the end. Example, X->en pivot batches (queries in language
# l, passages in English):
#   "pivot": BatchSource(BatchKind.PIVOT, per_language=True, label=lambda l: f"{l}-en",
#                        rows=lambda plan, l, k: ...rows of shard (l, "en")...)
# plus a mode in SAMPLING_MODES, e.g. "hybrid_pivot": {"mono": a, "pivot": 1 - a}.
BATCH_SOURCES: dict[str, BatchSource] = {
    "mono": BatchSource(BatchKind.MONO, per_language=True, rows=_mono_rows, label=lambda l: l),
    "cross": BatchSource(BatchKind.CROSS, per_language=False, rows=_cross_rows,
                         label=lambda l: "x"),
    "mixed": BatchSource(BatchKind.MIXED, per_language=False, rows=_mixed_rows,
                         label=lambda l: "mixed"),
}

SAMPLING_MODES: dict[str, SamplingMode] = {
    "mono": SamplingMode("X-X-mono", lambda c: {"mono": 1.0}, alpha_axis=1.0),
    "cross": SamplingMode("X-Y", lambda c: {"cross": 1.0}, alpha_axis=0.0),
    "hybrid": SamplingMode("Hybrid (alpha={})",
                           lambda c: {"mono": float(config_value(c, "alpha")),
                                      "cross": 1.0 - float(config_value(c, "alpha"))},
                           uses_alpha=True),
    "mixed": SamplingMode("Mixed", lambda c: {"mixed": 1.0}),
}


# What each source draws of a group's pairs (a, b), given the languages in which the group
# has both a query and a positive ("holders"): MONO (l, l) of a holder; CROSS (a, b), a != b,
# both holders; MIXED every pair. A source not listed draws every pair.
SOURCE_DRAWS: dict[str, Callable[[str, str, frozenset], bool]] = {
    "mono": lambda a, b, holders: a == b and a in holders,
    "cross": lambda a, b, holders: a != b and a in holders and b in holders,
}
SOURCE_NEEDS = {"mono": "a query and a positive in the same language, in every training "
                        "language",
                "cross": "a group with a query and a positive in each of two languages"}


def fitting_modes(groups, languages, config) -> tuple[dict[str, str], list[str]]:
  """({source: what the data lack for it}, [sampling modes whose sources all have data]).

  `groups`: (query languages, positive languages) of each group; its pairs are their
  product. MONO needs an (l, l) pair in every training language, CROSS one group holding
  two languages, MIXED any pair."""
  holders = [frozenset(q) & frozenset(p) for q, p in groups]
  lacking = {}
  no_mono = [l for l in languages if not any(l in h for h in holders)]
  if no_mono:
    lacking["mono"] = "no " + ", ".join(f"{l}-{l}" for l in no_mono) + " pair"
  if not any(len(h) >= 2 for h in holders):
    lacking["cross"] = "none"
  if not groups:
    lacking["mixed"] = "no pair"
  modes = [name for name, mode in SAMPLING_MODES.items()
           if not any(w > 0 and source in lacking for source, w in mode.weights(config).items())]
  return lacking, modes


_WARNED: set = set()  # unused-pair warnings given in this process


def check_sampling(groups, languages, config, where: str = "the training data") -> None:
  """`DataError` (one line) when `config.sampling` draws a batch kind the data cannot give:
  names what is missing, the language pairs there are and the modes that fit. Warns when
  pairs are never drawn by the mode, or a batch must repeat pairs."""
  from data_pipelines.errors import DataError
  sampling = config_value(config, "sampling")
  if sampling not in SAMPLING_MODES:
    return  # config validation names it
  lacking, modes = fitting_modes(groups, languages, config)
  weights = {n: w for n, w in SAMPLING_MODES[sampling].weights(config).items() if w > 0}
  missing = [n for n in weights if n in lacking]
  pair_counts = collections.Counter(f"{a}-{b}" for q, p in groups for a in q for b in p)
  present = ", ".join(f"{k} ({n})" for k, n in sorted(pair_counts.items())) or "none"
  if missing:
    needs = "; ".join(f"{n.upper()} batches need {SOURCE_NEEDS.get(n, 'pairs')} (the data "
                      f"have {lacking[n]})" for n in missing)
    fit = (", ".join(modes) + f" (e.g. --config.sampling={modes[0]})") if modes else "none"
    raise DataError(f"config.sampling={sampling!r} cannot be drawn from {where}: {needs}. "
                    f"Language pairs there: {present}. Sampling modes that fit: {fit}")
  draws = [SOURCE_DRAWS.get(n) for n in weights]
  unused = sum(1 for q, p in groups for a in q for b in p
               if not any(d is None or d(a, b, frozenset(q) & frozenset(p)) for d in draws))
  if unused and (where, sampling, unused) not in _WARNED:
    _WARNED.add((where, sampling, unused))
    logging.warning(
        "%d of %d training pairs in %s are never drawn by sampling=%r (their group has no "
        "query and positive in one language, or not in two for CROSS): only 'mixed' batches "
        "draw them; give such records the group of their translations, or use sampling=mixed",
        unused, sum(pair_counts.values()), where, sampling)


def check_data_fits(config) -> None:
  """`check_sampling` for a run's data before anything is built: your files (read once,
  `train_files.read_train_files_cached`) or a fold's languages; nothing for synthetic."""
  source = config_value(config, "data_source")
  if source == "files" and config_value(config, "train_files"):
    data = train_files.read_train_files_cached(config_value(config, "train_files"),
                                               bool(config_value(config, "strict_data")),
                                               config_value(config, "default_language"))
    languages = data.select_languages(config_value(config, "train_languages"))
    check_sampling(data.language_groups(languages), languages, config,
                   "the training files")
  elif source == "pairs":
    languages = folds.train_languages(folds.get_fold(config_value(config, "fold")),
                                      config_value(config, "train_languages"))
    if len(languages) == 1:  # a fold's languages are parallel: one language lacks CROSS only
      check_sampling([((languages[0],), (languages[0],))], languages, config,
                     f"fold {config_value(config, 'fold')}'s {languages[0]} pairs")


class BatchPlan:
  """Which rows of the pair table form each global step: a pure function of (config, step).

  `self.sources_table` lists every (source name, language index or None) in
  `BATCH_SOURCES` order; a step's source is an index into it.
  """

  def __init__(self, data: TrainingData, config):
    self.data, self.table = data, data.table
    self.sampling = config_value(config, "sampling")
    if self.sampling not in SAMPLING_MODES:
      raise ValueError(f"sampling must be one of {tuple(SAMPLING_MODES)}, got {self.sampling!r}")
    self.alpha = float(config_value(config, "alpha"))
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
    self.seed = int(config_value(config, "seed"))
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0, got {self.seed}")
    self.batch_size = int(config.batch_size)
    self.languages = data.languages
    self.num_languages = len(self.languages)
    self.sources_table = [(name, l) for name, source in BATCH_SOURCES.items()
                          for l in (range(self.num_languages) if source.per_language else [None])]
    self.num_sources = len(self.sources_table)
    weights = SAMPLING_MODES[self.sampling].weights(config)          # {name: weight}
    self._drawn = list(weights)                                       # names, in draw order
    self._cum_w = np.cumsum([weights[n] for n in self._drawn])
    self.weights = weights
    self.language_p = language_probabilities(
        data.mono_sizes(), config_value(config, "mono_language_sampling"),
        float(config_value(config, "language_temperature")))
    self._cum_p = np.cumsum(self.language_p)
    self.cross_groups = data.cross_groups()
    holders = self.table.holders()                                    # bool [G, L]
    self.holder_count = holders.sum(axis=1)                           # [G]
    # holder_list[g, i] = index of the i-th language holding g (stable order).
    self.holder_list = np.argsort(~holders, axis=1, kind="stable")    # [G, L]
    self.mixed_per_epoch = mixed_batches_per_epoch(self.table.group_id, self.batch_size)
    self._mixed_cache: dict[int, np.ndarray] = {}
    self._check_sizes()

  def source_index(self, name: str, language: int | None = None) -> int:
    return self.sources_table.index((name, language))

  @property
  def cross_source(self) -> int:
    return self.source_index("cross")

  @property
  def mixed_source(self) -> int:
    return self.source_index("mixed")

  def _check_sizes(self) -> None:
    used = {name for name, w in self.weights.items() if w > 0}
    if "cross" in used and len(self.cross_groups) == 0:
      raise ValueError("CROSS batches need question ids held by at least two languages; "
                       f"training languages {self.languages} share none")
    empty = [l for l, n in zip(self.languages, self.data.mono_sizes()) if n == 0]
    if "mono" in used and empty:
      raise ValueError(f"training languages {empty} have no pairs; drop them from train_languages")
    small = []
    b = self.batch_size
    if "mono" in used:
      small += [f"{l} ({n} pairs: each about {b / n:.1f} times per batch)"
                for l, n in zip(self.languages, self.data.mono_sizes()) if 0 < n < b]
    if "cross" in used and len(self.cross_groups) < b:
      n = len(self.cross_groups)
      small.append(f"CROSS ({n} groups: each about {b / n:.1f} times per batch)")
    if "mixed" in used and self.mixed_per_epoch == 0:
      n = len(np.unique(self.table.group_id))
      small.append(f"MIXED ({n} groups: each about {b / n:.1f} times per batch)")
    if small:
      logging.warning("global batch %d is larger than its sources %s: the same pairs repeat "
                      "within a batch (masked as each other's negatives, so they add no "
                      "contrast); lower config.batch_size or add data", b, ", ".join(small))

  # -- the kind plan -------------------------------------------------------

  def sources(self, steps: np.ndarray) -> np.ndarray:
    """Source index of each global step; int64 [len(steps)].

    Two uniforms per step: u0 picks the source by the mode's weights, u1 the
    language of a per-language source.
    """
    steps = np.asarray(steps, np.int64)
    blocks, which = np.unique(steps // PLAN_BLOCK, return_inverse=True)
    draws = np.stack([np.random.default_rng([self.seed, _PLAN, int(b)]).random((PLAN_BLOCK, 2))
                      for b in blocks]) if len(blocks) else np.zeros((0, PLAN_BLOCK, 2))
    u = draws[which.reshape(-1), steps % PLAN_BLOCK]                   # [n, 2] uniforms
    language = np.minimum(np.searchsorted(self._cum_p, u[:, 1], side="right"),
                          self.num_languages - 1)                      # [n]
    pick = np.minimum(np.searchsorted(self._cum_w, u[:, 0], side="right"),
                      len(self._drawn) - 1)                            # [n] into _drawn
    out = np.empty(len(steps), np.int64)
    for i, name in enumerate(self._drawn):
      chosen = pick == i
      if BATCH_SOURCES[name].per_language:
        out[chosen] = self.source_index(name, 0) + language[chosen]
      else:
        out[chosen] = self.source_index(name)
    return out

  def kind_of(self, source: int) -> tuple[BatchKind, str]:
    name, language = self.sources_table[source]
    batch_source = BATCH_SOURCES[name]
    return batch_source.kind, batch_source.label(
        None if language is None else self.languages[language])

  def ordinals_before(self, step: int, chunk: int = 1 << 20) -> np.ndarray:
    """int64 [num_sources]: how many of steps 0..step-1 chose each source."""
    counts = np.zeros(self.num_sources, np.int64)
    for lo in range(0, step, chunk):
      counts += np.bincount(self.sources(np.arange(lo, min(step, lo + chunk))),
                            minlength=len(counts))
    return counts

  # -- rows of one source's k-th batch ---------------------------------------

  def rows(self, source: int, ordinal: int) -> np.ndarray:
    """Pair-table rows of the `ordinal`-th global batch of `source`; int64 [batch_size]."""
    name, language = self.sources_table[source]
    return BATCH_SOURCES[name].rows(self, language, ordinal)

  def language_pairs(self, rows: np.ndarray) -> dict[str, int]:
    """{"a-b": count} of (query language, passage language) over `rows`, sorted by key."""
    t, num = self.table, self.num_languages
    codes = t.query_language[rows].astype(np.int64) * num + t.passage_language[rows]
    counts = np.bincount(codes, minlength=num * num)
    return {f"{self.languages[c // num]}-{self.languages[c % num]}": int(counts[c])
            for c in np.flatnonzero(counts)}


def _tf_dataset(plan: BatchPlan, start_step: int):
  """tf.data: (step, source, global rows) per global step, from start_step on."""
  import tensorflow as tf

  first = plan.ordinals_before(start_step)

  def plan_block(steps):
    return plan.sources(steps).astype(np.int64)

  def selector():
    ds = tf.data.Dataset.range(start_step, _INF).batch(PLAN_BLOCK)
    ds = ds.map(lambda s: tf.numpy_function(plan_block, [s], tf.int64, stateful=False))
    return ds.unbatch()

  def source_dataset(source):
    # One element = one whole global batch of this source (batch-unmixed).
    fn = lambda k: plan.rows(source, int(k)).astype(np.int64)
    ds = tf.data.Dataset.range(int(first[source]), _INF)
    return ds.map(lambda k: tf.ensure_shape(
        tf.numpy_function(fn, [k], tf.int64, stateful=False), [plan.batch_size]))

  sources = [source_dataset(s) for s in range(plan.num_sources)]
  rows = tf.data.Dataset.choose_from_datasets(sources, selector())
  ds = tf.data.Dataset.zip((tf.data.Dataset.range(start_step, _INF), selector(), rows))
  return ds  # no prefetch: a prefetch thread calling numpy_function hangs interpreter exit


def _numpy_plan(plan: BatchPlan, start_step: int) -> Iterator[tuple[int, int, np.ndarray]]:
  """The numpy twin of `_tf_dataset`: (step, source, global rows), the same elements.

  Like `choose_from_datasets`, it hands each step the next batch of the source
  the plan picks, every source starting at its ordinal before `start_step`.
  """
  ordinal = plan.ordinals_before(start_step).copy()
  step = start_step
  while True:
    block_end = (step // PLAN_BLOCK + 1) * PLAN_BLOCK
    for source in plan.sources(np.arange(step, block_end)):
      rows = plan.rows(int(source), int(ordinal[source])).astype(np.int64)
      ordinal[source] += 1
      yield step, int(source), rows
      step += 1


def batch_stream(training_data: TrainingData, config, *, process_index: int = 0,
                 process_count: int = 1, start_step: int = 0,
                 pipeline: str | None = None) -> Iterator[Batch]:
  """Infinite stream of this host's slice of every global batch, from `start_step`.

  Batches are a deterministic function of (config, seed, step): a stream
  started at s yields exactly what an uninterrupted stream yields from s.
  `pipeline` ("tf", "numpy", "auto"; see `input_pipeline`) picks tf.data or
  the numpy iterator; they yield identical batches.
  """
  plan = BatchPlan(training_data, config)
  if plan.batch_size % process_count:
    raise ValueError(f"batch_size {plan.batch_size} is not divisible by process_count "
                     f"{process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  if input_pipeline(config, pipeline) == "tf":
    elements = _tf_dataset(plan, start_step).as_numpy_iterator()
  else:
    elements = _numpy_plan(plan, start_step)
  for step, source, global_rows in elements:
    yield _host_batch(plan, int(step), int(source), global_rows, process_index, process_count)


def _host_batch(plan: BatchPlan, step: int, source: int, global_rows: np.ndarray,
                process_index: int, process_count: int) -> Batch:
  """This host's slice of the global batch `global_rows` (rows of plan's pair table)."""
  table, names = plan.table, np.array(plan.table.languages)
  host = plan.batch_size // process_count
  kind, languages = plan.kind_of(source)
  rows = global_rows[process_index * host:(process_index + 1) * host]
  negatives = {}
  if table.negative_index is not None:
    entry = table.negative_index[rows]
    negatives = {f: getattr(table, f)[entry] for f in NEGATIVE_FIELDS}
  return Batch(step=step, kind=kind, languages=languages, **negatives,
               query_ids=table.query_ids[rows], query_mask=table.query_mask[rows],
               passage_ids=table.passage_ids[rows], passage_mask=table.passage_mask[rows],
               group_id=table.group_id[rows],
               query_language=names[table.query_language[rows]],
               passage_language=names[table.passage_language[rows]],
               language_pairs=plan.language_pairs(global_rows))


def kinds(training_data: TrainingData, config, steps: Iterable[int]) -> list[tuple[BatchKind, str]]:
  """(kind, languages) of each global step, without building any batch (cheap)."""
  plan = BatchPlan(training_data, config)
  return [plan.kind_of(int(s)) for s in plan.sources(np.fromiter(steps, np.int64))]


def summarize(batches: Iterable) -> dict[str, int]:
  """How many batches of each kind and language: {"mono": n, "mono:de": n, "cross": n, ...}.

  Accepts Batch objects or (kind, languages) tuples (as `kinds` returns).
  """
  counts = collections.Counter()
  for b in batches:
    kind, languages = (b.kind, b.languages) if isinstance(b, Batch) else b
    counts[kind.value] += 1
    if kind == BatchKind.MONO:
      counts[f"mono:{languages}"] += 1
  return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------
# Validation: whole parallel groups held out, fixed batches of every kind
# ----------------------------------------------------------------------------
VALIDATION_SEED = 20240816  # fixed: every run and seed is scored on the same pairs
_VALIDATION = 6             # generator stream id of the held-out group draw


def select_groups(table: shards_lib.PairTable, keep: np.ndarray) -> shards_lib.PairTable:
  """The pairs of the groups with `keep[g]` (bool [G]); group ids are kept as they are."""
  rows = np.flatnonzero(keep[table.group_id])                       # old rows kept, in order
  new_index = np.full(len(table.group_id), -1, np.int64)
  new_index[rows] = np.arange(len(rows))
  row_of = np.where(table.row_of >= 0, new_index[np.maximum(table.row_of, 0)], -1)
  return shards_lib.PairTable(
      languages=table.languages, query_ids=table.query_ids[rows],
      query_mask=table.query_mask[rows], passage_ids=table.passage_ids[rows],
      passage_mask=table.passage_mask[rows], group_id=table.group_id[rows],
      query_language=table.query_language[rows], passage_language=table.passage_language[rows],
      row_of=row_of.astype(np.int32),
      shard_rows={k: new_index[v[keep[table.group_id[v]]]] for k, v in table.shard_rows.items()},
      **({} if table.negative_index is None else dict(
          negative_index=table.negative_index[rows],
          **{f: getattr(table, f) for f in NEGATIVE_FIELDS})))


def hold_out(data: TrainingData, fraction: float) -> tuple[TrainingData, TrainingData | None]:
  """(training, validation): `fraction` of the parallel groups, whole, go to validation.

  The draw depends only on the groups (VALIDATION_SEED), not on the run's seed or
  sampling, so every run of a study trains and validates on the same split.
  """
  if not fraction:
    return data, None
  table = data.table
  groups = np.unique(table.group_id)
  count = max(1, int(round(fraction * len(groups))))
  if count >= len(groups):
    raise ValueError(f"validation_fraction {fraction} leaves no training group "
                     f"({len(groups)} groups)")
  held = np.zeros(table.row_of.shape[2], bool)
  held[np.random.default_rng([VALIDATION_SEED, _VALIDATION]).permutation(groups)[:count]] = True
  return (dataclasses.replace(data, table=select_groups(table, ~held)),
          dataclasses.replace(data, table=select_groups(table, held)))


def validation_batches(data: TrainingData, batch_size: int, batches_per_kind: int, *,
                       process_index: int = 0, process_count: int = 1) -> list[Batch]:
  """Fixed validation batches: `batches_per_kind` MONO batches of every language with pairs,
  then as many CROSS batches (when groups cross languages). The same for every run."""
  import types
  plan = BatchPlan(data, types.SimpleNamespace(
      sampling="mixed", alpha=1.0, seed=VALIDATION_SEED, batch_size=batch_size,
      mono_language_sampling="uniform", language_temperature=1.0))
  sources = [i for i, n in enumerate(data.mono_sizes()) if n > 0]
  if len(plan.cross_groups):
    sources.append(plan.cross_source)
  return [_host_batch(plan, -1, source, plan.rows(source, k).astype(np.int64),
                      process_index, process_count)
          for source in sources for k in range(batches_per_kind)]
