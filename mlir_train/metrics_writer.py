"""Training curves for TensorBoard, beside metrics.jsonl.

`open_tensorboard(workdir, start_step)` returns a writer of TensorBoard event
files under `<workdir>/tensorboard/` (tensorboardX: protobuf only, no
TensorFlow), or None when tensorboardX is not installed (logged once; the
run goes on with metrics.jsonl only). The trainer calls `write(record)` with
each metrics.jsonl record, on the chief process only:

    tensorboard --logdir WORKDIR/tensorboard

Tags (`scalar_tags`): every numeric field of a record except "step", under
"train/" (loss, accuracy, learning_rate, grad_norm, examples_per_sec = the
throughput, skipped_nonfinite, l2sp_penalty, ...); fields named "val_X" or
"validation_X" go to "validation/X" (e.g. val_loss -> validation/loss), and a
record with "split": "validation" puts all its fields there. Text fields
(batch kind, languages) and dicts are not scalars and are skipped.

On resume from a checkpoint at step s, the new event file starts with a purge
marker at step s + 1 (tensorboardX `purge_step`), so TensorBoard drops the
points of the earlier run past the checkpoint, as `train.truncate_metrics` does
for metrics.jsonl.
"""
from __future__ import annotations

import logging
import numbers
import os
import pathlib
from typing import Any, Mapping

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
_VALIDATION_PREFIXES = ("validation_", "val_")


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
  """{tag: value} for the numeric fields of one metrics record (see the module docstring)."""
  split = str(record.get("split", "train"))
  out = {}
  for key, value in record.items():
    if key in ("step", "split") or isinstance(value, bool) or \
        not isinstance(value, numbers.Real):
      continue
    tag = f"{split}/{key}"
    for prefix in _VALIDATION_PREFIXES:
      if key.startswith(prefix):
        tag = f"validation/{key[len(prefix):]}"
        break
    out[tag] = float(value)
  return out


class TensorBoardWriter:
  """Scalars of metrics records -> event files in `logdir` (tensorboardX)."""

  def __init__(self, logdir: str | os.PathLike, start_step: int = 0):
    from tensorboardX import SummaryWriter
    self.logdir = pathlib.Path(logdir)
    # purge_step: TensorBoard discards earlier events at steps >= it (a resumed run redoes them).
    self._writer = SummaryWriter(str(self.logdir), purge_step=start_step + 1 if start_step else None,
                                 flush_secs=30)

  def write(self, record: Mapping[str, Any]) -> None:
    """Write the scalars of `record` at `record["step"]` (an int)."""
    step = int(record["step"])
    for tag, value in scalar_tags(record).items():
      self._writer.add_scalar(tag, value, step)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def open_tensorboard(workdir: str | os.PathLike, start_step: int = 0) -> TensorBoardWriter | None:
  """A `TensorBoardWriter` on `<workdir>/tensorboard`, or None without tensorboardX."""
  try:
    import tensorboardX  # noqa: F401
  except ImportError:
    log.warning("tensorboardX is not installed: no TensorBoard curves (metrics.jsonl only); "
                "pip install tensorboardX")
    return None
  return TensorBoardWriter(pathlib.Path(workdir) / TENSORBOARD_DIR, start_step)
