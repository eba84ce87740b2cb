"""Data parallelism: a 1-D ``("data",)`` mesh over every device, params replicated, batches
split on their first axis. The same code runs on 1 CPU, 8 GPUs or a TPU slice; several hosts
join through ``jax.distributed.initialize()`` (see ``initialize_distributed``)."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vae_jax.errors import ConfigError

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
        raise ConfigError(
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
                           process_id: Optional[int] = None, *, auto: bool = False,
                           timeout_s: int = 300) -> None:
    """Join a multi-process run through ``jax.distributed.initialize()``.

    No-op for a single process with nothing configured. ``auto=True`` with no arguments uses
    JAX's cluster auto-detection (Slurm, Open MPI, TPU pods, ...). Must run before any
    other JAX call. On CPU, cross-process collectives use gloo (JAX's default).

    A process that cannot reach all the others within ``timeout_s`` is aborted by JAX's
    coordination service (DEADLINE_EXCEEDED, not a Python exception), as is every process
    of a run in which one process dies; the line printed first says what to check.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not any(given) and not auto:
        return
    if any(given) and not all(given):
        raise ConfigError("Multi-process runs need all of --coordinator_address (host:port of "
                         "process 0), --num_processes and --process_id, or none of them "
                         "with --distributed for auto-detection.")
    if all(given) and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                         f"{num_processes}).")
    who = (f"process {process_id} of {num_processes} via coordinator {coordinator_address}"
           if all(given) else "a multi-process run (cluster auto-detection)")
    print(f"Joining {who}; waiting up to {timeout_s} s for every process. If this aborts "
          "with DEADLINE_EXCEEDED, start all processes with the same --coordinator_address "
          "and --num_processes and distinct --process_id, and check that process 0's host "
          "and port are reachable.", flush=True)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
