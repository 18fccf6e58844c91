"""Reading a training shard: `data_pipelines.tfrecord` vs grain (TFRecord, ArrayRecord) vs tf.data.

  python perf/tfrecord_readers.py --records 20000              # project venv: ours, tf.data
  /tmp/libs-venv/bin/python perf/tfrecord_readers.py --records 20000   # ours, grain, ArrayRecord

A decision aid for ARCHITECTURE.md "Hand-written pieces and why", not a benchmark
campaign. One shard of `--records` synthetic pairs shaped like the default training
shards (query_ids / query_mask [32], passage_ids / passage_mask [96], group_id, qid;
token ids below 250,002, e5-small's vocabulary) is written by `tfrecord.write_records`
(the bytes TensorFlow writes: tests/test_numpy_pipeline.py). Each reader turns the file
into the int64 feature arrays `shards.load_pair_table` needs; best of `--repeats`,
records/s. Readers whose library is not installed in this interpreter are skipped:

- ours: `tfrecord.read_records` (crc32c checked) + `parse_int64_examples`; and without
  the crc check.
- grain TFRecord: `grain.experimental.TFRecordIterDataset` (framing only: grain 0.2.18
  checks no crc32c) + our Example parser (grain parses nothing), and + protobuf's
  parser (a tf.train.Example descriptor built here, since its .proto ships with
  TensorFlow only).
- ArrayRecord: the shard converted once (conversion time and file size reported; rows
  stored as raw int32 bytes, the best case for it), read through grain's
  `ArrayRecordDataSource` and `np.frombuffer`.
- tf.data: what the project uses when TensorFlow is installed (`shards._read_shard`).

Every reader's arrays are checked equal to the source arrays. Records the load average
before and after; on a shared machine the figures are indicative only.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipelines import tfrecord  # noqa: E402
from perf import _machine  # noqa: E402

LQ, LP, VOCAB = 32, 96, 250_002
LENGTHS = {"query_ids": LQ, "query_mask": LQ, "passage_ids": LP, "passage_mask": LP,
           "group_id": 0}


def _arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  out = {"group_id": np.arange(n, dtype=np.int64)}
  for kind, length in (("query", LQ), ("passage", LP)):
    used = rng.integers(4, length + 1, n)
    mask = (np.arange(length)[None, :] < used[:, None]).astype(np.int64)
    out[f"{kind}_ids"] = np.where(mask, rng.integers(5, VOCAB, (n, length)), 1)
    out[f"{kind}_mask"] = mask
  return out


def _records(arrays) -> list[bytes]:
  n = len(arrays["group_id"])
  return [tfrecord.encode_example({k: arrays[k][i] if LENGTHS[k] else [arrays[k][i]]
                                   for k in LENGTHS}, {"qid": [f"q{i}".encode()]})
          for i in range(n)]


def _best(fn, repeats: int):
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return min(times), out


def _check(got: dict, want: dict, name: str) -> None:
  for k in LENGTHS:
    np.testing.assert_array_equal(np.asarray(got[k]).reshape(want[k].shape), want[k],
                                  err_msg=f"{name}: {k}")


def _example_class():
  """tf.train.Example as a protobuf message class, without TensorFlow."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  f = descriptor_pb2.FileDescriptorProto(name="bench_example.proto", package="bench",
                                         syntax="proto3")
  T = descriptor_pb2.FieldDescriptorProto

  def message(name, *fields):
    m = f.message_type.add(name=name)
    for number, (field, kind, type_name, label) in enumerate(fields, start=1):
      added = m.field.add(name=field, number=number, type=kind, label=label)
      if type_name:
        added.type_name = type_name
    return m
  rep, opt = T.LABEL_REPEATED, T.LABEL_OPTIONAL
  message("BytesList", ("value", T.TYPE_BYTES, None, rep))
  message("FloatList", ("value", T.TYPE_FLOAT, None, rep))
  message("Int64List", ("value", T.TYPE_INT64, None, rep))
  feature = message("Feature", ("bytes_list", T.TYPE_MESSAGE, ".bench.BytesList", opt),
                    ("float_list", T.TYPE_MESSAGE, ".bench.FloatList", opt),
                    ("int64_list", T.TYPE_MESSAGE, ".bench.Int64List", opt))
  feature.oneof_decl.add(name="kind")
  for field in feature.field:
    field.oneof_index = 0
  features = message("Features", ("feature", T.TYPE_MESSAGE, ".bench.Features.FeatureEntry", rep))
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=opt)
  entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, type_name=".bench.Feature",
                  label=opt)
  message("Example", ("features", T.TYPE_MESSAGE, ".bench.Features", opt))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Example"))


