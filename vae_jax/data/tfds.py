"""Prepared tfds data sets read through ``tfds.data_source`` (ArrayRecord), and the message
that says how to get a data set that was not found."""

from __future__ import annotations

from typing import Optional

import numpy as np

from vae_jax.data import idx
from vae_jax.data.dataset import Dataset
from vae_jax.errors import DataError

def split_arrays(source, name: str, split: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    n = len(source)
    if n == 0:
        raise DataError(f"tfds data set {name!r} has an empty {split!r} split.")
    try:  # ArrayRecord sources read many records at once
        records = list(source.__getitems__(list(range(n))))
    except TypeError:  # sources without batched reads (e.g. tfds.testing.mock_data)
        records = [source[i] for i in range(n)]
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


def load(name: str, data_dir: Optional[str], download: bool) -> Dataset:
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
    (train, train_labels), (test, test_labels) = (
        split_arrays(sources[0], name, "train"), split_arrays(sources[1], name, "test"))
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

