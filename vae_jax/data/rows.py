"""``Rows``: the base of the file-backed training sets, read a few rows at a time and never
whole: ``len``, ``shape`` and ``dtype`` come from the files' headers, ``rows[i]``,
``rows[a:b]`` and ``rows[int array]`` read only those rows; and ``fingerprint``, what a
checkpointed stream was reading (it refuses another data set): the length, shape and dtype,
a hash of ``SAMPLE_ROWS`` rows spread evenly over the set and, for files, their names.
The sample keeps it cheap (a few rows read, never the whole set), so a change to rows it
does not read goes unseen."""

from __future__ import annotations

import functools
import hashlib

import numpy as np

SAMPLE_ROWS = 64  # rows read into a fingerprint, evenly spread (the first and last among them)


class Rows:
    """uint8 rows [N, H, W, C] read on demand. Subclasses set ``shape`` and implement
    ``take(idx: int64 [M]) -> uint8 [M, H, W, C]`` (indices in [0, N)) and ``describe()``
    (a text naming what is read, hashed into ``fingerprint`` with a sample of the rows)."""

    shape: tuple[int, int, int, int]
    dtype = np.dtype(np.uint8)

    def take(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self)

    def __getitem__(self, key) -> np.ndarray:
        rest = ()
        if isinstance(key, tuple):  # rows first, then the rest on the rows read
            key, rest = key[0], key[1:]
        if key is Ellipsis:
            key, rest = slice(None), (Ellipsis, *rest)
        n = len(self)
        if isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"row {key} of {n}")
            out = self.take(np.array([key % n], np.int64))[0]
        elif isinstance(key, slice):
            out = self.take(np.arange(*key.indices(n), dtype=np.int64))
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"rows {idx.min()}..{idx.max()} of {n}")
            flat = np.where(idx < 0, idx + n, idx).astype(np.int64).reshape(-1)
            out = self.take(flat).reshape(idx.shape + self.shape[1:])
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row, read: only when asked for explicitly (``np.asarray(rows)``)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def sample_rows(n: int, k: int = SAMPLE_ROWS) -> np.ndarray:
    """int64 [min(n, k)]: ``k`` row indices spread evenly over [0, n), 0 and n - 1 among them."""
    if n == 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


def fingerprint(images) -> str:
    """What a checkpointed stream was reading, as 16 hex digits: the sha256 of the set's
    length, shape and dtype, its description (a ``Rows``' ``describe()``: the files' names;
    "array" for an array in memory) and the bytes of its ``sample_rows`` rows. Reads
    ``SAMPLE_ROWS`` rows, never the whole set."""
    shape, rows = tuple(np.shape(images)), sample_rows(len(images))
    sample = np.ascontiguousarray(images[rows])
    what = images.describe() if isinstance(images, Rows) else "array"
    digest = hashlib.sha256(f"{len(images)} {shape} {sample.dtype} {what}\n".encode())
    digest.update(sample.tobytes())
    return digest.hexdigest()[:16]