def _protobuf_parse(records) -> dict[str, np.ndarray]:
  example = _example_class()()
  columns = {k: [] for k in LENGTHS}
  for r in records:
    example.ParseFromString(r)
    feature = example.features.feature
    for k in LENGTHS:
      columns[k].append(feature[k].int64_list.value)
  return {k: np.array(v, np.int64) for k, v in columns.items()}


def measure(n: int, repeats: int, workdir: pathlib.Path) -> list[dict]:
  want = _arrays(n)
  path = workdir / "shard.tfrecord"
  tfrecord.write_records(path, _records(want))
  rows = []

  def row(name, seconds, got, **extra):
    _check(got, want, name)
    rows.append({"reader": name, "seconds": round(seconds, 4),
                 "records_per_s": round(n / seconds), **extra})
    print(json.dumps(rows[-1]), flush=True)

  size = path.stat().st_size
  s, got = _best(lambda: tfrecord.parse_int64_examples(tfrecord.read_records(path), LENGTHS),
                 repeats)
  row("ours (crc32c checked)", s, got, file_bytes=size)
  s, got = _best(lambda: tfrecord.parse_int64_examples(tfrecord.read_records(path, verify=False),
                                                       LENGTHS), repeats)
  row("ours (no crc32c check)", s, got, file_bytes=size)
  s, _ = _best(lambda: tfrecord.read_records(path), repeats)
  rows.append({"reader": "ours: framing + crc32c only", "seconds": round(s, 4),
               "records_per_s": round(n / s)})
  print(json.dumps(rows[-1]), flush=True)

  try:
    import grain
    from grain import experimental as grain_experimental
  except ImportError:
    grain = None
  if grain is not None:
    read = lambda: list(grain_experimental.TFRecordIterDataset(str(path)))
    s, records = _best(read, repeats)
    rows.append({"reader": "grain TFRecordIterDataset: framing only (no crc32c)",
                 "seconds": round(s, 4), "records_per_s": round(n / s)})
    print(json.dumps(rows[-1]), flush=True)
    s, got = _best(lambda: tfrecord.parse_int64_examples(read(), LENGTHS), repeats)
    row("grain TFRecord + our Example parser", s, got)
    s, got = _best(lambda: _protobuf_parse(read()), repeats)
    row("grain TFRecord + protobuf Example parser", s, got)

  try:
    from array_record.python import array_record_module
  except ImportError:
    array_record_module = None
  if grain is not None and array_record_module is not None:
    ar_path = workdir / "shard.array_record"

    def convert():
      table = tfrecord.parse_int64_examples(tfrecord.read_records(path), LENGTHS)
      flat = np.concatenate([table[k].reshape(n, -1) for k in LENGTHS], axis=1).astype(np.int32)
      writer = array_record_module.ArrayRecordWriter(str(ar_path), "group_size:1")
      for r in flat:
        writer.write(r.tobytes())
      writer.close()
    convert_s, _ = _best(convert, 1)
    widths = [max(l, 1) for l in LENGTHS.values()]

    def read_ar():
      source = grain.sources.ArrayRecordDataSource([str(ar_path)])
      flat = np.frombuffer(b"".join(source.__getitems__(range(len(source)))), np.int32)
      flat = flat.reshape(n, sum(widths))
      parts = np.split(flat, np.cumsum(widths)[:-1], axis=1)
      return {k: p.astype(np.int64) for k, p in zip(LENGTHS, parts)}
    s, got = _best(read_ar, repeats)
    row("grain ArrayRecordDataSource (converted shard, raw int32 rows)", s, got,
        file_bytes=ar_path.stat().st_size, conversion_s=round(convert_s, 3))

  try:
    import tensorflow  # noqa: F401
  except ImportError:
    tensorflow = None
  if tensorflow is not None:
    from data_pipelines import shards

    def read_tf():
      chunks = list(shards._read_shard(path, LENGTHS, use_tensorflow=True))
      return {k: np.concatenate([c[k] for c in chunks]) for k in LENGTHS}
    read_tf()                                              # graph tracing, once
    s, got = _best(read_tf, repeats)
    row("tf.data TFRecordDataset + parse_example", s, got)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--records", type=int, default=20_000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--force", action="store_true", help="run on a busy machine (dry run)")
  args = parser.parse_args(argv)
  guard = _machine.LoadGuard(force=args.force)
  with tempfile.TemporaryDirectory() as tmp:
    rows = measure(args.records, args.repeats, pathlib.Path(tmp))
  meta = guard.finish()
  meta.update({"python": sys.executable, "records": args.records, "repeats": args.repeats})
  print(json.dumps(meta))
  if guard.may_write:
    out = REPO / "perf" / "out"
    out.mkdir(exist_ok=True)
    name = "tfrecord_readers_" + ("tf" if any("tf.data" in r["reader"] for r in rows) else "grain")
    (out / f"{name}.json").write_text(json.dumps({"rows": rows, "meta": meta}, indent=1))


if __name__ == "__main__":
  main()
