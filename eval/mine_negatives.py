r"""Mine hard negatives for training files with a retrieval model.

  python -m eval.mine_negatives --model e5-small \
      --train_files 'data/*.jsonl' --out mined.jsonl \
      [--window 10:100] [--per_pair 4] [--language same|any] [--corpus extra.jsonl]

Every usable record of the training files (`data_pipelines.train_files`: any
layout, bad records reported the same way) is written to `--out` as a native
JSON Lines record {"group", "query", "query_language", "positive",
"passage_language", "negatives"}, in input order, with `negatives` replaced by
the mined ones, so the file feeds `config.train_files` (with
`config.hard_negatives_per_pair`) directly.

How: the pool is every distinct positive text of the files (first appearance
order), plus the passages of `--corpus` (JSON Lines {"text", "language"};
duplicates of a pool text are merged). Queries and pool are embedded with
`encode.embed` and the model's prompts; `eval.search.top_k` ranks the pool for
each record's query (exact, ties by lower pool index, so the output is
deterministic). A record keeps the passages ranked `--window LO:HI` (1-based,
both ends included; the positive and its parallel passages count in the
ranking, as in evaluation) that are neither its positive nor a positive of its
own group in any language (a translation of the answer: a false negative),
the first `--per_pair` of them in rank order. Fewer is possible (a small pool,
a narrow window); the summary counts those records.

`--language`:
  same  (default) the ranking is over pool passages in the record's positive
        language. The right choice for X-X-mono batches: the trainer uses the
        negatives of (group, passage language b) for every pair whose positive
        is in b, so a MONO batch of language l stays all-l and language is no
        shortcut for telling a negative from the positive. Also sound for X-Y
        batches (the negatives share the positive's language).
  any   the ranking is over the whole multilingual pool. Meant for X-Y (cross)
        training: negatives in other languages (often the query's) push
        against preferring a language over the answer, as LAReQA's
        language-bias setting measures; in MONO batches they make the batch
        no longer monolingual.

Errors (bad window, unreadable corpus, no usable record, bad model) are one
`error: ...` line and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from data_pipelines.errors import ProjectError

LANGUAGE_CHOICES = ("same", "any")


class MiningError(ProjectError, ValueError):
  """Bad mining request: window, per_pair, language choice, corpus or output."""


def parse_window(text: str) -> tuple[int, int]:
  """"10:100" -> (10, 100): 1-based ranks, both included, 1 <= LO <= HI."""
  try:
    lo, hi = (int(x) for x in str(text).split(":"))
  except ValueError:
    raise MiningError(f"--window {text!r}: expected LO:HI, e.g. 10:100") from None
  if not 1 <= lo <= hi:
    raise MiningError(f"--window {text!r}: needs 1 <= LO <= HI (1-based ranks)")
  return lo, hi


@dataclasses.dataclass
class Pool:
  """The passages negatives are mined from."""
  texts: list[str]
  languages: list[str]
  groups: list[set[str]]      # groups whose positive this text is (empty: corpus only)


def build_pool(data, corpus: str | os.PathLike | None = None) -> Pool:
  """Distinct positives of `data` (a `train_files.TrainFiles`), then `corpus` passages."""
  from data_pipelines import train_files
  pool = Pool([], [], [])
  where: dict[str, int] = {}

  def add(text: str, language: str, group: str | None):
    i = where.get(text)
    if i is None:
      i = where[text] = len(pool.texts)
      pool.texts.append(text)
      pool.languages.append(language)
      pool.groups.append(set())
    if group is not None:
      pool.groups[i].add(group)

  for r in data.records:
    add(r.positive, r.passage_language, r.group)
  if corpus is not None:
    path = pathlib.Path(corpus)
    try:
      lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise MiningError(f"--corpus {path}: unreadable ({e})") from None
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise MiningError(f"--corpus {path} line {number}: malformed JSON ({e})") from None
      text = row.get("text", row.get("passage")) if isinstance(row, dict) else None
      language = row.get("language") if isinstance(row, dict) else None
      if not isinstance(text, str) or not text.strip():
        raise MiningError(f"--corpus {path} line {number}: needs a non-empty \"text\"")
      if not train_files.is_language_code(language):
        raise MiningError(f"--corpus {path} line {number}: needs a \"language\" code, "
                          f"got {language!r}")
      add(text, language, None)
  return pool


def select(ranked: Sequence[int], pool: Pool, positive: str, group: str, window: tuple[int, int],
           per_pair: int) -> list[str]:
  """The kept negatives of one record from its ranked pool indices (best first)."""
  lo, hi = window
  out = []
  for rank, i in enumerate(ranked, 1):
    if rank > hi or len(out) == per_pair:
      break
    if rank < lo or i < 0 or pool.texts[i] == positive or group in pool.groups[i]:
      continue
    out.append(pool.texts[i])
  return out


def mine(model, data, pool: Pool, *, window: tuple[int, int], per_pair: int,
         language: str = "same", batch_size: int = 64, max_length: int = 512,
         progress: bool = True) -> list[list[str]]:
  """Mined negatives of every record of `data` (in order); see the module docstring."""
  from eval import search
  from mlir_train import encode
  if language not in LANGUAGE_CHOICES:
    raise MiningError(f"--language {language!r}: must be one of {', '.join(LANGUAGE_CHOICES)}")
  if per_pair < 1:
    raise MiningError(f"--per_pair {per_pair}: must be >= 1")
  records = data.records
  queries = list(dict.fromkeys(r.query for r in records))
  query_row = {q: i for i, q in enumerate(queries)}
  q_emb = encode.embed(model, queries, "query", batch_size=batch_size, max_length=max_length,
                       progress=progress)
  p_emb = encode.embed(model, pool.texts, "passage", batch_size=batch_size,
                       max_length=max_length, progress=progress)
  pool_languages = np.array(pool.languages)
  if language == "any":
    subsets = {None: np.arange(len(pool.texts))}
  else:
    subsets = {l: np.flatnonzero(pool_languages == l)
               for l in sorted({r.passage_language for r in records})}
  out: list[list[str]] = [[] for _ in records]
  for key, members in subsets.items():
    which = [i for i, r in enumerate(records) if key is None or r.passage_language == key]
    if not which or not len(members):
      continue
    k = min(window[1], len(members))
    _, ranked = search.top_k(q_emb[[query_row[records[i].query] for i in which]],
                             p_emb[members], k)
    for i, row in zip(which, ranked):
      r = records[i]
      out[i] = select(members[row].tolist(), pool, r.positive, r.group, window, per_pair)
  return out


def native_record(r, negatives: list[str]) -> dict:
  return {"group": r.group, "query": r.query, "query_language": r.query_language,
          "positive": r.positive, "passage_language": r.passage_language,
          "negatives": negatives}


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
  """Atomically (a kill or a full disk never leaves half a file: `files.WriteError`)."""
  from data_pipelines import files
  files.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def check_out_is_no_input(out: pathlib.Path, train_files_spec: str, corpus=None) -> None:
  """`MiningError` when `--out` is one of the inputs (a training file, a file of a datasets
  directory, the corpus): writing it would overwrite the user's data."""
  from data_pipelines import train_files
  from data_pipelines.errors import DataError
  target = out.resolve()
  try:
    named = [("--train_files", path) for path in train_files.expand(train_files_spec)]
  except DataError:
    named = []  # read_train_files names the problem
  named += [("--corpus", pathlib.Path(corpus))] if corpus else []
  for flag, path in named:
    path = path.resolve()
    if target == path or path in target.parents:
      raise MiningError(f"--out {out} is an input ({flag} {path}): writing there would "
                        f"overwrite your data; choose another --out path")


