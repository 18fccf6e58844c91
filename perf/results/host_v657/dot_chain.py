"""In-process A/B: e5-small's forward against chains of its dense dots alone (PROFILE section 18).

  python benchmarks/results/host_v657/dot_chain.py   # quiet machine: load < 0.3 before

Batch 32 x 128 tokens (M = 4,096 rows). Variants: the encoder's forward; the 12 layers'
six dense dots with the residual adds only (chain); the same with q, k, v forced one after
another (chain_seq, optimization barriers); the FFN dots only (ffn_only; ffn_same: one
layer's weights every time); and lone dots of each shape, repeated. Interleaved, best of 5.
"""
import os, pathlib, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
import numpy as np, jax, jax.numpy as jnp
B, T = 32, 128
M, D, F, L = B * T, 384, 1536, 12
rng = np.random.default_rng(0)
W = [dict(q=rng.normal(0, .02, (D, D)), k=rng.normal(0, .02, (D, D)), v=rng.normal(0, .02, (D, D)),
          o=rng.normal(0, .02, (D, D)), i=rng.normal(0, .02, (D, F)), out=rng.normal(0, .02, (F, D)))
     for _ in range(L)]
W = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), W)
x0 = jnp.asarray(rng.normal(0, 1, (M, D)), jnp.float32)
ob = jax.lax.optimization_barrier

def chain(W, x):
  for w in W:
    q, k, v = x @ w["q"], x @ w["k"], x @ w["v"]
    x = x + (q + k + v) @ w["o"]
    x = x + (x @ w["i"]) @ w["out"]
  return x

def chain_seq(W, x):
  for w in W:
    q = x @ w["q"]
    x, q = ob((x, q))
    k = x @ w["k"]
    x, q, k = ob((x, q, k))
    v = x @ w["v"]
    x = x + (q + k + v) @ w["o"]
    x = x + (x @ w["i"]) @ w["out"]
  return x

def ffn_only(W, x):
  for w in W:
    x = x + (x @ w["i"]) @ w["out"]
  return x

def ffn_same(W, x):
  w = W[0]
  for _ in W:
    x = x + (x @ w["i"]) @ w["out"]
  return x

def lone(a, b): return a @ b
from mlir_train import models
model = models.load_model("e5-small")
ids = rng.integers(5, 1000, (B, T)).astype(np.int32); mask = np.ones_like(ids)
print("load before", open("/proc/loadavg").read().split()[:3])
fns = {
  "model": (jax.jit(lambda p, i, a: model.module.apply({"params": p}, i, a)), (model.params, ids, mask)),
  "chain": (jax.jit(chain), (W, x0)),
  "chain_seq": (jax.jit(chain_seq), (W, x0)),
  "ffn_only": (jax.jit(ffn_only), (W, x0)),
  "ffn_same": (jax.jit(ffn_same), (W, x0)),
  "lone_i": (jax.jit(lone), (x0, W[0]["i"])),
  "lone_out": (jax.jit(lone), (jnp.ones((M, F)), W[0]["out"])),
  "lone_q": (jax.jit(lone), (x0, W[0]["q"])),
}
fl = {"model": 2*M*(4*D*D+2*D*F)*L, "chain": 2*M*(4*D*D+2*D*F)*L, "chain_seq": 2*M*(4*D*D+2*D*F)*L, "ffn_only": 2*M*2*D*F*L, "ffn_same": 2*M*2*D*F*L,
      "lone_i": 2*M*D*F, "lone_out": 2*M*D*F, "lone_q": 2*M*D*D}
for n, (f, a) in fns.items(): jax.block_until_ready(f(*a))
res = {n: [] for n in fns}
for r in range(5):
  for n, (f, a) in fns.items():
    reps = 12 if n.startswith("lone") else 1
    t = time.perf_counter()
    for _ in range(reps): jax.block_until_ready(f(*a))
    res[n].append((time.perf_counter() - t) / reps)
for n, ts in res.items():
  print(f"{n:12s} best {min(ts)*1e3:8.1f} ms  med {sorted(ts)[2]*1e3:8.1f}  dense rate {fl[n]/min(ts)/1e9:6.1f} GFLOP/s")
print("load after", open("/proc/loadavg").read().split()[:3])
