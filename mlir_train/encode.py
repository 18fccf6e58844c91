"""Texts -> unit-length embeddings with a jit-compiled Flax forward pass.

Texts are tokenised once, sorted by length (so each batch holds similar
lengths), and each batch is padded to one of a few fixed lengths
(`default_buckets()`: fine steps on a CPU, where padding costs compute; ten
coarse ones on a GPU or TPU, where each new shape costs seconds of
compilation; capped by `max_length`). On a CPU a batch also holds at most
`batch_tokens` padded tokens (`default_batch_tokens()`: 1,024), so long texts
go in fewer rows: every matmul then works on [1,024, hidden] activations that
stay in cache (perf/PROFILE.md, "Encoder forward on a CPU"). Each batch is filled to the
row count of its length, so the forward pass compiles at most once per
bucket, however many texts are encoded. Off the CPU, the shapes a call needs and
has not compiled yet compile side by side (a thread each) before the first batch
runs. Results come back in input order.

`embed_many` encodes the same texts by K models of one architecture: tokenised once,
each batch through every model's parameters in one `jax.vmap`ped forward pass.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import os
from concurrent import futures
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from data_pipelines import tokenization
from data_pipelines.errors import ProjectError


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, params, input_ids, attention_mask):
  return module.apply({"params": params}, input_ids, attention_mask)  # [batch, hidden]


_COMPILED: set = set()   # (program key..., rows, length) compiled here (`_compile_shapes`)


def compile_ahead(module, params, shapes, device) -> int:
  """Compile the forward pass for those [rows, length] `shapes` not compiled yet, side by
  side (a thread each: much of a compilation runs on one host core, and on a GPU each new
  shape costs seconds); returns how many compiled. Calls with those shapes then reuse them."""
  dtype = str(jax.tree_util.tree_leaves(params)[0].dtype)
  return _compile_shapes((module, dtype, device.id), shapes,
                         lambda ids, mask: _forward(module, params, ids, mask))


def _compile_shapes(key: tuple, shapes, forward) -> int:
  """`compile_ahead` for any forward(input_ids, attention_mask); `key` names its program."""
  new = sorted({s for s in shapes if (*key, *s) not in _COMPILED})

  def one(shape):  # [rows, length] of padding: only the shape matters
    ids, mask = np.zeros(shape, np.int32), np.ones(shape, np.int32)
    jax.block_until_ready(forward(ids, mask))

  if new:
    with futures.ThreadPoolExecutor(min(len(new), os.cpu_count() or 1, 8)) as pool:
      list(pool.map(one, new))
  _COMPILED.update((*key, *s) for s in new)
  return len(new)


def model_max_length(model, max_length: int) -> int:
  """`max_length` capped by the tokenizer's and the position table's limits."""
  limit = model.config.max_position_embeddings
  if model.config.position_style == "roberta":
    limit -= model.config.pad_token_id + 1  # positions start at pad_token_id + 1
  tok_limit = getattr(model.tokenizer, "model_max_length", limit) or limit
  return int(min(max_length, limit, tok_limit))


def default_buckets() -> tuple[int, ...]:
  """Padded lengths for the default backend (see the module docstring)."""
  if jax.default_backend() == "cpu":
    return tokenization.DEFAULT_BUCKETS
  return tokenization.ACCELERATOR_BUCKETS


# Padded tokens per batch on a CPU. Forward passes of e5-small on 2 cores (tokens/s, quiet
# machine): 64 rows of 128 tokens 3,162, 8 rows 4,128; 32 rows of 256 tokens 2,993, 4 rows
# 3,930; 4 rows of 512 tokens 2,026, 2 rows 3,027 (perf/PROFILE.md, "Encoder forward on a CPU").
CPU_BATCH_TOKENS = 1024


def default_batch_tokens() -> int:
  """Padded tokens per batch for the default backend (0: no limit beyond batch_size)."""
  return CPU_BATCH_TOKENS if jax.default_backend() == "cpu" else 0


def batch_rows(length: int, batch_size: int, batch_tokens: int) -> int:
  """Rows of a batch padded to `length`: batch_size, fewer if they hold over batch_tokens."""
  if not batch_tokens:
    return batch_size
  return max(1, min(batch_size, batch_tokens // length))


# Token ids of texts tokenised before: a study evaluates every run on the same texts, and
# tokenising them was most of a tiny model's evaluation (XQuAD-R and TyDi GoldP, 35,669
# texts: about 4 s with e5-small's tokenizer on 2 cores). Key: (tokenizer fingerprint,
# prompt, max_length, 128-bit digest of the text) -> (int32 ids, whether the text was
# cut); least recently used first out once more than TOKEN_IDS_KEPT ids are held.
_TOKEN_IDS: collections.OrderedDict = collections.OrderedDict()
TOKEN_IDS_KEPT = 1 << 24  # ids (int32: 64 MiB)
_token_ids_held = 0


def tokenizer_fingerprint(tokenizer) -> str | None:
  """A digest of everything that turns text into ids (None: not a fast tokenizer, no
  caching). Per-call truncation and padding settings are cleared first; Hugging Face sets
  them again on every call."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None or not hasattr(backend, "to_str"):
    return None
  backend.no_truncation()
  backend.no_padding()
  digest = hashlib.sha256(backend.to_str().encode()).hexdigest()
  return f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}:{digest}"


