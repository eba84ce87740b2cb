"""Checkpoints with orbax: atomic saves every N steps, the last K kept, restore the latest.

Only arrays and JSON are written (orbax's PyTree/array format); nothing is pickled.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored; the message names its path and the fix."""


def manager(directory: str, *, max_to_keep: int = 3, async_save: bool = False
            ) -> ocp.CheckpointManager:
    """A CheckpointManager on ``directory``; saves are atomic (orbax finalises a tmp dir)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, *, force: bool = True) -> None:
    mngr.save(int(step), args=ocp.args.StandardSave(state), force=force)
    mngr.wait_until_finished()


def latest_step(mngr: ocp.CheckpointManager) -> Optional[int]:
    return mngr.latest_step()


def restore(mngr: ocp.CheckpointManager, target: Any, step: Optional[int] = None) -> Any:
    """Restore ``step`` (default: the latest) into the structure/sharding of ``target``.

    ``target`` is a pytree of arrays (or ``jax.ShapeDtypeStruct`` with shardings).
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"No checkpoint in {mngr.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:
        raise CheckpointError(
            f"Cannot restore checkpoint step {step} from {mngr.directory}: "
            f"{type(e).__name__}: {e}") from e
