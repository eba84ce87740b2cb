"""Which input pipeline a run uses, and why: ``"device"`` (the training set split over the
devices, batches gathered there: ``sharded``) when its share per device fits a memory
budget, ``"stream"`` (batches read on the host and prefetched: ``stream``) otherwise.
``config.data.pipeline`` forces either; ``config.data.device_budget_mb`` sets the budget."""

from __future__ import annotations

from typing import Optional

import jax

from vae_jax.data.sharded import padded_rows

PIPELINES = ("auto", "device", "stream")

# The CPU backend's "device memory" is host memory, shared with everything else the process
# holds; accelerators get a quarter of what the device reports, the rest left to the model.
CPU_BUDGET_MB = 4096
ACCELERATOR_BUDGET_FRACTION = 0.25
UNKNOWN_BUDGET_MB = 2048  # an accelerator that reports no memory limit


def default_budget_mb(device: Optional[jax.Device] = None) -> tuple[float, str]:
    """(MB of training set one device may hold, where that figure comes from)."""
    device = jax.local_devices()[0] if device is None else device
    if device.platform == "cpu":
        return float(CPU_BUDGET_MB), "the CPU default"
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # backends without memory_stats
        limit = None
    if not limit:
        return float(UNKNOWN_BUDGET_MB), f"the default for a {device.platform} device"
    return (ACCELERATOR_BUDGET_FRACTION * limit / 2**20,
            f"{ACCELERATOR_BUDGET_FRACTION:.0%} of the {limit / 2**30:.1f} GiB of a "
            f"{device.platform} device")


def choose(requested: str, num_rows: int, row_bytes: int, num_devices: int,
           budget_mb: float = 0, device: Optional[jax.Device] = None) -> tuple[str, str]:
    """("device" | "stream", the reason in one sentence) for a training set of
    ``num_rows`` rows of ``row_bytes`` bytes split over ``num_devices`` devices.
    ``budget_mb`` 0: ``default_budget_mb``."""
    per_device = padded_rows(num_rows, num_devices) // num_devices * row_bytes / 2**20
    if budget_mb:
        source = "config.data.device_budget_mb"
    else:
        budget_mb, source = default_budget_mb(device)
    size = (f"the training set takes {per_device:.1f} MB per device ({num_rows} images "
            f"over {num_devices} device{'s' if num_devices > 1 else ''})")
    if requested != "auto":
        return requested, f"config.data.pipeline={requested!r} ({size})"
    if per_device <= budget_mb:
        return "device", f"{size}, within the {budget_mb:.0f} MB budget ({source})"
    return "stream", f"{size}, over the {budget_mb:.0f} MB budget ({source})"
