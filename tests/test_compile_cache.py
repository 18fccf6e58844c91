"""The persistent compilation cache: a second process loads what the first compiled.

Truth: jax's own monitoring events (`/jax/compilation_cache/cache_hits`,
`/jax/core/compile/backend_compile_duration`) and the files in the cache
directory, observed in two fresh subprocesses.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from mlir_train import compile_cache

REPO = pathlib.Path(__file__).resolve().parents[1]

# Prints totals at exit: compile-or-load events and seconds (jax records
# backend_compile_duration around compile_or_get_cached, hits included), cache
# hits, seconds spent reading the cache.
PROBE = """
import atexit, json, sys
import jax, jax.monitoring as monitoring
totals = {"compiles": 0, "compile_s": 0.0, "hits": 0, "retrieval_s": 0.0}
def on_duration(event, duration, **kw):
  if event == "/jax/core/compile/backend_compile_duration":
    totals["compiles"] += 1; totals["compile_s"] += duration
  elif event == "/jax/compilation_cache/cache_retrieval_time_sec":
    totals["retrieval_s"] += duration
def on_event(event, **kw):
  if event == "/jax/compilation_cache/cache_hits":
    totals["hits"] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
atexit.register(lambda: print("TOTALS " + json.dumps(totals), flush=True))
"""

JIT = """
from mlir_train import compile_cache
import jax.numpy as jnp
print("DIR", compile_cache.enable())
@jax.jit
def f(x):
  for _ in range(20):
    x = jnp.tanh(x @ x.T) + 1.0
  return x.sum()
print("VALUE", float(f(jnp.ones((32, 32)) / 32)))
"""


def _run(code: str, env: dict, args=()) -> tuple[dict, str]:
  proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("TOTALS ")][-1]
  return json.loads(line[len("TOTALS "):]), proc.stdout


def _env(tmp_path, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  # one CPU device, as on a laptop: with several the cache stays off (see the last test)
  env.update({"MLIR_TRAIN_CACHE": str(tmp_path / "cache"), "MLIR_COMPILE_CACHE_MIN_SECS": "0",
              "MLIR_COMPILATION_CACHE": "1", "JAX_PLATFORMS": "cpu",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **extra})
  return env


def _entries(directory: pathlib.Path) -> dict:
  return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_second_process_hits_the_cache(tmp_path):
  env = _env(tmp_path)
  first, out1 = _run(PROBE + textwrap.dedent(JIT), env)
  directory = tmp_path / "cache" / "jax_cache"
  assert f"DIR {directory}" in out1
  entries = _entries(directory)
  assert first["hits"] == 0 and first["compiles"] >= 1
  assert any(name.startswith("jit_f-") for name in entries), entries
  second, out2 = _run(PROBE + textwrap.dedent(JIT), env)
  # backend_compile_duration covers compile-or-load: every one of them a hit now.
  assert second["hits"] >= 1 and second["compiles"] == second["hits"], second
  assert _entries(directory) == entries           # nothing new written, nothing rewritten
  value = lambda out: [l for l in out.splitlines() if l.startswith("VALUE")]
  assert value(out1) == value(out2) and len(value(out1)) == 1


def test_switched_off(tmp_path, monkeypatch):
  monkeypatch.setenv("MLIR_COMPILATION_CACHE", "0")
  assert compile_cache.enable(tmp_path) is None
  assert not any(tmp_path.iterdir())
  env = _env(tmp_path, MLIR_COMPILATION_CACHE="0")
  _, out = _run(PROBE + textwrap.dedent(JIT), env)
  assert "DIR None" in out and not (tmp_path / "cache" / "jax_cache").exists()


TRAIN = """
sys.argv = ["train", "--config", "configs/tiny.py", "--workdir", sys.argv[1],
            "--config.total_steps=2", *sys.argv[2:]]
from absl import app
from mlir_train import train
train._define_flags()
app.run(train.main)
"""


@pytest.mark.slow  # test_study_runs_share_compiled_programs asserts more (every program hits)
def test_tiny_training_compiles_once(tmp_path):
  """train.main enables the cache: the second run of the tiny config compiles (almost) nothing."""
  env = _env(tmp_path)
  first, _ = _run(PROBE + textwrap.dedent(TRAIN), env, [str(tmp_path / "run1")])
  second, _ = _run(PROBE + textwrap.dedent(TRAIN), env, [str(tmp_path / "run2")])
  print(f"\ntiny training: first run {first['compiles']} compilations, {first['compile_s']:.2f} s; "
        f"second run {second['compiles']} compile-or-load, {second['hits']} from the cache, "
        f"{second['compile_s']:.2f} s (of which {second['retrieval_s']:.2f} s reading)")
  assert first["hits"] == 0 and first["compiles"] > 0
  assert second["hits"] >= first["compiles"] // 2
  assert second["compile_s"] < 0.5 * first["compile_s"]


def test_study_runs_share_compiled_programs(tmp_path):
  """A study's runs differ in seed and batch kind only: the second strategy and seed load
  every program the first compiled (a seed or alpha baked into a program would miss)."""
  env = _env(tmp_path)
  run = lambda workdir, *flags: _run(PROBE + textwrap.dedent(TRAIN), env,
                                     [str(tmp_path / workdir), *flags])[0]
  first = run("mono0", "--config.seed=0", "--config.sampling=mono", "--config.alpha=1.0")
  second = run("hybrid1", "--config.seed=1", "--config.sampling=hybrid", "--config.alpha=0.5")
  assert first["hits"] == 0 and first["compiles"] > 0
  assert second["hits"] == second["compiles"] == first["compiles"], (first, second)


def test_thresholds_apply_when_jax_env_names_the_directory(tmp_path, monkeypatch):
  """$JAX_COMPILATION_CACHE_DIR picks the directory, not the thresholds: with jax's own 1 s
  minimum most programs a CPU compiles (0.02-0.9 s each) were never written."""
  import jax
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("MLIR_COMPILE_CACHE_MIN_SECS", "0.25")
  monkeypatch.delenv("MLIR_COMPILATION_CACHE", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "")  # this process has 8 fake CPU devices
  names = ("jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
  before = {n: getattr(jax.config, n) for n in names}
  try:
    assert compile_cache.enable() == tmp_path
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.25
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == 0
  finally:
    for n, v in before.items():
      jax.config.update(n, v)


def test_off_for_several_cpu_devices(tmp_path, monkeypatch):
  """8 fake CPU devices (this process): cache-loaded executables with in-process CPU
  collectives sometimes deadlock in their rendezvous and abort, so the cache stays off."""
  import jax
  monkeypatch.delenv("MLIR_COMPILATION_CACHE", raising=False)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert jax.default_backend() == "cpu" and jax.device_count() == 8
  assert compile_cache.local_cpu_devices() == 8
  before = jax.config.jax_enable_compilation_cache
  try:
    assert compile_cache.enable(tmp_path / "cache") is None
    assert jax.config.jax_enable_compilation_cache is False
    assert not (tmp_path / "cache").exists()
  finally:
    jax.config.update("jax_enable_compilation_cache", before)
