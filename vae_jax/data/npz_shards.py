"""A training set in many ``.npz`` shards (``config.data.name="npz"`` with ``config.data.dir``
a folder or a glob), memory-mapped: the ``train`` member of each shard is read in place
(rows on demand, never the whole set); ``test`` and the labels, small, are read whole.

Each shard is an ``np.savez`` file (members stored, not compressed: only those can be
memory-mapped) holding ``train`` uint8 [n, H, W] or [n, H, W, C], and optionally ``test``
(same image shape), ``train_labels`` [n] and ``test_labels``. Shards are taken in sorted
name order (zero-pad the numbers: ``shard-00007.npz``); rows number on from shard to shard.
"""

from __future__ import annotations

import glob
import os
import struct
import zipfile
from typing import Optional

import numpy as np

from vae_jax.data.dataset import Dataset, refuse_broken_links
from vae_jax.data.rows import Rows
from vae_jax.errors import DataError

LAYOUT = ("np.savez shards (not savez_compressed), each holding a uint8 'train' array "
          "[n, H, W] or [n, H, W, C] and optionally 'test', 'train_labels', 'test_labels'")


def shard_paths(pattern: str) -> list[str]:
    """The shard files of a folder (its ``*.npz``) or of a glob, sorted by name."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.npz")
    found = sorted(glob.glob(pattern))
    refuse_broken_links(found, f"config.data.dir={pattern!r}")
    paths = [p for p in found if os.path.isfile(p)]
    if not paths:
        raise DataError(f"config.data.dir={pattern!r} matches no .npz file; data set 'npz' "
                        f"needs the path of one .npz file, or a folder (or glob) of {LAYOUT}.")
    return paths


def member_map(path: str, member: str) -> tuple[int, tuple, np.dtype, bool]:
    """(byte offset, shape, dtype, fortran order) of member ``member`` of the .npz at
    ``path``, read from the zip and .npy headers only. A DataError when it is compressed."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(
            f"{path}: member {member!r} is compressed, and compressed members cannot be "
            "memory-mapped (each batch would decompress the whole shard). Write the shards "
            "with np.savez, not np.savez_compressed (re-save: np.savez(path, **np.load(path))).")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DataError(f"{path}: damaged zip (no local header for {member!r}); re-write "
                            "the shard with np.savez.")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        return f.tell(), shape, dtype, fortran


class NpzShards(Rows):
    """The ``train`` members of ``paths``, memory-mapped: uint8 [N, H, W, C] read on demand.

    shards: [(path, offset, shape)] as ``member_map`` read them."""

    def __init__(self, shards: list[tuple[str, int, tuple]]):
        self.shards = shards
        counts = [shape[0] for _, _, shape in shards]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        image = tuple(shards[0][2][1:]) + ((1,) if len(shards[0][2]) == 3 else ())
        self.shape = (int(self.starts[-1]), *image)
        self._maps: Optional[list[np.memmap]] = None

    def maps(self) -> list[np.memmap]:
        if self._maps is None:  # opened on first read (and again after unpickling)
            self._maps = [np.memmap(p, np.uint8, "r", offset, shape=shape).reshape(
                (shape[0], *self.shape[1:])) for p, offset, shape in self.shards]
        return self._maps

    def __getstate__(self):
        return {**self.__dict__, "_maps": None}  # paths, not the mapped bytes

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        for s in np.unique(shard):
            mine = shard == s
            local = idx[mine] - self.starts[s]
            order = np.argsort(local, kind="stable")  # read each shard front to back
            rows = np.empty((len(local), *self.shape[1:]), np.uint8)
            rows[order] = self.maps()[s][local[order]]
            out[mine] = rows
        return out

    def describe(self) -> str:
        return "npz shards " + " ".join(f"{os.path.basename(p)}:{shape}"
                                        for p, _, shape in self.shards)


