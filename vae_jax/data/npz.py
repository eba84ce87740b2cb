"""A user's ``.npz`` file holding uint8 ``train`` / ``test`` arrays (and optional labels)
as a ``Dataset``."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from vae_jax.data.dataset import Dataset
from vae_jax.errors import DataError

def load(path: Optional[str]) -> Dataset:
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