def token_rows(model, texts: Sequence[str], kind: str | None, max_length: int
               ) -> tuple[list[np.ndarray], list[bool]]:
  """Ids per text (prompt and special tokens included, cut to `max_length`) and whether
  each was cut; texts seen before with the same tokenizer, prompt and cap come from
  `_TOKEN_IDS` (the same ids: a cache, not an approximation)."""
  global _token_ids_held
  if isinstance(texts, str):
    raise TypeError("texts must be a list of strings, not a single string")
  fingerprint = tokenizer_fingerprint(model.tokenizer)
  prompt = tokenization.add_prefix([""], kind, model.prompts)[0]
  digest = lambda t: hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
  keys = [(fingerprint, prompt, max_length, digest(t)) for t in texts]
  found = [None if fingerprint is None else _TOKEN_IDS.get(k) for k in keys]
  missing = [i for i, f in enumerate(found) if f is None]
  if missing:
    new = [texts[i] for i in missing]
    # One token over the cap tells which texts were cut; those are cut again to the cap.
    rows = tokenization.token_ids(model.tokenizer, new, kind, max_length + 1, model.prompts)
    long = [j for j, r in enumerate(rows) if len(r) > max_length]
    if long:
      cut = tokenization.token_ids(model.tokenizer, [new[j] for j in long], kind, max_length,
                                   model.prompts)
      for j, r in zip(long, cut):
        rows[j] = r
    long = set(long)
    for j, i in enumerate(missing):
      found[i] = (np.asarray(rows[j], np.int32), j in long)
      if fingerprint is not None and keys[i] not in _TOKEN_IDS:
        _TOKEN_IDS[keys[i]] = found[i]
        _token_ids_held += len(rows[j])
  if fingerprint is not None:
    for k in keys:  # most recently used last
      _TOKEN_IDS.move_to_end(k)
    while _token_ids_held > TOKEN_IDS_KEPT:
      _token_ids_held -= len(_TOKEN_IDS.popitem(last=False)[1][0])
  return [f[0] for f in found], [f[1] for f in found]


