"""A folder of image files (``config.data.name="image_folder"``): ``train/`` and ``test/``
subfolders of PNG / JPEG files, read and decoded a row at a time (``ImageFolder``); class
subfolders (``train/cat/*.png``) give labels, numbered in sorted name order.

Files are taken in sorted path order. Every image has one shape: that of the first training
image (its header only is read at start); pixels are uint8 grey (mode L), RGB or RGBA. The
test split, small, is decoded whole at start (which checks every test file); a training
file of another shape is a DataError naming it when a batch reads it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np
from PIL import Image

from vae_jax.data.dataset import Dataset, refuse_broken_links
from vae_jax.data.rows import Rows
from vae_jax.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
LAYOUT = ("a folder with 'train/' and 'test/' subfolders of .png/.jpg files (or of class "
          "subfolders of them), all of one size and mode (L, RGB or RGBA)")


def _entries(folder: str) -> list[os.DirEntry]:
    """The entries of ``folder``; a DataError naming any broken symbolic link among them
    (``is_file`` / ``is_dir`` would skip a dangling one, and fail on a loop)."""
    entries = list(os.scandir(folder))
    refuse_broken_links([e.path for e in entries], folder)
    return entries


def _images(folder: str) -> list[str]:
    return sorted(e.path for e in _entries(folder)
                  if e.is_file() and e.name.lower().endswith(EXTENSIONS))


def listing(folder: str, classes: Optional[list[str]] = None
            ) -> tuple[list[str], Optional[np.ndarray], list[str]]:
    """(image paths, int32 labels [N] or None, class names) of one split's folder."""
    subdirs = sorted(e.name for e in _entries(folder) if e.is_dir())
    if not subdirs:
        return _images(folder), None, []
    classes = subdirs if classes is None else classes
    unknown = sorted(set(subdirs) - set(classes))
    if unknown:
        raise DataError(f"{folder}: class folders {unknown} are not among the training "
                        f"classes {classes}; give both splits the same class folders.")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if name in subdirs:
            found = _images(os.path.join(folder, name))
            paths += found
            labels += [label] * len(found)
    return paths, np.asarray(labels, np.int32), classes


def _open(path: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """The opened file (header read, pixels not yet) and its [H, W, C]."""
    try:
        im = Image.open(path)
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"Cannot read image {path}: {e}. Replace or remove the file.") from e
    if im.mode not in CHANNELS:
        im.close()
        raise DataError(f"{path}: image mode {im.mode!r}; expected one of {list(CHANNELS)} "
                        "(grey, RGB, RGBA). Convert it, e.g. Image.open(p).convert('RGB').save(p).")
    return im, (im.size[1], im.size[0], CHANNELS[im.mode])


def header_shape(path: str) -> tuple[int, int, int]:
    """[H, W, C] of an image file from its header (no decoding)."""
    im, shape = _open(path)
    im.close()
    return shape


def decode(path: str, expected: tuple[int, int, int]) -> np.ndarray:
    """uint8 [H, W, C] of one file; a DataError naming it when its shape is not ``expected``."""
    im, shape = _open(path)
    with im:
        if shape != expected:
            raise DataError(f"{path} is an image of shape {shape} [H, W, C]; every image of "
                            f"the folder must have the first training image's shape "
                            f"{expected}. Resize or convert it (or remove it).")
        try:
            pixels = np.asarray(im, np.uint8)
        except (OSError, ValueError) as e:  # truncated or corrupt pixel data
            raise DataError(f"Cannot decode image {path}: {e}. Replace or remove the "
                            "file.") from e
    return pixels.reshape(expected)


class ImageFolder(Rows):
    """Image files decoded on demand: uint8 [N, H, W, C]; ``take`` decodes each row's file."""

    def __init__(self, root: str, paths: list[str], image_shape: tuple[int, int, int]):
        self.root, self.paths = root, paths
        self.shape = (len(paths), *image_shape)

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        for j, i in enumerate(idx):
            out[j] = decode(self.paths[i], self.shape[1:])
        return out

    def describe(self) -> str:
        names = hashlib.sha256("\n".join(os.path.relpath(p, self.root)
                                         for p in self.paths).encode()).hexdigest()
        return f"image folder {self.shape} {names}"


def load(root: Optional[str]) -> Dataset:
    """``root``'s images as a Dataset: train an ``ImageFolder`` (read on demand), test in
    memory. DataError naming the folder or file and the fix for each problem."""
    if not root or not all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")):
        raise DataError(f"data set 'image_folder' needs config.data.dir to be {LAYOUT}; got "
                        f"{root!r}, which lacks a 'train' or 'test' subfolder.")
    train, train_labels, classes = listing(os.path.join(root, "train"))
    test, test_labels, _ = listing(os.path.join(root, "test"), classes or None)
    for split, paths in (("train", train), ("test", test)):
        if not paths:
            raise DataError(f"{os.path.join(root, split)} holds no {'/'.join(EXTENSIONS)} "
                            f"file; expected {LAYOUT}.")
    if (train_labels is None) != (test_labels is None):
        raise DataError(f"{root}: one split has class subfolders and the other not; give "
                        "both 'train/' and 'test/' the same class folders, or neither.")
    image_shape = header_shape(train[0])
    test_images = np.stack([decode(p, image_shape) for p in test])
    return Dataset("image_folder", ImageFolder(root, train, image_shape), test_images,
                   train_labels, test_labels)
