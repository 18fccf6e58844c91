"""What `data_pipelines/tfrecord.py` is kept for (ARCHITECTURE.md, "Hand-written pieces
and why"): the shards load with numpy alone, and every record's two crc32c are checked.

No TensorFlow needed (tests/test_numpy_pipeline.py checks the format against TensorFlow's
own writer and parser where it is installed). Truths: arrays made here, the framing
spelled out byte by byte, and the CRC-32C check value.
"""
import json
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import pytest

from data_pipelines import tfrecord
from data_pipelines.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.fast]

# The libraries a library-based reader would need: TensorFlow / TFDS (tf.data), protobuf
# (tf.train.Example), grain and array_record. None of them may be imported.
NUMPY_ONLY = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "google.protobuf", "grain", "array_record"):
  sys.modules[name] = None                 # `import name` now raises ImportError
import json, pathlib
import numpy as np
from data_pipelines import shards, tfrecord
assert tfrecord.input_pipeline() == "numpy"
rng = np.random.default_rng(0)
lq, lp, languages = 4, 6, ["de", "en"]
root = pathlib.Path(WORK)
truth, manifest_shards, group = {}, [], 0
for a in languages:
  for b in languages:
    n = 3
    cols = {"query_ids": rng.integers(0, 250_002, (n, lq)), "query_mask": rng.integers(0, 2, (n, lq)),
            "passage_ids": rng.integers(0, 250_002, (n, lp)),
            "passage_mask": rng.integers(0, 2, (n, lp)), "group_id": np.arange(n)}
    truth[f"{a}-{b}"] = cols
    tfrecord.write_records(root / f"{a}-{b}.tfrecord", [tfrecord.encode_example(
        {k: v[i] if v.ndim == 2 else [v[i]] for k, v in cols.items()},
        {"qid": [f"q{i}".encode()]}) for i in range(n)])
    manifest_shards.append({"query_language": a, "passage_language": b,
                            "file": f"{a}-{b}.tfrecord", "count": n})
(root / "manifest.json").write_text(json.dumps({
    "config": {"max_query_len": lq, "max_passage_len": lp}, "languages": languages,
    "num_groups": 3, "shards": manifest_shards}))
table = shards.load_pair_table(root)
for key, cols in truth.items():
  rows = table.shard_rows[tuple(key.split("-"))]
  for field, want in cols.items():
    np.testing.assert_array_equal(getattr(table, field)[rows], want, err_msg=f"{key} {field}")
loaded = sorted(m for m in sys.modules if sys.modules[m] is not None
                and m.split(".")[0] in ("tensorflow", "grain", "array_record", "google"))
print("RESULT " + json.dumps({"rows": len(table.group_id), "loaded": loaded}))
"""


def test_shards_load_with_numpy_alone(tmp_path):
  code = f"WORK = {str(tmp_path)!r}\n" + textwrap.dedent(NUMPY_ONLY)
  env = dict(os.environ)
  env.pop("MLIR_INPUT_PIPELINE", None)
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  assert json.loads(line[len("RESULT "):]) == {"rows": 12, "loaded": []}


def _frame(data: bytes, length_crc: int | None = None, data_crc: int | None = None) -> bytes:
  """One TFRecord frame, by the format's definition (masked CRC-32C)."""
  length = struct.pack("<Q", len(data))
  lc, dc = tfrecord.masked_crc32c_many([length, data])
  return (length + struct.pack("<I", int(lc) if length_crc is None else length_crc) + data
          + struct.pack("<I", int(dc) if data_crc is None else data_crc))


def test_both_crc32c_of_every_record_are_checked(tmp_path):
  # The masked CRC-32C of the check string "123456789": crc 0xE3069283 masked by hand.
  crc = 0xE3069283
  assert int(tfrecord.masked_crc32c_many([b"123456789"])[0]) == (
      (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
  path = tmp_path / "x.tfrecord"
  records = [b"first", b"second", b"third"]
  path.write_bytes(b"".join(_frame(r) for r in records))
  assert tfrecord.read_records(path) == records
  good = _frame(b"second")
  (lc,) = struct.unpack_from("<I", good, 8)
  (dc,) = struct.unpack_from("<I", good, len(good) - 4)
  for broken in (_frame(b"second", length_crc=lc ^ 1), _frame(b"second", data_crc=dc ^ 1)):
    path.write_bytes(_frame(b"first") + broken + _frame(b"third"))
    with pytest.raises(DataError, match=r"x\.tfrecord: record 1 fails its crc32c check \(1 bad"):
      tfrecord.read_records(path)
    assert tfrecord.read_records(path, verify=False) == records    # framing itself intact
