"""The encoder of c542f9c (when results/encode_throughput.md was measured on host v595) against
today's, same StableHLO checked, forward timed alternately in one process.
Run from the repository root: python benchmarks/results/host_v657/same_program_ab.py [LENGTH]"""
import sys, time, os, importlib.util, re, subprocess, tempfile
sys.path.insert(0, os.getcwd())
OLD = os.path.join(tempfile.mkdtemp(), "encoder_old.py")
open(OLD, "w").write(subprocess.run(["git", "show", "c542f9c:mlir_train/encoder.py"],
                                    capture_output=True, text=True, check=True).stdout)
import jax, jax.numpy as jnp, numpy as np
from mlir_train import encoder as new
spec = importlib.util.spec_from_file_location("enc_old", OLD); old = importlib.util.module_from_spec(spec); sys.modules["enc_old"] = old; spec.loader.exec_module(old)
cfg = new.EncoderConfig()
L = int(sys.argv[1]) if len(sys.argv) > 1 else 32
ids = jnp.asarray(np.random.default_rng(0).integers(5, 1000, (32, L)), jnp.int32); mask = jnp.ones((32, L), jnp.int32)
params = new.init_params(cfg) if hasattr(new, "init_params") else None
fns = {}
for name, mod in (("old", old), ("new", new)):
  m = mod.Encoder(mod.EncoderConfig())
  fns[name] = jax.jit(lambda p, i, a, m=m: m.apply({"params": p}, i, a))
p = params["params"] if "params" in params else params
hl = {k: re.sub(r"metadata=\{[^}]*\}", "", f.lower(p, ids, mask).as_text()) for k, f in fns.items()}
print("same StableHLO:", hl["old"] == hl["new"])
for f in fns.values(): f(p, ids, mask).block_until_ready()
t = {k: [] for k in fns}
for r in range(5):
  for k, f in fns.items():
    s = time.perf_counter(); f(p, ids, mask).block_until_ready(); t[k].append(time.perf_counter() - s)
print({k: round(min(v) * 1000, 1) for k, v in t.items()}, "ms per batch of 32 x", L)
