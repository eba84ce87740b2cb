"""Data sets by name, preprocessing, and on-device batching.

``load(name, ...)`` returns uint8 images [N, H, W, C] (and int32 labels) for the train and
test splits. Sources, tried in this order:

* ``fashion_mnist`` / ``mnist``: the four standard IDX files (``.gz`` or not) in a folder
  (``config.data.dir``; Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist``,
  where Debian's ``dataset-fashion-mnist`` puts it), else a prepared tfds copy.
* ``npz``: a user's ``.npz`` file (``config.data.dir`` is its path) holding ``train`` and
  ``test`` uint8 arrays [N, H, W] or [N, H, W, C], optionally ``train_labels``/``test_labels``.
* any other name: a *prepared* tfds data set via ``tfds.data_source(download=False)``.
  ``download=True`` (``config.data.download``) opts into tfds' download and preparation,
  which needs internet and TensorFlow. Nothing downloads by default.

The training images go to the device(s) once; each epoch's permutation is drawn on device
and batches are gathered there (``epoch_permutation``, ``gather_batch``).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import DataError
from vae_jax.xla_cpu import rng

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

BINARIZATIONS = ("dynamic", "static", "none")

# Label names, for pictures coloured by class.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """uint8 images [N, H, W, C]; labels int32 [N] (or None when the source has none)."""

    name: str
    train_images: np.ndarray
    test_images: np.ndarray
    train_labels: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self) -> Optional[int]:
        if self.train_labels is None:
            return None
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


# ----------------------------------------------------------------------------------- IDX

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


def _find(folder: str, stem: str) -> Optional[str]:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _load_idx_folder(name: str, folder: str) -> Dataset:
    paths = {k: _find(folder, stem) for k, stem in IDX_FILES.items()}
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


def _idx_folder_complete(folder: Optional[str]) -> bool:
    return bool(folder) and all(_find(folder, stem) for stem in IDX_FILES.values())


# ----------------------------------------------------------------------------------- NPZ

def _load_npz(path: Optional[str]) -> Dataset:
    layout = ("an .npz with uint8 arrays 'train' and 'test' of shape [N, H, W] or "
              "[N, H, W, C] (optional int 'train_labels' / 'test_labels' [N])")
    if not path or not os.path.isfile(path):
        raise DataError(f"data set 'npz' needs config.data.dir to be the path of {layout}; "
                        f"got {path!r}, which is not a file.")
    try:
        with np.load(path, allow_pickle=False) as f:
            contents = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError for object arrays, ...
        raise DataError(f"Cannot read {path} as {layout}: {e}") from e
    missing = [k for k in ("train", "test") if k not in contents]
    if missing:
        raise DataError(f"{path} lacks {missing}; found {sorted(contents)}. Expected {layout}.")
    out = {}
    for split in ("train", "test"):
        x = contents[split]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: '{split}' has dtype {x.dtype}; expected uint8 pixels "
                            "0..255. Convert with (x * 255).round().astype(np.uint8) if it "
                            "holds floats in [0, 1].")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise DataError(f"{path}: '{split}' has shape {x.shape}; expected {layout}.")
        out[split] = x
        labels = contents.get(f"{split}_labels")
        if labels is not None and labels.shape != x.shape[:1]:
            raise DataError(f"{path}: '{split}_labels' has shape {labels.shape}, expected "
                            f"({x.shape[0]},): one label per '{split}' image. Fix the array, "
                            f"or leave '{split}_labels' out.")
        out[f"{split}_labels"] = None if labels is None else labels.astype(np.int32)
    if out["train"].shape[1:] != out["test"].shape[1:]:
        raise DataError(f"{path}: train images {out['train'].shape[1:]} and test images "
                        f"{out['test'].shape[1:]} differ in shape; both splits must hold "
                        "images of one shape [H, W, C].")
    if (out["train_labels"] is None) != (out["test_labels"] is None):
        out["train_labels"] = out["test_labels"] = None
    return Dataset("npz", out["train"], out["test"], out["train_labels"], out["test_labels"])


# ---------------------------------------------------------------------------------- tfds

def _tfds_split(source, name: str, split: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
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


def _load_tfds(name: str, data_dir: Optional[str], download: bool) -> Dataset:
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
        raise DataError(_not_found_message(name, data_dir, e)) from e
    (train, train_labels), (test, test_labels) = (
        _tfds_split(sources[0], name, "train"), _tfds_split(sources[1], name, "test"))
    return Dataset(name, train, test, train_labels, test_labels)


def _not_found_message(name: str, data_dir: Optional[str], err: Exception | None = None) -> str:
    lines = [f"Data set {name!r} was not found."]
    if name in ("fashion_mnist", "mnist"):
        where = data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        lines.append(f"Looked for the IDX files {sorted(IDX_FILES.values())} (.gz or not) in "
                     f"{where!r} (config.data.dir) and for a prepared tfds copy.")
        if name == "fashion_mnist":
            lines.append("Offline, install the real data set with "
                         "`sudo apt-get install -y dataset-fashion-mnist` "
                         f"(puts it in {FASHION_MNIST_DIR}).")
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


def check(ds: Dataset, source: str) -> Dataset:
    """Every split usable, before anything is written: neither split empty, as many labels
    as images, images of at least 2x2 pixels with 1, 3 or 4 channels (the PNG grids), and
    test images of the training images' shape. A DataError names ``source`` and the fix."""
    for split, images, labels in (("train", ds.train_images, ds.train_labels),
                                  ("test", ds.test_images, ds.test_labels)):
        if len(images) == 0:
            raise DataError(f"{source}: the {split!r} split is empty (shape {images.shape}). "
                            f"Both splits need images: put at least one in {split!r} (the "
                            "test split is evaluated at every evaluation).")
        if labels is not None and len(labels) != len(images):
            raise DataError(f"{source}: {len(labels)} {split} labels for {len(images)} {split} "
                            "images; give one label per image, or no labels.")
    h, w, c = ds.image_shape
    if h < 2 or w < 2:
        raise DataError(f"{source}: images of {h}x{w} pixels (shape {ds.train_images.shape}); "
                        "a VAE needs images of at least 2x2 pixels. Check the array's layout "
                        "is [N, H, W] or [N, H, W, C].")
    if c not in (1, 3, 4):
        raise DataError(f"{source}: images with {c} channels (shape {ds.train_images.shape}); "
                        "expected 1 (grey), 3 (RGB) or 4 (RGBA). Check the layout is "
                        "[N, H, W, C] with channels last.")
    if ds.test_images.shape[1:] != ds.train_images.shape[1:]:
        raise DataError(f"{source}: test images {ds.test_images.shape[1:]} and train images "
                        f"{ds.train_images.shape[1:]} differ in shape; both splits must hold "
                        "images of one shape [H, W, C].")
    return ds


