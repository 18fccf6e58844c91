r"""Slow check: a few hundred steps of the default config lower the training loss
and do not lower XQuAD-R English mono mAP.

  python perf/default_training_check.py --workdir /tmp/default_check [--steps 300]

Trains configs/default.py (fold A: MLQA-R pairs, hybrid alpha 0.5, e5-small,
frozen embeddings) for --steps steps, then compares
  * the mean training loss over the first and last 10% of logged steps, and
  * XQuAD-R en mono mAP of e5-small before and of the trained model after
    (XQuAD-R is not in fold A's training data).
Writes DIR/check.json and exits non-zero if either check fails. Takes tens of
minutes on a CPU; tests/test_train.py::test_default_training_check runs it
under `pytest -m slow`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np


def mono_map(model, language="en") -> float:
  from eval import run
  result = run.evaluate(model, "xquad_r", languages=[language], progress=False)
  return float(result["settings"]["mono"]["per_language"][language]["map"])


def check(workdir: pathlib.Path, steps: int, tolerance: float = 0.005) -> dict:
  from configs import default
  from mlir_train import models, train

  config = default.get_config()
  config.total_steps = steps
  config.warmup_steps = max(1, steps // 10)
  summary = train.train(config, workdir)
  losses = [json.loads(l)["loss"] for l in (workdir / train.METRICS_FILE).read_text().splitlines()]
  window = max(1, len(losses) // 10)
  loss_first, loss_last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
  map_before = mono_map(models.load_model(config.model))
  map_after = mono_map(models.load_model(workdir))
  report = {"steps": steps, "summary": summary, "loss_first": loss_first,
            "loss_last": loss_last, "xquad_r_en_mono_map_before": map_before,
            "xquad_r_en_mono_map_after": map_after, "tolerance": tolerance,
            "loss_lowered": loss_last < loss_first,
            "map_not_lowered": map_after >= map_before - tolerance}
  (workdir / "check.json").write_text(json.dumps(report, indent=2) + "\n")
  return report


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", type=pathlib.Path, required=True)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--tolerance", type=float, default=0.005,
                      help="mAP may drop by at most this much (evaluation noise)")
  args = parser.parse_args()
  report = check(args.workdir, args.steps, args.tolerance)
  print(json.dumps({k: v for k, v in report.items() if k != "summary"}, indent=2))
  if not (report["loss_lowered"] and report["map_not_lowered"]):
    sys.exit("check failed")


if __name__ == "__main__":
  main()
