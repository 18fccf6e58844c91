"""A population over two processes (jax.distributed on loopback, CPU collectives) trains
like the same population in one process: each process holds 2 CPU devices and its half of
every member's batch; the single process holds 4 devices (the test_multihost pattern).
It hung before members were sliced in one jitted call (`population.member_taker`): eager
indexing of a global array is dispatched op by op on each process."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from mlir_train import models, train
from tests.test_multihost import free_port

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import jax
root, port, process, processes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if processes > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=processes, process_id=process)
from configs import tiny
from mlir_train import population
configs = []
for seed in (0, 1):
  c = tiny.get_config()  # synthetic batches, batch 16
  c.total_steps, c.warmup_steps, c.checkpoint_every_steps, c.seed = 4, 1, 2, seed
  configs.append(c)
summaries = population.train_population(configs, [f"{root}/m0", f"{root}/m1"])
if jax.process_index() == 0:
  print(json.dumps([s["population"]["mesh"] for s in summaries]))
"""


def run(root, processes: int):
  port = free_port()
  devices = 4 // processes
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(root), str(port), str(i),
                             str(processes)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(processes)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return json.loads(outputs[0][0].strip().splitlines()[-1])


def test_two_processes_train_the_population_like_one(tmp_path):
  meshes = run(tmp_path / "multi", 2)
  assert meshes[0] == {"data": 2, "runs": 2, "fsdp": 1}  # each member on one device per process
  run(tmp_path / "single", 1)
  for k in range(2):
    multi, single = tmp_path / "multi" / f"m{k}", tmp_path / "single" / f"m{k}"
    lines = lambda d, f: [json.loads(l) for l in (d / f).read_text().splitlines()]
    assert lines(multi, train.BATCHES_FILE) == lines(single, train.BATCHES_FILE)
    for a, b in zip(lines(multi, train.METRICS_FILE), lines(single, train.METRICS_FILE),
                    strict=True):
      np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
                 jax.device_get(models.load_model(multi).params),
                 jax.device_get(models.load_model(single).params))
