"""Two processes on loopback (jax.distributed, CPU collectives) train like one process.

Each process holds 2 CPU devices and its half of the global batch; the single
process holds 4 devices and the whole batch. Same global batch, same result.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import flax
import numpy as np

from mlir_train import models, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def command(workdir, *extra):
  return [sys.executable, "-m", "mlir_train.train", "--config", str(REPO / "configs/tiny.py"),
          "--workdir", str(workdir), "--config.total_steps=4",
          "--config.checkpoint_every_steps=4", *extra]


def env(devices: int):
  e = dict(os.environ, JAX_PLATFORMS="cpu",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return e


def losses(workdir):
  lines = (workdir / train.METRICS_FILE).read_text().splitlines()
  return [json.loads(l)["loss"] for l in lines]


def test_two_processes_match_one(tmp_path):
  single = subprocess.run(command(tmp_path / "single"), cwd=REPO, env=env(4),
                          capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]

  port = free_port()
  procs = [subprocess.Popen(
      command(tmp_path / "multi", f"--coordinator_address=127.0.0.1:{port}",
              "--num_processes=2", f"--process_id={i}"),
      cwd=REPO, env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  summary = json.loads(outputs[0][0][outputs[0][0].index("{"):])
  assert summary["final_step"] == 4
  assert "final_step" not in outputs[1][0]  # only process 0 reports ...
  assert len(losses(tmp_path / "multi")) == 4  # ... and writes metrics, once per step

  np.testing.assert_allclose(losses(tmp_path / "multi"), losses(tmp_path / "single"), rtol=1e-5)
  a = models.restore_for_inference(tmp_path / "single").params
  b = models.restore_for_inference(tmp_path / "multi").params
  # Attention key biases have an exactly-zero gradient (softmax ignores a per-query
  # constant), so Adam turns float noise into lr-sized steps there: leave them out.
  flat_a = flax.traverse_util.flatten_dict(a, sep="/")
  flat_b = flax.traverse_util.flatten_dict(b, sep="/")
  compared = [k for k in flat_a if not k.endswith("attention_self/key/bias")]
  assert len(compared) == len(flat_a) - 2  # 2 layers
  for k in compared:
    np.testing.assert_allclose(flat_b[k], flat_a[k], rtol=1e-4, atol=1e-6, err_msg=k)
