"""The ``Dataset`` record (uint8 images, optional labels), class names, and ``check``:
every split usable before anything is written."""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Optional

import numpy as np

from vae_jax.errors import DataError

# Label names, for pictures coloured by class.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """uint8 images [N, H, W, C]; labels int32 [N] (or None when the source has none).

    ``train_images`` is a numpy array, or for a file-backed source a ``rows.Rows`` read on
    demand (``len``, ``shape``, ``rows[i | a:b | int array]``), never whole."""

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
        labels = [x for x in (self.train_labels, self.test_labels) if x is not None]
        return int(max(x.max() for x in labels)) + 1 if labels else None


def broken_links(paths) -> list[str]:
    """Each of ``paths`` that is a symlink with no readable target, as "path (why)": a
    target that does not exist or a loop of links. A listing that skipped them (``glob``,
    ``os.path.isfile``, ``DirEntry.is_file``) would train on the other files without a word."""
    out = []
    for path in paths:
        if not os.path.islink(path):
            continue
        try:
            os.stat(path)
        except OSError as e:
            why = ("a loop of symbolic links" if e.errno == errno.ELOOP else
                   f"a symbolic link to {os.readlink(path)!r}, which does not exist"
                   if e.errno == errno.ENOENT else f"a symbolic link that cannot be read: {e}")
            out.append(f"{path} ({why})")
    return out


def refuse_broken_links(paths, where: str) -> None:
    """A DataError naming the broken symlinks among ``paths`` (``broken_links``), if any."""
    broken = broken_links(paths)
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise DataError(f"{where} holds {len(broken)} broken symbolic link"
                        f"{'s' if len(broken) > 1 else ''}: {'; '.join(broken[:3])}{more}. "
                        "Restore the file each points to, or remove the link; the data set "
                        "would otherwise be read without those files.")


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