def embed(model, texts: Sequence[str], kind: str | None, batch_size: int = 64,
          max_length: int = 512, progress: bool = True,
          buckets: Sequence[int] | None = None,
          stats: dict | None = None, batch_tokens: int | None = None,
          ahead: bool | None = None) -> np.ndarray:
  """Embed `texts` with `model` (a `models.LoadedModel`).

  `kind` ("query", "passage" or None) selects the model's prompt
  (`model.prompts[kind]`, e.g. E5's "query: "; None: no prompt). Texts longer than
  `max_length` tokens (prefix and special tokens included; capped by the
  model's position table) are truncated to their first tokens, so the result
  equals encoding the truncated text. An empty string is valid: it is encoded
  as `<s>`, the prompt's pieces and `</s>` (see `tokenization.tokenize`). Returns float32
  [N, hidden] unit vectors in input order ([0, hidden] for no texts).

  A batch holds at most `batch_size` texts and, unless `batch_tokens` is 0, at most
  `batch_tokens` padded tokens (at least one text); None: `default_batch_tokens()`.
  Batching changes speed, not results (up to float rounding).

  `stats` (a dict), if given, gets `texts` and `truncated` (texts longer than the
  cap) added to it. `ahead`: compile the call's new shapes side by side first
  (`compile_ahead`); None: off the CPU only (on 2 CPU cores it gained nothing).
  """
  batch_tokens = default_batch_tokens() if batch_tokens is None else batch_tokens
  _check_batch(batch_size, batch_tokens)
  max_length = model_max_length(model, max_length)
  rows, cut = token_rows(model, texts, kind, max_length)  # ids per text, was it cut
  if stats is not None:
    stats["texts"] = stats.get("texts", 0) + len(rows)
    stats["truncated"] = stats.get("truncated", 0) + sum(cut)
  out = np.zeros((len(rows), model.config.hidden_size), np.float32)  # [N, hidden]
  if not rows:
    return out
  # Committed to the first local device, as restored checkpoints are
  # (`models.restore_for_inference`): a loaded and a restored model then share one
  # compiled forward pass per shape (uncommitted parameters compiled their own; on a GPU
  # a study's first trained model paid ~25 s of compilation again).
  device = jax.local_devices()[0]
  params = jax.device_put(model.params, device)
  plan = batch_plan(rows, max_length, batch_size, batch_tokens, buckets)
  if ahead is None:
    ahead = jax.default_backend() != "cpu"
  if ahead:
    compile_ahead(model.module, params, [(n, pad_to) for _, n, pad_to in plan], device)
  forward = lambda ids, mask: _forward(model.module, params, ids, mask)  # [rows, hidden]
  return _run_plan(rows, plan, forward, model.tokenizer.pad_token_id, out, kind, progress)


