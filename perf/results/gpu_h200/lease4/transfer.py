"""Host -> GPU transfer of search-sized corpus chunks: pageable numpy against pinned host
buffers, jax and torch, one process (PROFILE.md section 19).

  python benchmarks/results/gpu_h200/lease4/transfer.py [--rows 1048576] [--chunk 65536]

The corpus ([rows, 384] float32) is sent in host chunks as `eval.search` streams it. For
each way, GB/s over the whole corpus, best of `--repeats`, and the wait pattern: `sync`
blocks on each chunk, `async` dispatches all and blocks once. `stage` is the host copy into
pinned memory that a pageable corpus needs first.
"""
import argparse
import json
import time

import jax
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--rows", type=int, default=1 << 20)
p.add_argument("--chunk", type=int, default=65536)
p.add_argument("--repeats", type=int, default=5)
args = p.parse_args()

dev = jax.devices()[0]
x = np.random.default_rng(0).random((args.rows, 384), dtype=np.float32)
chunks = [x[i:i + args.chunk] for i in range(0, args.rows, args.chunk)]
gb = x.nbytes / 1e9
kinds = [m.kind for m in dev.addressable_memories()]
on_device = jax.sharding.SingleDeviceSharding(dev, memory_kind="device") if "device" in kinds else dev
print(json.dumps({"device": str(dev.device_kind), "platform": dev.platform, "jax": jax.__version__,
                  "memory_kinds": kinds, "corpus_GB": round(gb, 3), "chunks": len(chunks)}))


def timed(name, fn):
  fn()  # warm-up
  best = min(_once(fn) for _ in range(args.repeats))
  print(f"{name:34s} {best * 1e3:8.1f} ms  {gb / best:6.1f} GB/s", flush=True)


def _once(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def sync(src, to):
  for c in src:
    jax.device_put(c, to).block_until_ready()


def asynchronous(src, to):
  out = [jax.device_put(c, to) for c in src]
  jax.block_until_ready(out)


timed("jax pageable -> device, sync", lambda: sync(chunks, on_device))
timed("jax pageable -> device, async", lambda: asynchronous(chunks, on_device))
if "pinned_host" in kinds:
  pinned = jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host")
  timed("jax stage: pageable -> pinned host", lambda: sync(chunks, pinned))
  held = [jax.device_put(c, pinned) for c in chunks]
  jax.block_until_ready(held)
  timed("jax pinned -> device, sync", lambda: sync(held, on_device))
  timed("jax pinned -> device, async", lambda: asynchronous(held, on_device))
  del held
try:
  import torch
  if torch.cuda.is_available():
    tc = [torch.from_numpy(c) for c in chunks]

    def torch_copy(src, non_blocking):
      out = [t.to("cuda", non_blocking=non_blocking) for t in src]
      torch.cuda.synchronize()
      return out

    timed("torch pageable -> device", lambda: torch_copy(tc, False))
    tp = [t.pin_memory() for t in tc]
    timed("torch pinned -> device, non_blocking", lambda: torch_copy(tp, True))
    timed("torch stage: pin_memory()", lambda: [t.pin_memory() for t in tc])
except ImportError:
  print("torch: not installed")


# How many transfers in flight: one host chunk at a time split into `n` device_puts
# (joined on the device), and `ahead` whole chunks dispatched before the first is waited on.
def split(src, to, n):
  for c in src:
    parts = [jax.device_put(p, to) for p in np.array_split(c, n)]
    jax.block_until_ready(jax.numpy.concatenate(parts))


def window(src, to, ahead):
  inflight = []
  for c in src:
    inflight.append(jax.device_put(c, to))
    if len(inflight) > ahead:
      inflight.pop(0).block_until_ready()
  jax.block_until_ready(inflight)


for n in (2, 4, 8):
  timed(f"jax pageable, each chunk in {n} puts", lambda: split(chunks, on_device, n))
for ahead in (1, 2, 4):
  timed(f"jax pageable, {ahead} chunk(s) ahead", lambda: window(chunks, on_device, ahead))
