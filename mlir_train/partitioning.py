"""Mesh, sharding rules and global arrays (global-array jit, no pmap).

The mesh has two axes: "data" (pure data parallelism) and "fsdp" (data
parallelism whose devices also split the parameters and optimizer state,
big_vision's fsdp rule); a population of runs adds a third, "runs". The batch
is split over "data" and "fsdp", so every device holds a slice of the global batch; the similarity matrix over the global batch
is still one matmul and XLA inserts the collectives.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from data_pipelines.errors import ProjectError

BATCH_AXES = ("data", "fsdp")


class MeshError(ProjectError, ValueError):
  """The requested mesh does not fit the available devices."""


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ("data", "fsdp") mesh over all devices (-1 = whatever is left).

  Devices are taken in `jax.devices()` order, which groups each process's
  devices together, so a process's rows of the global batch are contiguous.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp == -1 and data == -1:
    raise MeshError("at most one of data, fsdp may be -1")
  if fsdp == -1:
    fsdp = n // data
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise MeshError(f"mesh data={data} x fsdp={fsdp} does not use the {n} devices")
  return Mesh(np.array(devices).reshape(data, fsdp), ("data", "fsdp"))


def make_population_mesh(runs: int, fsdp: int = 1, devices=None) -> Mesh:
  """A ("data", "runs", "fsdp") mesh for a population (`mlir_train.population`): its
  members spread over `runs` device groups, each member's batch over that group's
  "data" x "fsdp" devices. "data" is outermost, so a process's devices (contiguous in
  `jax.devices()`) hold every member's rows of its slice of the batch, as in `make_mesh`.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if runs < 1 or n % (runs * fsdp):
    raise MeshError(f"mesh runs={runs} x fsdp={fsdp} does not divide the {n} devices")
  return Mesh(np.array(devices).reshape(n // (runs * fsdp), runs, fsdp), ("data", "runs", "fsdp"))


def runs_axis_size(members: int, global_batch_size: int, fsdp: int = 1,
                   device_count: int | None = None) -> int:
  """The largest "runs" axis for `members` runs on the devices: it divides the members
  and the devices, and leaves each member a batch its devices divide (1 if none does)."""
  n = jax.device_count() if device_count is None else device_count
  for runs in range(min(members, n // fsdp), 0, -1):
    per_member = n // runs
    if (members % runs == 0 and n % (runs * fsdp) == 0
        and global_batch_size % per_member == 0):
      return runs
  return 1


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2 ** 14) -> P:
  """Shard the largest dimension divisible by `fsdp_size` on "fsdp".

  Small arrays (fewer than `min_size` elements: biases, LayerNorm) and arrays
  with no divisible dimension are replicated.
  """
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in np.argsort(shape)[::-1]:
    if shape[axis] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = 2 ** 14) -> Any:
  """NamedSharding for every array leaf of a params / optimizer-state pytree.

  The rule depends only on a leaf's shape, so Adam's moments get exactly their
  parameter's sharding ("optimizer state follows params"); scalars replicate.
  """
  fsdp_size = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, fsdp_spec(tuple(np.shape(x)), fsdp_size, min_size)), tree)


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy slices [host_batch, ...] -> global arrays [global_batch, ...].

  Process i's slice becomes rows [i * host_batch, (i + 1) * host_batch).
  """
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in local.items():
    value = np.asarray(value)
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
  """The batch splits over the mesh's batch devices (a population mesh: one member's)."""
  devices = mesh.size // mesh.shape.get("runs", 1)
  if global_batch_size % devices:
    raise MeshError(f"global batch {global_batch_size} is not divisible by the "
                    f"{devices} devices of the mesh {dict(mesh.shape)} that hold one "
                    f"run's batch")