def _check_batch(batch_size, batch_tokens) -> None:
  for name, value, least in (("batch_size", batch_size, 1), ("batch_tokens", batch_tokens, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ValueError(f"embed: {name} must be an integer >= {least}, got {value!r}")


def batch_plan(rows: Sequence[np.ndarray], max_length: int, batch_size: int, batch_tokens: int,
               buckets: Sequence[int] | None = None) -> list[tuple[list[int], int, int]]:
  """The batches of `embed`: (indices into rows, rows, padded length) each, longest texts
  first, so a batch's first text sets its padded length and its rows (`batch_rows`)."""
  buckets = default_buckets() if buckets is None else buckets
  lengths = [b for b in sorted(buckets) if b < max_length] + [max_length]
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # longest first
  plan, start = [], 0
  while start < len(order):
    pad_to = tokenization.bucket_length(len(rows[order[start]]), lengths)
    n_rows = batch_rows(pad_to, batch_size, batch_tokens)
    plan.append((order[start:start + n_rows], n_rows, pad_to))
    start += n_rows
  return plan


def _run_plan(rows, plan, forward, pad_id: int, out: np.ndarray, kind, progress: bool
              ) -> np.ndarray:
  """Run `forward` on each batch of `plan` and put its vectors in `out` ([..., N, hidden];
  forward gives [..., rows, hidden]); returns `out`."""
  pending = None  # the previous batch, fetched once the next one is dispatched

  def fetch():
    idx, vectors = pending
    out[..., idx, :] = np.asarray(vectors, np.float32)[..., :len(idx), :]
    bar.update(len(idx))

  with tqdm(total=len(rows), desc=f"embed {kind or 'text'}", unit="text",
            disable=not progress) as bar:
    for idx, n_rows, pad_to in plan:
      batch = [rows[i] for i in idx]
      # Fill a short batch with copies of its last row: one shape per padded length.
      batch += [batch[-1]] * (n_rows - len(batch))
      arrays = tokenization.pad(batch, pad_id, pad_to)  # [n_rows, pad_to] each
      # Dispatch is asynchronous: the device runs this batch while the host fetches
      # the previous one and pads the next (on a GPU, host and device overlap).
      vectors = forward(arrays["input_ids"], arrays["attention_mask"])
      if pending is not None:
        fetch()
      pending = (idx, vectors)
    if pending is not None:
      fetch()
  return out


# ----------------------------------------------------------------------------
# Many models of one architecture on the same texts (population evaluation)
# ----------------------------------------------------------------------------
class StackError(ProjectError, ValueError):
  """Models that cannot encode in one stacked forward pass (architecture or tokenizer differ)."""


def check_stackable(models: Sequence) -> None:
  """`StackError` (one line: the first model that differs from the first, and how) unless
  every model shares the first's architecture (config, module and dtype, parameter shapes)
  and tokenizer (`tokenizer_fingerprint`). Prompts may differ."""
  if not models:
    raise StackError("no models to encode")
  first = models[0]
  first_tokens = tokenizer_fingerprint(first.tokenizer)
  first_shapes = jax.tree.map(lambda x: (x.shape, str(x.dtype)), first.params)
  for model in models[1:]:
    why = _config_difference(first.config, model.config)
    if why is None and model.module != first.module:
      why = f"module {model.module.dtype} vs {first.module.dtype}"
    if why is None and jax.tree.map(lambda x: (x.shape, str(x.dtype)), model.params) != first_shapes:
      why = "parameter shapes"
    if why is not None:
      raise StackError(f"{model.name}: architecture differs from {first.name} ({why}); "
                       f"models encoded together must share one architecture")
    tokens = tokenizer_fingerprint(model.tokenizer)
    if (tokens is None or first_tokens is None or tokens != first_tokens) and (
        model.tokenizer is not first.tokenizer):
      raise StackError(f"{model.name}: tokenizer differs from {first.name}'s"
                       + (" (not a fast tokenizer: cannot tell)" if None in (tokens, first_tokens)
                          else "") + "; models encoded together must share one tokenizer")


def _config_difference(a, b) -> str | None:
  """'hidden_size 64 vs 32' for the first field where config `b` differs from `a`."""
  if a == b:
    return None
  da, db = dataclasses.asdict(a), dataclasses.asdict(b)
  for key in da:
    if da[key] != db.get(key):
      return f"{key} {db.get(key)} vs {da[key]}"
  return "config"


def stack_params(params: Sequence, device) -> tuple:
  """(treedef, shared, stacked) of K parameter trees on `device`: a leaf equal in every
  tree is held once in `shared` (None in its place in `stacked`, e.g. the frozen
  embeddings of a population's members), the others stacked along a new leading axis in
  `stacked` (None in `shared`). At least one leaf is stacked."""
  leaves = [jax.tree.flatten(p) for p in params]
  treedef = leaves[0][1]
  columns = list(zip(*[jax.device_put(l, device) for l, _ in leaves]))
  equal = [[x is c[0] or jax.numpy.array_equal(x, c[0]) for x in c[1:]] for c in columns]
  same = [all(flags) for flags in jax.device_get(equal)]  # one transfer, not one per leaf
  if all(same):
    same[0] = False  # vmap needs one mapped input
  shared = [c[0] if s else None for c, s in zip(columns, same)]
  stacked = [None if s else jax.numpy.stack(c) for c, s in zip(columns, same)]
  return treedef, shared, stacked


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward_many(module, treedef, shared, stacked, input_ids, attention_mask):
  """`_forward` of each parameter set of `stack_params` on the same batch: [K, batch, hidden]."""
  def one(stacked_leaves):
    leaves = [s if s is not None else k for s, k in zip(shared, stacked_leaves)]
    return module.apply({"params": jax.tree.unflatten(treedef, leaves)}, input_ids,
                        attention_mask)
  axes = [None if s is not None else 0 for s in shared]
  return jax.vmap(one, in_axes=(axes,))(stacked)


def embed_many(models: Sequence, texts: Sequence[str], kind: str | None, batch_size: int = 64,
               max_length: int = 512, progress: bool = True,
               buckets: Sequence[int] | None = None, stats: Sequence[dict] | None = None,
               batch_tokens: int | None = None, ahead: bool | None = None,
               stacked: bool = True) -> list[np.ndarray]:
  """`embed` of the same texts by each of `models` (one architecture and tokenizer,
  `check_stackable`). Returns one [N, hidden] array per model; `stats`, if given, holds
  one dict per model.

  The texts are tokenised once per distinct prompt (once when the models share their
  prompts) into the batches `embed` makes. With `stacked`, each batch goes through every
  model's parameters in one forward pass (`jax.vmap` over a leading parameter axis; leaves
  equal in every model are held once): the vectors equal `embed`'s up to float round-off
  (XLA compiles the stacked matmuls as batched ones, which for some shapes sum in another
  order: on a CPU in float32 at most ~1e-7 apart). Without, the models run one after
  another through `embed`'s own forward pass on the same batches: bit-identical to `embed`.
  """
  check_stackable(models)
  batch_tokens = default_batch_tokens() if batch_tokens is None else batch_tokens
  _check_batch(batch_size, batch_tokens)
  groups = collections.defaultdict(list)  # prompt -> indices of the models using it
  for k, model in enumerate(models):
    groups[tokenization.add_prefix([""], kind, model.prompts)[0]].append(k)
  out = [None] * len(models)
  for members in groups.values():
    vectors = _embed_group([models[k] for k in members], texts, kind, batch_size, max_length,
                           progress, buckets,
                           None if stats is None else [stats[k] for k in members],
                           batch_tokens, ahead, stacked)
    for k, v in zip(members, vectors):
      out[k] = v
  return out


def _embed_group(models, texts, kind, batch_size, max_length, progress, buckets, stats,
                 batch_tokens, ahead, stacked) -> np.ndarray:
  """`embed_many` of models that share their prompt: [K, N, hidden]."""
  first = models[0]
  max_length = model_max_length(first, max_length)
  rows, cut = token_rows(first, texts, kind, max_length)  # once for every model
  for s in stats or ():
    s["texts"] = s.get("texts", 0) + len(rows)
    s["truncated"] = s.get("truncated", 0) + sum(cut)
  out = np.zeros((len(models), len(rows), first.config.hidden_size), np.float32)
  if not rows:
    return out
  device = jax.local_devices()[0]  # as `embed`
  plan = batch_plan(rows, max_length, batch_size, batch_tokens, buckets)
  shapes = [(n, pad_to) for _, n, pad_to in plan]
  ahead = jax.default_backend() != "cpu" if ahead is None else ahead
  pad_id = first.tokenizer.pad_token_id
  if not stacked:
    for k, model in enumerate(models):
      params = jax.device_put(model.params, device)
      if ahead:
        compile_ahead(model.module, params, shapes, device)
      forward = lambda ids, mask: _forward(model.module, params, ids, mask)
      _run_plan(rows, plan, forward, pad_id, out[k], kind, progress)  # out[k]: a view
    return out
  treedef, shared, mapped = stack_params([m.params for m in models], device)
  forward = lambda ids, mask: _forward_many(first.module, treedef, shared, mapped, ids, mask)
  if ahead:
    dtype = str(jax.tree_util.tree_leaves(first.params)[0].dtype)
    key = (first.module, treedef, tuple(s is None for s in shared), len(models), dtype, device.id)
    _compile_shapes(key, shapes, forward)
  return _run_plan(rows, plan, forward, pad_id, out, kind, progress)
