"""Two hosts (two processes) agree on every step's kind and split the global batch."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines import sampler
from mlir_train import models
from tests.conftest import REPO
from tests.training_data_helpers import make_config

pytestmark = [pytest.mark.data]

STEPS = 40

HOST = textwrap.dedent("""
  import itertools, json, sys
  import ml_collections, numpy as np
  from data_pipelines import sampler
  config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
  directory, index, count, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
  data = sampler.load_training_data(directory)
  batches = list(itertools.islice(
      sampler.batch_stream(data, config, process_index=index, process_count=count), %d))
  np.savez(out, step=[b.step for b in batches], kind=[b.kind.value for b in batches],
           languages=[b.languages for b in batches],
           **{f: np.stack([getattr(b, f) for b in batches])
              for f in ("query_ids", "passage_ids", "group_id", "query_language", "passage_language")})
""" % STEPS)


def test_two_hosts_agree_and_split_the_global_batch(tmp_path, data_dir):
  config = make_config(tmp_path / "shards", data_dir=str(data_dir), batch_size=32)
  tokenizer = models.tiny_random_model().tokenizer
  # Build the shards once here; each host loads them from the shard directory.
  data = sampler.build_training_data(config, tokenizer, progress=False)
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  hosts = [subprocess.Popen([sys.executable, "-c", HOST, json.dumps(config.to_dict()),
                             str(data.directory), str(i), "2",
                             str(tmp_path / f"host{i}.npz")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for h in hosts:
    output, _ = h.communicate(timeout=300)
    assert h.returncode == 0, output[-3000:]
  h0, h1 = (np.load(tmp_path / f"host{i}.npz") for i in range(2))
  # Both hosts agree on every step's kind and language.
  for key in ("step", "kind", "languages"):
    np.testing.assert_array_equal(h0[key], h1[key])
  assert set(h0["kind"]) == {"mono", "cross"}
  assert h0["group_id"].shape == (STEPS, 16)
  # Together they form this process's single-host global batch, in order.
  stream = sampler.batch_stream(data, config, process_count=1)
  for s in range(STEPS):
    whole = next(stream)
    assert whole.kind.value == h0["kind"][s]
    for field in ("query_ids", "passage_ids", "group_id", "query_language", "passage_language"):
      np.testing.assert_array_equal(np.concatenate([h0[field][s], h1[field][s]]), getattr(whole, field))
    # The slices are disjoint: no pair (group, query language, passage language) on both hosts.
    pairs = [set(zip(h["group_id"][s].tolist(), h["query_language"][s].tolist(),
                     h["passage_language"][s].tolist())) for h in (h0, h1)]
    assert not pairs[0] & pairs[1] and len(pairs[0]) == len(pairs[1]) == 16
