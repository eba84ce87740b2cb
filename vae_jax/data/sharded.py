"""The training set split over the ``data`` axis: each device holds 1/n of the rows
(``put_sharded``) and every step gathers its global batch from the shards
(``gather_sharded``) with one reduce-scatter, so no device ever holds the whole set.

Layout: the rows are padded with zeros to ``padded_rows(N, n)`` = n·⌈N/n⌉ and split on
axis 0, device d holding rows [d·S, (d+1)·S) with S = ⌈N/n⌉. The epoch's permutation only
draws indices < N, so the padding is never seen by a step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vae_jax.errors import DataError
from vae_jax.parallel import DATA_AXIS


def padded_rows(num_rows: int, num_shards: int) -> int:
    """n·⌈N/n⌉: the rows of the sharded training set, padding included."""
    return -(-num_rows // num_shards) * num_shards


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split over the ``data`` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def process_rows(num_rows: int, mesh: Mesh, process_index: int | None = None
                 ) -> tuple[int, int]:
    """[start, stop) of the real (unpadded) rows whose shards live on ``process_index``'s
    devices (default: this process). A DataError when that range is empty: the process
    would train on padding only."""
    p = jax.process_index() if process_index is None else process_index
    shard = padded_rows(num_rows, mesh.size) // mesh.size
    ids = sorted(i for i, d in enumerate(mesh.devices.flat) if d.process_index == p)
    if ids != list(range(ids[0], ids[-1] + 1)):
        raise DataError(f"process {p}'s devices are not contiguous in the data mesh "
                        f"(positions {ids}); build the mesh with parallel.data_mesh().")
    start, stop = ids[0] * shard, min(num_rows, (ids[-1] + 1) * shard)
    if stop <= start:
        raise DataError(
            f"The training set's {num_rows} rows split over {mesh.size} devices as "
            f"{shard} per device leave process {p} (devices {ids[0]}..{ids[-1]}) no rows: "
            "its shard is empty. Use more training images (at least "
            f"{(mesh.size - 1) * shard + 1}) or fewer devices/processes.")
    return start, stop


def put_sharded(images: np.ndarray, mesh: Mesh, *, num_rows: int | None = None,
                row_offset: int = 0) -> jax.Array:
    """Place the training set on ``mesh``, split on axis 0 (``row_sharding``).

    images: uint8 [M, H, W, C] on the host: the whole set (``row_offset=0``, ``num_rows``
    None), or only rows [row_offset, row_offset + M) of a set of ``num_rows`` rows, as long
    as those cover this process's shards (``process_rows``). Returns the global array
    [padded_rows(num_rows, n), H, W, C]; each device receives only its own rows.
    """
    num_rows = len(images) if num_rows is None else num_rows
    total = padded_rows(num_rows, mesh.size)
    shape = (total, *images.shape[1:])

    def shard(index):
        rows = index[0]
        start, stop = rows.start or 0, total if rows.stop is None else rows.stop
        out = np.zeros((stop - start, *images.shape[1:]), images.dtype)
        lo, hi = start, min(stop, num_rows)  # the real rows of this shard
        if lo < hi and not row_offset <= lo < hi <= row_offset + len(images):
            raise DataError(f"rows [{lo}, {hi}) of the training set were needed on this "
                            f"process, which holds only [{row_offset}, "
                            f"{row_offset + len(images)}).")
        if lo < hi:
            out[:hi - lo] = images[lo - row_offset:hi - row_offset]
        return out

    return jax.make_array_from_callback(shape, row_sharding(mesh), shard)


def gather_sharded(images: jax.Array, perm: jax.Array, batch_index: jax.Array | int,
                   batch_size: int, mesh: Mesh) -> jax.Array:
    """Batch ``batch_index`` of an epoch from a row-sharded training set: the values of
    ``gather_batch`` (images[perm[i*B:(i+1)*B]]) bit for bit, as [B, H, W, C] split over
    the ``data`` axis.

    Each device takes the rows of the batch that live in its shard (zeros for the others)
    and a reduce-scatter over ``data`` sums the pieces, each device keeping its B/n rows:
    every row comes from exactly one device, so the integer sum is exact.
    """
    idx = jax.lax.dynamic_slice_in_dim(perm, batch_index * batch_size, batch_size)
    shard = images.shape[0] // mesh.size

    def local(images, idx):
        local_idx = idx - jax.lax.axis_index(DATA_AXIS) * shard
        mine = (local_idx >= 0) & (local_idx < shard)
        rows = jnp.take(images, jnp.clip(local_idx, 0, shard - 1), axis=0)
        rows = jnp.where(mine.reshape((-1,) + (1,) * (rows.ndim - 1)), rows, 0)
        return jax.lax.psum_scatter(rows, DATA_AXIS, scatter_dimension=0, tiled=True)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P()),
                         out_specs=P(DATA_AXIS))(images, idx)