def run(model_name: str, train_files_spec: str, out, *, window: str = "10:100",
        per_pair: int = 4, language: str = "same", corpus=None, strict: bool = False,
        batch_size: int = 64, max_length: int = 512, progress: bool = True) -> dict:
  """Read, mine, write `out`; returns the summary (also what `main` prints)."""
  from data_pipelines import train_files
  from mlir_train import config_validation, models
  bounds = parse_window(window)
  if language not in LANGUAGE_CHOICES:
    raise MiningError(f"--language {language!r}: must be one of {', '.join(LANGUAGE_CHOICES)}")
  if per_pair < 1:
    raise MiningError(f"--per_pair {per_pair}: must be >= 1")
  out = pathlib.Path(out)
  check_out_is_no_input(out, train_files_spec, corpus)
  try:
    config_validation.check_writable(out.parent, "--out directory")
  except config_validation.ConfigError as e:
    raise MiningError(str(e)) from None
  data = train_files.read_train_files(train_files_spec, strict=strict)
  if data.issues and progress:
    print(train_files.report_issues(data.issues), file=sys.stderr)
  if not data.records:
    raise MiningError(f"--train_files {train_files_spec!r}: no usable record "
                      f"({data.issues.num_dropped} dropped)")
  pool = build_pool(data, corpus)
  model = models.load_model(model_name)
  negatives = mine(model, data, pool, window=bounds, per_pair=per_pair, language=language,
                   batch_size=batch_size, max_length=max_length, progress=progress)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_jsonl(out, [native_record(r, n) for r, n in zip(data.records, negatives)])
  counts = np.array([len(n) for n in negatives])
  return {"out": str(out), "records": len(data.records), "dropped": data.issues.num_dropped,
          "pool": len(pool.texts), "window": list(bounds), "per_pair": per_pair,
          "language": language, "negatives": int(counts.sum()),
          "records_with_fewer": int((counts < per_pair).sum())}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Mine hard negatives for training files (JSON Lines out, for "
                  "config.train_files with config.hard_negatives_per_pair).",
      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="e5-small, tiny-random, an HF dir or a workdir")
  parser.add_argument("--train_files", required=True,
                      help="comma-separated paths or globs (JSONL, Parquet, datasets dirs)")
  parser.add_argument("--out", required=True, help="output JSON Lines file")
  parser.add_argument("--window", default="10:100", help="kept ranks LO:HI, 1-based (10:100)")
  parser.add_argument("--per_pair", type=int, default=4, help="negatives kept per record (4)")
  parser.add_argument("--language", default="same", choices=LANGUAGE_CHOICES,
                      help="same: the positive's language only; any: every language")
  parser.add_argument("--corpus", default=None,
                      help="extra passages, JSON Lines {\"text\", \"language\"}")
  parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--max_length", type=int, default=512)
  args = parser.parse_args(argv)
  try:
    summary = run(args.model, args.train_files, args.out, window=args.window,
                  per_pair=args.per_pair, language=args.language, corpus=args.corpus,
                  strict=args.strict, batch_size=args.batch_size, max_length=args.max_length,
                  progress=sys.stderr.isatty())
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
