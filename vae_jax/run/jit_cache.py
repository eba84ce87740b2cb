"""The persistent JAX compilation cache, on by default for runs from the launcher.

A rerun or a resumed run then loads its compiled programs (train calls, evaluation, PNG
grids, checksums) from disk instead of compiling them again. The folder is
``$XDG_CACHE_HOME/vae_jax/jax`` (``~/.cache/vae_jax/jax``) unless ``--compilation_cache``
names another; ``--compilation_cache=`` (empty) turns it off. A ``JAX_COMPILATION_CACHE_DIR``
already set in the environment wins, so tests and clusters keep their own. The cache holds
compiled code only: results are the same with it or without it.
"""

from __future__ import annotations

import os
from typing import Optional

import jax


def default_dir() -> str:
    """``$XDG_CACHE_HOME/vae_jax/jax``, with ``~/.cache`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vae_jax", "jax")


def enable(path: Optional[str]) -> Optional[str]:
    """Cache compiled programs in ``path`` (None: ``default_dir()``; "": off). Returns the
    folder in use, or None when off. Every program is cached, however fast it compiled."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if path == "":
        return None
    path = os.path.abspath(os.path.expanduser(path or default_dir()))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # an unwritable cache folder must not stop a run: compile as usual
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
