"""``Rows``: the base of the file-backed training sets, read a few rows at a time and never
whole: ``len``, ``shape`` and ``dtype`` come from the files' headers, ``rows[i]``,
``rows[a:b]`` and ``rows[int array]`` read only those rows, and ``fingerprint`` names the
files (a checkpointed stream refuses another data set)."""

from __future__ import annotations

import hashlib

import numpy as np


class Rows:
    """uint8 rows [N, H, W, C] read on demand. Subclasses set ``shape`` and implement
    ``take(idx: int64 [M]) -> uint8 [M, H, W, C]`` (indices in [0, N)) and ``describe()``
    (a text naming what is read, hashed into ``fingerprint``)."""

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

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.describe().encode()).hexdigest()[:16]

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


def fingerprint(images) -> str:
    """What a checkpointed stream was reading: a ``Rows``' fingerprint, or for an array in
    memory its shape and dtype (hashing every byte of a large set would cost a pass)."""
    if isinstance(images, Rows):
        return images.fingerprint
    return hashlib.sha256(f"array {np.shape(images)} {np.asarray(images[:0]).dtype}".encode()
                          ).hexdigest()[:16]
