"""Data sets by name, preprocessing, and on-device batching.

``load(name, ...)`` returns uint8 images [N, H, W, C] (and int32 labels) for the train and
test splits. Sources, tried in this order:

* ``fashion_mnist`` / ``mnist``: the four standard IDX files (``.gz`` or not) in a folder
  (``config.data.dir``; Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist``,
  where Debian's ``dataset-fashion-mnist`` puts it), else a prepared tfds copy.
* ``npz``: a user's ``.npz`` file (``config.data.dir`` is its path) holding ``train`` and
  ``test`` uint8 arrays [N, H, W] or [N, H, W, C], optionally ``train_labels``/``test_labels``;
  or a folder (or glob) of such ``np.savez`` shards, memory-mapped (``npz_shards``).
* ``image_folder``: ``train/`` and ``test/`` folders of PNG / JPEG files, optionally in class
  subfolders (``image_folder``), decoded on demand.
* any other name: a *prepared* tfds data set via ``tfds.data_source(download=False)``.
  ``download=True`` (``config.data.download``) opts into tfds' download and preparation,
  which needs internet and TensorFlow. Nothing downloads by default.

The training images go to the device(s) once, split over the ``data`` axis (``sharded``:
each device holds 1/n of the rows); each epoch's permutation is drawn on device and batches
are gathered there (``epoch_permutation``, ``gather_sharded``); or they stream from the
host (``Stream``, fed by a grain pipeline: ``grain_pipeline``). File-backed training sets
(npz shards, image folders, tfds with ``lazy_train``) are ``rows.Rows``: read a few rows at a
time, never whole. Modules: ``dataset``, ``idx``, ``npz``, ``npz_shards``, ``image_folder``,
``tfds`` (sources), ``rows``, ``batches`` (preprocessing, order, gather), ``sharded``,
``pipeline`` (which one), ``stream``, ``grain_pipeline``.
"""

from __future__ import annotations

import os
from typing import Optional

from vae_jax.data import grain_pipeline, idx, image_folder, npz, npz_shards, tfds
from vae_jax.data.dataset import CLASS_NAMES, Dataset, check
from vae_jax.data.idx import FASHION_MNIST_DIR, IDX_FILES, read_idx
from vae_jax.data.batches import BINARIZATIONS, epoch_permutation, gather_batch, preprocess
from vae_jax.data.grain_pipeline import GrainReader, check_resume, require_grain, resume_check
from vae_jax.data.pipeline import PIPELINES
from vae_jax.data.rows import Rows, fingerprint
from vae_jax.data.sharded import (gather_sharded, padded_rows, process_rows, put_sharded,
                                  row_sharding)
from vae_jax.data.stream import Stream
from vae_jax.data.tfds import TFDS_FILE_FORMAT
from vae_jax.errors import DataError

__all__ = ["BINARIZATIONS", "CLASS_NAMES", "Dataset", "FASHION_MNIST_DIR", "GrainReader",
           "IDX_FILES", "PIPELINES", "Rows", "TFDS_FILE_FORMAT", "check", "check_resume",
           "epoch_permutation",
           "fingerprint", "gather_batch", "gather_sharded", "load", "padded_rows", "preprocess",
           "process_rows", "put_sharded", "read_idx", "require_grain", "resume_check",
           "row_sharding", "Stream"]


def load(name: str, *, data_dir: Optional[str] = None, download: bool = False,
         lazy_train: bool = False) -> Dataset:
    """Load a data set by name as uint8 arrays (see the module docstring for sources).

    npz shards and image folders give training images read on demand (``Rows``);
    ``lazy_train`` does so for tfds too (training runs ask for it). ``data_dir`` may start
    with ``~`` (the user's home). Never downloads unless ``download=True``. Raises DataError with the fix when absent or unusable (``check``).
    """
    data_dir = os.path.expanduser(data_dir) if data_dir else data_dir  # ~/data as the shell would
    source = f"{name} data set" + (f" in {data_dir}" if data_dir else "")
    return check(_load(name, data_dir, download, lazy_train), source)


def _load(name: str, data_dir: Optional[str], download: bool, lazy_train: bool) -> Dataset:
    if name == "npz":
        if data_dir and (os.path.isdir(data_dir) or any(c in data_dir for c in "*?[")):
            return npz_shards.load(data_dir)  # a folder or glob of shards
        return npz.load(data_dir)
    if name == "image_folder":
        return image_folder.load(data_dir)
    if name in ("fashion_mnist", "mnist"):
        folder = data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        if idx.folder_complete(folder):
            return idx.load_folder(name, folder)
        if data_dir and os.path.isdir(data_dir) and any(
                idx.find(data_dir, s) for s in IDX_FILES.values()):
            missing = [s for s in IDX_FILES.values() if not idx.find(data_dir, s)]
            raise DataError(f"{data_dir} holds only some of the {name} IDX files; missing "
                            f"{missing} (.gz or not).")
        try:
            return tfds.load(name, None, download, lazy_train)
        except DataError:
            raise DataError(tfds.not_found_message(name, data_dir)) from None
    return tfds.load(name, data_dir, download, lazy_train)

