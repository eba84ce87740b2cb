"""The persistent JAX compilation cache, on by default for runs from the launcher.

A rerun or a resumed run then loads its compiled programs (train calls, evaluation, PNG
grids, checksums) from disk instead of compiling them again. The folder is
``$XDG_CACHE_HOME/vae_jax/jax`` (``~/.cache/vae_jax/jax``) unless ``--compilation_cache``
names another; ``--compilation_cache=`` (empty) turns it off. A ``JAX_COMPILATION_CACHE_DIR``
already set in the environment wins, so tests and clusters keep their own. The cache holds
compiled code only: results are the same with it or without it.

A damaged entry (a file cut short or changed on disk) is removed when it fails to load,
with one line saying so, and the program compiled and written again; JAX itself would keep
it, warn at every load and never write the entry anew (its cache writes only absent
keys). This wraps ``jax._src.compilation_cache.get_executable_and_time`` where that exists;
elsewhere JAX's own behaviour stays.
"""

from __future__ import annotations

import os
import sys
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
        replace_damaged_entries()
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
    replace_damaged_entries()
    return path


ENTRY_SUFFIX = "-cache"  # JAX's file cache: <cache_dir>/<key>-cache (and <key>-atime)


def replace_damaged_entries() -> bool:
    """From now on, an entry of the persistent cache that fails to load is removed (one
    line on stderr names it) and its program compiled and written anew. Returns whether
    the hook is in place (False where this JAX has no such function)."""
    try:
        from jax._src import compilation_cache
        read = compilation_cache.get_executable_and_time
    except (ImportError, AttributeError):
        return False
    if getattr(read, "vae_jax_replaces_damaged", False):
        return True

    def get_executable_and_time(cache_key, *args, **kwargs):
        try:
            return read(cache_key, *args, **kwargs)
        except Exception as e:  # noqa: BLE001  (zlib/zstd, a truncated or foreign blob)
            folder = jax.config.jax_compilation_cache_dir or ""
            entry = os.path.join(folder, f"{cache_key}{ENTRY_SUFFIX}")
            try:
                os.remove(entry)
            except OSError:  # not there, or not removable: JAX's warning, as before
                raise e from None
            try:
                os.remove(os.path.join(folder, f"{cache_key}-atime"))
            except OSError:
                pass
            print(f"Removed a damaged entry of the compilation cache, {entry} "
                  f"({type(e).__name__}: {' '.join(str(e).split())[:120]}); its program is "
                  "compiled and written again.", file=sys.stderr, flush=True)
            return None, None

    get_executable_and_time.vae_jax_replaces_damaged = True
    compilation_cache.get_executable_and_time = get_executable_and_time
    return True