def _check_images(path: str, member: str, shape, dtype, image_shape) -> None:
    if dtype != np.uint8:
        raise DataError(f"{path}: {member!r} has dtype {dtype}; expected uint8 pixels 0..255 "
                        "(convert with (x * 255).round().astype(np.uint8)).")
    if len(shape) not in (3, 4):
        raise DataError(f"{path}: {member!r} has shape {shape}; expected {LAYOUT}.")
    if shape[0] == 0:
        raise DataError(f"{path}: {member!r} is empty (shape {shape}); every shard needs at "
                        "least one training image. Remove the empty shard or add images.")
    if image_shape is not None and tuple(shape[1:]) != image_shape:
        raise DataError(f"{path}: {member!r} holds images of shape {tuple(shape[1:])}, the "
                        f"shards before it {image_shape}; every shard must hold images of one "
                        "shape [H, W(, C)]. Re-write the odd shard at the same size.")


def _hwc(image_shape) -> tuple:
    return tuple(image_shape) + ((1,) if len(image_shape) == 2 else ())


def _test_images(path: str, test: np.ndarray, train_shape) -> np.ndarray:
    """A shard's ``test`` member as uint8 [n, H, W, C], checked as the single-file .npz
    checks its own (dtype, rank) and against the training images' shape: a DataError
    naming the shard otherwise."""
    if test.dtype != np.uint8:
        raise DataError(f"{path}: 'test' has dtype {test.dtype}; expected uint8 pixels 0..255 "
                        "like 'train' (floats would be evaluated as pixel values near 0). "
                        "Convert with (x * 255).round().astype(np.uint8) if it holds floats "
                        "in [0, 1], and re-write the shard.")
    if test.ndim not in (3, 4):
        raise DataError(f"{path}: 'test' has shape {test.shape}; expected {LAYOUT}.")
    test = test[..., None] if test.ndim == 3 else test
    if test.shape[1:] != _hwc(train_shape):
        raise DataError(f"{path}: 'test' holds images of shape {test.shape[1:]} [H, W, C] but "
                        f"the training images are {_hwc(train_shape)}; every shard's 'test' "
                        "must hold images of the training images' shape. Re-write that "
                        "shard's 'test' at that size.")
    return test


def load(pattern: str) -> Dataset:
    """The shards of ``pattern`` (a folder or glob) as a Dataset whose ``train_images`` is
    an ``NpzShards`` (memory-mapped) and whose test split is in memory."""
    shards, tests, labels, test_labels, image_shape = [], [], [], [], None
    for path in shard_paths(pattern):
        try:
            with np.load(path, allow_pickle=False) as f:
                files = set(f.files)
                if "train" not in files:
                    raise DataError(f"{path} lacks 'train'; found {sorted(files)}. Expected "
                                    f"{LAYOUT}.")
                offset, shape, dtype, fortran = member_map(path, "train")
                _check_images(path, "train", shape, dtype, image_shape)
                if fortran:
                    raise DataError(f"{path}: 'train' is stored in Fortran order; save a "
                                    "C-ordered array (np.ascontiguousarray(x)).")
                image_shape = tuple(shape[1:])
                shards.append((path, offset, tuple(shape)))
                if "test" in files:
                    tests.append(_test_images(path, f["test"], image_shape))
                labels.append(f["train_labels"].astype(np.int32)
                              if "train_labels" in files else None)
                test_labels.append(f["test_labels"].astype(np.int32)
                                   if "test_labels" in files else None)
        except DataError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise DataError(f"Cannot read {path} as one of {LAYOUT}: {e}") from e
    if not tests:
        raise DataError(f"No shard of {pattern!r} holds a 'test' array; put the test images "
                        "(uint8, the training images' shape) in at least one shard as 'test'.")
    test = np.concatenate(tests)
    for (path, _, shape), lab in zip(shards, labels):
        if lab is not None and lab.shape != shape[:1]:
            raise DataError(f"{path}: 'train_labels' has shape {lab.shape}, expected "
                            f"({shape[0]},): one label per 'train' image.")
    train_labels = (np.concatenate(labels) if all(lab is not None for lab in labels) else None)
    have_test = [t for t in test_labels if t is not None]
    test_lab = np.concatenate(have_test) if have_test and len(have_test) == len(tests) else None
    if train_labels is None or test_lab is None:
        train_labels = test_lab = None  # labels only when every split has them
    return Dataset("npz", NpzShards(shards), test, train_labels, test_lab)
