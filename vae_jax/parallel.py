"""Data parallelism: a 1-D ``("data",)`` mesh over every device, params replicated, batches
split on their first axis. The same code runs on 1 CPU, 8 GPUs or a TPU slice; several hosts
join through ``jax.distributed.initialize()`` (see ``initialize_distributed``).
``per_example`` maps a compiled batch function over a data set, batches split over the
mesh (the evaluation's figures and the active units' means). ``between_calls`` runs the
checks a run installs (``check_between_calls``: a stop signal) between such device calls."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vae_jax.errors import ConfigError
from vae_jax.progress import Progress

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


# ------------------------------------------------------------- checks between device calls

_CHECKS: list[Callable[[], None]] = []


@contextlib.contextmanager
def check_between_calls(check: Callable[[], None]) -> Iterator[None]:
    """While active, ``between_calls()`` runs ``check``, which raises to stop the work
    (``runtime.StopSignal.check`` after SIGTERM / SIGINT). The loops that call
    ``between_calls`` then keep at most one device call queued behind the running one, so
    that a stop waits for the call in flight, not for every call already dispatched."""
    _CHECKS.append(check)
    try:
        yield
    finally:
        _CHECKS.remove(check)


def checking() -> bool:
    """Whether a check is installed (the loops then wait for each call in turn)."""
    return bool(_CHECKS)


def between_calls() -> None:
    """Run the installed checks (a no-op when none is)."""
    for check in tuple(_CHECKS):
        check()


# ------------------------------------------------------------- a data set, batch by batch

PROGRESS_MIN_BATCHES = 20


def _pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    pad = (-len(images)) % multiple
    if pad:
        images = np.concatenate([images, np.repeat(images[:1], pad, axis=0)], axis=0)
    return images


def per_example(fn: Callable, params, images: np.ndarray, key: jax.Array, *,
                batch_size: int, mesh: Optional[Mesh] = None,
                progress: Optional[bool] = None) -> dict[str, np.ndarray]:
    """Apply a jitted ``fn(params, x_uint8 [b, H, W, C], key) -> {name: [b]}`` to every image.

    Batches are sharded over ``mesh``'s data axis; batch i gets ``fold_in(key, i)``, so the
    result does not depend on the device count. Returns {name: np.ndarray [N]} in order.
    ``progress``: report batches done (see ``vae_jax.progress``); None = only for long
    streams (>= PROGRESS_MIN_BATCHES batches, e.g. log p(x) with k = 5000). Between
    batches it runs ``between_calls`` (with a check installed, one batch queued at most).
    """
    mesh = mesh or data_mesh()
    check_batch_size(batch_size, mesh, "evaluation batch size")
    n = len(images)
    padded = _pad_to_multiple(np.asarray(images), batch_size)
    sharding = batch_sharded(mesh)
    outs = []
    num_batches = len(padded) // batch_size
    if progress is None:
        progress = num_batches >= PROGRESS_MIN_BATCHES
    bar = Progress(num_batches, unit="batch", quiet=None if progress else True)
    for i in range(num_batches):
        batch = put_global(padded[i * batch_size:(i + 1) * batch_size], mesh, sharding)
        outs.append(fn(params, batch, jax.random.fold_in(key, i)))
        if progress:  # wait for the batch, so the report counts finished work
            jax.block_until_ready(outs[-1])
            bar.update(i + 1)
        elif i and checking():  # the one before: this one runs next, nothing more queued
            jax.block_until_ready(outs[-2])
        between_calls()
    return jax.tree.map(lambda *xs: np.concatenate([_to_host(x) for x in xs])[:n], *outs)


def _to_host(x: jax.Array) -> np.ndarray:
    """A batch-sharded result as one host array; multi-process, gathered from every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
