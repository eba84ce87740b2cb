"""IDX files (MNIST / Fashion-MNIST layout, ``.gz`` or not): ``read_idx`` and a folder of
the four standard files as a ``Dataset``."""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np

from vae_jax.data.dataset import Dataset
from vae_jax.errors import DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises DataError naming the file when the magic number, the header or the length is wrong.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile and truncated streams
        raise DataError(f"Cannot read IDX file {path}: {e}. The file is corrupt or truncated; "
                        "re-download it (or reinstall dataset-fashion-mnist).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (wrong magic number {raw[:4].hex()!r}; "
                        "expected 0000 then a type byte such as 08). Use the original "
                        "train-images-idx3-ubyte style files.")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"IDX file {path} holds {len(raw) - header} data bytes but its header "
                        f"says shape {shape} ({expected} bytes): the file is truncated or "
                        "corrupt. Re-download it.")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find(folder: str, stem: str) -> Optional[str]:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_folder(name: str, folder: str) -> Dataset:
    paths = {k: find(folder, stem) for k, stem in IDX_FILES.items()}
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{paths[split + '_images']}: expected uint8 images [N, H, W], got "
                            f"{images.dtype} {images.shape}.")
        if labels.shape != images.shape[:1]:
            raise DataError(f"{paths[split + '_labels']}: {labels.shape[0]} labels for "
                            f"{images.shape[0]} images.")
    return Dataset(name, arrays["train_images"][..., None], arrays["test_images"][..., None],
                   arrays["train_labels"].astype(np.int32),
                   arrays["test_labels"].astype(np.int32))


def folder_complete(folder: Optional[str]) -> bool:
    return bool(folder) and all(find(folder, stem) for stem in IDX_FILES.values())

