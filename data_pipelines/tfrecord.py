"""TFRecord files of tf.train.Example protos, read and written without TensorFlow.

The training shards (`shards.py`) are TFRecord files; this module lets a
machine without TensorFlow build and load them. Framing of one record:

    uint64 length (little endian)
    uint32 masked crc32c of the 8 length bytes
    byte   data[length]
    uint32 masked crc32c of data

masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32). CRC32C
(Castagnoli) is computed with numpy, many records at once (one vectorised
table step per byte position), so checking a shard costs about as much as
reading it.

tf.train.Example, the subset used here (protobuf wire format):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   # entries: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    Int64List { repeated int64 value = 1 [packed]; }

`parse_int64_examples` walks each record's message structure in Python and
decodes all varint payloads of one feature in one vectorised numpy pass.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable, Mapping, Sequence

import numpy as np

from configs import value as config_value
from data_pipelines.errors import DataError

_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
  return table


_TABLE = _crc32c_table()


def crc32c_many(messages: Sequence[bytes], chunk: int = 8192) -> np.ndarray:
  """CRC32C of every message; uint32 [len(messages)]."""
  out = np.empty(len(messages), np.uint32)
  for lo in range(0, len(messages), chunk):
    part = messages[lo:lo + chunk]
    lengths = np.fromiter((len(m) for m in part), np.int64, len(part))
    order = np.argsort(-lengths, kind="stable")          # longest first: active = a prefix
    lengths = lengths[order]
    width = int(lengths[0]) if len(part) else 0
    padded = np.zeros((len(part), width), np.uint8)
    for row, i in enumerate(order):
      padded[row, :lengths[row]] = np.frombuffer(part[i], np.uint8)
    state = np.full(len(part), 0xFFFFFFFF, np.uint32)
    active = len(part)
    for col in range(width):
      while active and lengths[active - 1] <= col:
        active -= 1
      s = state[:active]
      state[:active] = _TABLE[(s ^ padded[:active, col]) & 0xFF] ^ (s >> 8)
    out[lo + order] = state ^ np.uint32(0xFFFFFFFF)
  return out


def masked_crc32c_many(messages: Sequence[bytes]) -> np.ndarray:
  crc = crc32c_many(messages).astype(np.uint64)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA).astype(np.uint64) & 0xFFFFFFFF


def write_records(path, records: Sequence[bytes]) -> None:
  """Write `records` as one TFRecord file (no compression)."""
  lengths = [struct.pack("<Q", len(r)) for r in records]
  length_crc = masked_crc32c_many(lengths)
  data_crc = masked_crc32c_many(records)
  with open(path, "wb") as f:
    for r, l, lc, dc in zip(records, lengths, length_crc, data_crc):
      f.write(l)
      f.write(struct.pack("<I", int(lc)))
      f.write(r)
      f.write(struct.pack("<I", int(dc)))


def read_records(path, verify: bool = True) -> list[bytes]:
  """The records of one uncompressed TFRecord file; corrupt framing raises DataError."""
  with open(path, "rb") as f:
    buf = f.read()
  records, length_bytes, want_lc, want_dc = [], [], [], []
  pos, end = 0, len(buf)
  while pos < end:
    if pos + 12 > end:
      raise DataError(f"{path}: truncated record header at byte {pos}")
    header = buf[pos:pos + 8]
    (n,) = struct.unpack_from("<Q", buf, pos)
    (lc,) = struct.unpack_from("<I", buf, pos + 8)
    if pos + 12 + n + 4 > end:
      raise DataError(f"{path}: record at byte {pos} claims {n} bytes, past the end of the file")
    records.append(buf[pos + 12:pos + 12 + n])
    (dc,) = struct.unpack_from("<I", buf, pos + 12 + n)
    length_bytes.append(header)
    want_lc.append(lc)
    want_dc.append(dc)
    pos += 12 + n + 4
  if verify and records:
    bad = np.flatnonzero((masked_crc32c_many(length_bytes) != np.asarray(want_lc, np.uint64))
                         | (masked_crc32c_many(records) != np.asarray(want_dc, np.uint64)))
    if len(bad):
      raise DataError(f"{path}: record {int(bad[0])} fails its crc32c check "
                      f"({len(bad)} bad records)")
  return records


# -- protobuf -----------------------------------------------------------------


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1                     # negative int64: two's complement, 10 bytes
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _packed_varints(values) -> bytes:
  values = np.asarray(values, np.int64)
  if len(values) and values.min() >= 0 and values.max() < 128:
    return values.astype(np.uint8).tobytes()
  return b"".join(_varint(int(v)) for v in values)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited field
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(int64_features: Mapping[str, Iterable[int]],
                   bytes_features: Mapping[str, Sequence[bytes]] = {}) -> bytes:
  """A serialised tf.train.Example (int64 lists packed, as TensorFlow writes them)."""
  entries = []
  for key, values in int64_features.items():
    feature = _field(3, _field(1, _packed_varints(values)))
    entries.append(_field(1, _field(1, key.encode()) + _field(2, feature)))
  for key, values in bytes_features.items():
    feature = _field(1, b"".join(_field(1, v) for v in values))
    entries.append(_field(1, _field(1, key.encode()) + _field(2, feature)))
  return _field(1, b"".join(entries))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7


def _fields(buf: bytes, start: int, end: int):
  """(field number, wire type, value or (payload start, payload end)) of one message."""
  pos = start
  while pos < end:
    tag, pos = _read_varint(buf, pos)
    number, wire = tag >> 3, tag & 7
    if wire == 0:
      value, pos = _read_varint(buf, pos)
      yield number, wire, value
    elif wire == 2:
      n, pos = _read_varint(buf, pos)
      yield number, wire, (pos, pos + n)
      pos += n
    elif wire == 1:
      yield number, wire, None
      pos += 8
    elif wire == 5:
      yield number, wire, None
      pos += 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
  if pos != end:
    raise ValueError("message overruns its length")


def _decode_varints(buf: np.ndarray) -> np.ndarray:
  """All varints of a concatenated byte array, vectorised; int64."""
  if not len(buf):
    return np.zeros(0, np.int64)
  if buf[-1] >= 0x80:
    raise ValueError("truncated varint")
  ends = np.flatnonzero(buf < 0x80)
  starts = np.r_[0, ends[:-1] + 1]
  position = np.arange(len(buf)) - np.repeat(starts, ends - starts + 1)
  if position.max() > 9:
    raise ValueError("varint longer than 10 bytes")
  parts = (buf.astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * position.astype(np.uint64))
  return np.add.reduceat(parts, starts).view(np.int64)


def parse_int64_examples(records: Sequence[bytes], lengths: Mapping[str, int],
                         where: str = "") -> dict[str, np.ndarray]:
  """Fixed-length int64 features of serialised Examples: key -> int64 [n, length].

  A length of 0 means a scalar feature (int64 [n]). A record that lacks a key
  or has the wrong number of values raises DataError naming `where` and the
  record index. Other features (bytes lists, ...) are skipped.
  """
  payloads = {k: [] for k in lengths}
  for index, record in enumerate(records):
    seen = set()
    try:
      for number, wire, span in _fields(record, 0, len(record)):
        if number != 1 or wire != 2:
          continue                                            # Example.features
        for entry_number, entry_wire, entry in _fields(record, *span):
          if entry_number != 1 or entry_wire != 2:
            continue                                          # Features.feature entry
          key, value = None, None
          for f_number, f_wire, f_span in _fields(record, *entry):
            if f_number == 1 and f_wire == 2:
              key = record[f_span[0]:f_span[1]].decode()
            elif f_number == 2 and f_wire == 2:
              value = f_span
          if key not in payloads or value is None:
            continue
          chunks = []
          for kind, kind_wire, list_span in _fields(record, *value):
            if kind != 3 or kind_wire != 2:
              raise ValueError(f"feature {key!r} is not an int64_list")
            for v_number, v_wire, v in _fields(record, *list_span):
              if v_number != 1:
                continue
              if v_wire == 2:                                 # packed
                chunks.append(record[v[0]:v[1]])
              elif v_wire == 0:                               # unpacked: re-encode
                chunks.append(_varint(v))
          payloads[key].append(b"".join(chunks))
          seen.add(key)
    except (ValueError, IndexError) as e:
      raise DataError(f"{where}: record {index} is not a valid tf.train.Example: {e}") from None
    if len(seen) != len(payloads):
      raise DataError(f"{where}: record {index} lacks features {sorted(set(payloads) - seen)}")
  out = {}
  for key, length in lengths.items():
    chunks = payloads[key]
    buf = np.frombuffer(b"".join(chunks), np.uint8)
    try:
      values = _decode_varints(buf)
    except ValueError as e:
      raise DataError(f"{where}: feature {key!r}: {e}") from None
    # Values per record: count the varint terminators inside each record's bytes.
    sizes = np.fromiter((len(c) for c in chunks), np.int64, len(chunks))
    bounds = np.r_[0, np.cumsum(sizes)]
    terminators = np.r_[0, np.cumsum(buf < 0x80)]
    counts = terminators[bounds[1:]] - terminators[bounds[:-1]]
    want = max(length, 1)
    bad = np.flatnonzero(counts != want)
    if len(bad):
      raise DataError(f"{where}: record {int(bad[0])}: feature {key!r} has "
                      f"{int(counts[bad[0]])} values, expected {want}")
    out[key] = values.reshape(len(chunks), length) if length else values
  return out


# ----------------------------------------------------------------------------
# Which pipeline reads the shards: tf.data when TensorFlow is there, else this module
# ----------------------------------------------------------------------------
INPUT_PIPELINES = ("auto", "tf", "numpy")


def _tensorflow_available() -> bool:
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    return False
  return True


def input_pipeline(config=None, requested: str | None = None) -> str:
  """"tf" or "numpy": `requested`, else config.input_pipeline, else $MLIR_INPUT_PIPELINE.

  "auto" (the default) is tf.data when TensorFlow is installed, else the
  numpy iterator; both yield the same batches. "tf" without TensorFlow raises.
  """
  choice = (requested or (config_value(config, "input_pipeline") if config is not None else None)
            or os.environ.get("MLIR_INPUT_PIPELINE") or "auto").lower()
  if choice not in INPUT_PIPELINES:
    raise ValueError(f"input pipeline must be one of {INPUT_PIPELINES}, got {choice!r} "
                     "(config.input_pipeline or $MLIR_INPUT_PIPELINE)")
  if choice == "auto":
    return "tf" if _tensorflow_available() else "numpy"
  if choice == "tf" and not _tensorflow_available():
    raise ImportError("input pipeline 'tf' needs tensorflow (pip install tensorflow-cpu); "
                      "'numpy' yields the same batches without it")
  return choice
