"""perf/_machine.py: the rival's OpenBLAS kernel check (faiss-cpu's OpenBLAS 0.3.15 ran
its generic Prescott kernels on a virtualized Xeon it did not recognize, 5x slower)."""
import json
import pathlib
import subprocess
import sys
import types

import pytest

pytestmark = [pytest.mark.fast]

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "perf"))

import _machine  # noqa: E402


@pytest.mark.parametrize("arch,flags,user,want", [
    ("Prescott", {"avx512f", "avx2"}, None, {"OPENBLAS_CORETYPE": "SkylakeX"}),
    ("Prescott", {"avx2"}, None, {"OPENBLAS_CORETYPE": "Haswell"}),
    ("Prescott", {"sse3"}, None, {}),                      # nothing better to offer
    ("Prescott", {"avx512f"}, "Haswell", {}),              # the user's choice stands
    ("SkylakeX", {"avx512f"}, None, {}),                   # recognized: left alone
    ("Haswell", {"avx512f"}, None, {}),
])
def test_generic_openblas_kernels_get_the_cpus_core_type(monkeypatch, arch, flags, user, want):
  libs = [["/x/libscipy_openblas.so", "SkylakeX"], ["/y/libopenblaso-0.3.15.so", arch]]
  seen = {}

  def fake_run(cmd, **kw):
    seen["code"] = cmd[-1]
    return types.SimpleNamespace(returncode=0, stdout=json.dumps(libs) + "\n")

  monkeypatch.setattr(subprocess, "run", fake_run)
  monkeypatch.setattr(_machine, "cpu_flags", lambda: flags)
  if user:
    monkeypatch.setenv("OPENBLAS_CORETYPE", user)
  else:
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
  env, found = _machine.openblas_env("import faiss")
  assert env == want
  assert found == [("libscipy_openblas.so", "SkylakeX"), ("libopenblaso-0.3.15.so", arch)]
  assert seen["code"].startswith("import faiss\n")


def test_real_lookup_names_the_loaded_openblas():
  """numpy's own OpenBLAS, looked up in a fresh process, is reported with an architecture."""
  env, found = _machine.openblas_env("import numpy; numpy.ones(2) @ numpy.ones(2)")
  assert found and all(name.endswith((".so", ".dylib", ".dll")) or ".so." in name
                       for name, _ in found)
  assert all(arch for _, arch in found)
  assert set(env) <= {"OPENBLAS_CORETYPE"}