def load(name: str, *, data_dir: Optional[str] = None, download: bool = False) -> Dataset:
    """Load a data set by name as uint8 arrays (see the module docstring for sources).

    Never downloads unless ``download=True``. Raises DataError with the fix when absent
    or unusable (``check``).
    """
    source = f"{name} data set" + (f" in {data_dir}" if data_dir else "")
    return check(_load(name, data_dir, download), source)


def _load(name: str, data_dir: Optional[str], download: bool) -> Dataset:
    if name == "npz":
        return _load_npz(data_dir)
    if name in ("fashion_mnist", "mnist"):
        folder = data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        if _idx_folder_complete(folder):
            return _load_idx_folder(name, folder)
        if data_dir and os.path.isdir(data_dir) and any(
                _find(data_dir, s) for s in IDX_FILES.values()):
            missing = [s for s in IDX_FILES.values() if not _find(data_dir, s)]
            raise DataError(f"{data_dir} holds only some of the {name} IDX files; missing "
                            f"{missing} (.gz or not).")
        try:
            return _load_tfds(name, None, download)
        except DataError:
            raise DataError(_not_found_message(name, data_dir)) from None
    return _load_tfds(name, data_dir, download)


# --------------------------------------------------------------------------- preprocessing

def preprocess(images: jax.Array, key: Optional[jax.Array], *, binarization: str) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 in [0, 1].

    binarization:
      "dynamic": a fresh Bernoulli(pixel / 255) draw per call (needs ``key``);
      "static":  pixel / 255 > 0.5;
      "none":    pixel / 255 (grey levels).
    """
    x = images.astype(jnp.float32) / 255.0
    if binarization == "dynamic":
        return rng.bernoulli(key, x).astype(jnp.float32)
    if binarization == "static":
        return (x > 0.5).astype(jnp.float32)
    if binarization == "none":
        return x
    raise ValueError(f"Unknown binarization {binarization!r}; valid: {list(BINARIZATIONS)}.")


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The order of the training set in ``epoch``: int32 [num_examples], drawn on device."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def gather_batch(images: jax.Array, perm: jax.Array, batch_index: jax.Array | int,
                 batch_size: int) -> jax.Array:
    """Batch ``batch_index`` of an epoch: images[perm[i*B:(i+1)*B]] -> [B, H, W, C]."""
    idx = jax.lax.dynamic_slice_in_dim(perm, batch_index * batch_size, batch_size)
    return jnp.take(images, idx, axis=0)
