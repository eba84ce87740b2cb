"""Prepared tfds data sets read through ``tfds.data_source`` (ArrayRecord): whole, or with
the training split read a batch of records at a time (``TfdsRows``); and the message that
says how to get a data set that was not found."""

from __future__ import annotations

from typing import Optional

import numpy as np

from vae_jax.data import idx
from vae_jax.data.dataset import Dataset
from vae_jax.data.rows import Rows
from vae_jax.errors import DataError


def read_records(source, idx) -> list:
    try:  # ArrayRecord sources read many records at once
        return list(source.__getitems__([int(i) for i in idx]))
    except TypeError:  # sources without batched reads (e.g. tfds.testing.mock_data)
        return [source[int(i)] for i in idx]


class TfdsRows(Rows):
    """A tfds ``data_source`` split's images, uint8 [N, H, W, C], read (and decoded) by
    ArrayRecord record on demand; N from the source, the image shape from record 0."""

    def __init__(self, source, name: str, split: str):
        self.source, self.name, self.split = source, name, split
        if len(source) == 0:
            raise DataError(f"tfds data set {name!r} has an empty {split!r} split.")
        first = self.image(read_records(source, [0])[0])
        self.shape = (len(source), *first.shape)

    def image(self, record) -> np.ndarray:
        x = np.asarray(record["image"])
        if x.dtype != np.uint8:
            raise DataError(f"tfds data set {self.name!r}: images are {x.dtype}, expected "
                            "uint8.")
        return x[..., None] if x.ndim == 2 else x

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        for j, r in enumerate(read_records(self.source, idx)):
            out[j] = self.image(r)
        return out

    def describe(self) -> str:
        return f"tfds {self.name} {self.split} {self.shape}"

def split_arrays(source, name: str, split: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    n = len(source)
    if n == 0:
        raise DataError(f"tfds data set {name!r} has an empty {split!r} split.")
    records = read_records(source, range(n))
    images = np.stack([np.asarray(r["image"]) for r in records])
    if images.dtype != np.uint8:
        raise DataError(f"tfds data set {name!r}: images are {images.dtype}, expected uint8.")
    if images.ndim == 3:
        images = images[..., None]
    labels = None
    if "label" in records[0]:
        labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels


# tfds.data_source reads ArrayRecord files; tfds prepares TFRecord unless told otherwise.
TFDS_FILE_FORMAT = "array_record"


def load(name: str, data_dir: Optional[str], download: bool, lazy_train: bool = False
         ) -> Dataset:
    """The train and test splits; ``lazy_train``: the training images as ``TfdsRows`` (read
    on demand, no training labels), the test split in memory."""
    try:  # heavy, optional: only when a tfds data set is asked for
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"Data set {name!r} was not found: it is not a local data set ('fashion_mnist', "
            "'mnist' or 'npz' from config.data.dir) and tensorflow-datasets, which reads "
            "prepared tfds data sets, is not installed. Install it with "
            f"pip install -e '.[tfds]', then prepare the data: tfds build {name} "
            f"--file_format={TFDS_FILE_FORMAT} (or --config.data.download=True).") from None
    if download:
        builder = tfds.builder(name, data_dir=data_dir)
        # needs internet (and TensorFlow, for most builders); ArrayRecord for data_source
        builder.download_and_prepare(file_format=TFDS_FILE_FORMAT)
    try:
        sources = tfds.data_source(name, split=["train", "test"], data_dir=data_dir,
                                   download=False)
    except Exception as e:
        raise DataError(not_found_message(name, data_dir, e)) from e
    test, test_labels = split_arrays(sources[1], name, "test")
    if lazy_train:
        return Dataset(name, TfdsRows(sources[0], name, "train"), test, None, test_labels)
    train, train_labels = split_arrays(sources[0], name, "train")
    return Dataset(name, train, test, train_labels, test_labels)


def not_found_message(name: str, data_dir: Optional[str], err: Exception | None = None) -> str:
    lines = [f"Data set {name!r} was not found."]
    if name in ("fashion_mnist", "mnist"):
        where = data_dir or (idx.FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        lines.append(f"Looked for the IDX files {sorted(idx.IDX_FILES.values())} (.gz or not) in "
                     f"{where!r} (config.data.dir) and for a prepared tfds copy.")
        if name == "fashion_mnist":
            lines.append("Offline, install the real data set with "
                         "`sudo apt-get install -y dataset-fashion-mnist` "
                         f"(puts it in {idx.FASHION_MNIST_DIR}).")
        else:
            lines.append("Point --config.data.dir at a folder holding the four MNIST IDX files.")
    else:
        lines.append(f"Looked for a prepared tfds data set {name!r}"
                     + (f" under {data_dir!r}" if data_dir else " in tfds' default data dir")
                     + (f" ({type(err).__name__}: {str(err).strip().splitlines()[0]})" if err else "")
                     + ".")
    lines.append(f"With internet, prepare it once with `tfds build {name} "
                 f"--file_format={TFDS_FILE_FORMAT}` (needs `pip install -e '.[tfds]'`; "
                 "tfds' default TFRecord format cannot be read without TensorFlow) or run with --config.data.download=True. "
                 "Your own images: --config.data.name=npz --config.data.dir=FILE.npz holding "
                 "uint8 arrays 'train' and 'test' [N, H, W(, C)].")
    return " ".join(lines)

