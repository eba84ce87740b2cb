"""Data parallelism: a 1-D ``("data",)`` mesh over every device, params replicated, batches
split on their first axis. The same code runs on 1 CPU, 8 GPUs or a TPU slice; several hosts
join through ``jax.distributed.initialize()`` (see ``initialize_distributed``)."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Split axis 0 over the ``data`` axis (use for [B, ...] batches)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.train.batch_size") -> None:
    """A global batch must split evenly over the devices."""
    n = mesh.size
    if batch_size <= 0 or batch_size % n:
        lower = max(n, batch_size // n * n)
        raise ValueError(
            f"{what}={batch_size} does not divide evenly over the {n} devices of the data "
            f"mesh. Use a multiple of {n} (e.g. {lower} or {lower + n}), or run on fewer "
            "devices (CUDA_VISIBLE_DEVICES / --xla_force_host_platform_device_count).")


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def put_global(array: np.ndarray, mesh: Mesh, sharding: NamedSharding) -> jax.Array:
    """Place a host array that every process holds in full onto ``sharding``."""
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
    """Join a multi-process run (no-op for a single process with nothing configured)."""
    if coordinator_address is None and num_processes is None and process_id is None:
        return
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
