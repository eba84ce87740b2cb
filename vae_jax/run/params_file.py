"""A trained model's parameters: restored from a run's checkpoint or written to and read
from one ``.npz`` file.

* ``restore_state``: the whole TrainState of a workdir's checkpoint; ``restore_params``: the
  parameters its figures use (the EMA where ``config.eval.use_ema``), from a workdir or from
  a parameter file. Shared by the modes of ``vae_jax.run.experiment``, the notebooks and the
  scripts.
* ``save`` / ``load`` / ``load_for``: the parameter file, no pickle: the trained weights
  behind a reported figure, small enough to keep beside it (a checkpoint also holds the
  optimizer state, twice the parameters' size for Adam) and loaded back only into the model
  they came from.

The file holds one array per parameter, named by its path in the tree
(``params/decoder/Dense_0/kernel``), and ``__vae_jax_params__``: a JSON string with the
format, the caller's metadata (step, model, ...) and a SHA-256 over every name, dtype,
shape and byte, checked on loading. ``experiment.export_params`` (``--mode=export``) writes
one from a checkpoint; ``restore_params`` and ``scripts/budget_compare.py``
(``--run=name=config.py@file.npz``) read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from vae_jax.config import checks as config_checks
from vae_jax.errors import CheckpointError, CheckpointMismatchError
from vae_jax.run import checkpoint
from vae_jax.train import optim
from vae_jax.train.trainer import TrainState, create_train_state, root_keys

FORMAT = "vae_jax.params/1"
META = "__vae_jax_params__"
SEP = "/"


def _flat(tree: Any) -> dict[str, Any]:
    """{'a/b/c': leaf} of a nested dict of arrays (or of jax.ShapeDtypeStruct)."""
    return traverse_util.flatten_dict(tree, sep=SEP)


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: str, params: Any, meta: Optional[dict] = None) -> str:
    """Write ``params`` (a nested dict of arrays, as Flax's ``init`` returns) to ``path``
    (.npz), atomically (a temporary file renamed); returns the SHA-256. ``meta``: JSON-able
    facts kept beside them (step, the model's config fields, data set)."""
    arrays = {k: np.asarray(jax.device_get(v)) for k, v in _flat(params).items()}
    if META in arrays:
        raise ValueError(f"a parameter is named {META!r}, the file's metadata entry")
    sha = digest(arrays)
    header = json.dumps({"format": FORMAT, "sha256": sha, **(meta or {})}, sort_keys=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, **arrays, **{META: np.array(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return sha


def load(path: str, like: Any = None) -> tuple[dict, dict]:
    """(params, meta) from a file ``save`` wrote: the checksum verified and, given ``like``
    (the model's parameter tree, arrays or ``jax.eval_shape``'s structs), every name, shape
    and dtype checked against it. Raises CheckpointError for a file that is not one of ours
    or does not verify, CheckpointMismatchError for another model's parameters."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CheckpointError(f"No parameter file at {path}: give the path --mode=export "
                              "printed (default <workdir>/params_<step>.npz).") from None
    except (IsADirectoryError, PermissionError) as e:
        raise CheckpointError(f"Cannot read the parameter file {path}: {e.strerror}. Give "
                              "the path of the .npz --mode=export wrote.") from None
    except Exception as e:  # a cut-off or damaged zip (BadZipFile, a bad CRC, zlib, EOF),
        # an unreadable array header, an entry that needs pickle
        raise CheckpointError(f"{path} is damaged or not a parameter file (.npz without "
                              f"pickle) that --mode=export writes: {type(e).__name__}: "
                              f"{_printable(e)}. {_export_again(path)}"
                              ) from None
    if META not in arrays:
        raise CheckpointError(f"{path} has no {META!r} entry, so it was not written by "
                              "vae_jax's --mode=export; export the run's checkpoint with it.")
    meta = json.loads(str(arrays.pop(META)))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, this version reads "
                              f"{FORMAT!r}; export it again with this version.")
    if digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: its arrays do not match the SHA-256 written with them "
                              f"(a damaged or edited file). {_export_again(path)}")
    if like is not None:
        expected = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in _flat(like).items()}
        held = {k: (a.shape, a.dtype) for k, a in arrays.items()}
        if held != expected:
            missing = sorted(set(expected) - set(held))
            extra = sorted(set(held) - set(expected))
            shapes = sorted(k for k in set(held) & set(expected) if held[k] != expected[k])
            raise CheckpointMismatchError(
                f"{path} holds another model's parameters than the config builds"
                + (f"; missing: {missing[:3]}" if missing else "")
                + (f"; not in the model: {extra[:3]}" if extra else "")
                + (f"; other shape or dtype: {[(k, held[k], expected[k]) for k in shapes[:3]]}"
                   if shapes else "")
                + f" (exported from model {meta.get('model', '?')}). Give the config it was "
                "exported from, with the same model overrides.")
    return traverse_util.unflatten_dict(arrays, sep=SEP), meta


def _printable(error: Exception, limit: int = 200) -> str:
    """An error's text on one line of printable ASCII (a damaged file's bytes escaped)."""
    text = " ".join(str(error).split()).encode("ascii", "backslashreplace").decode()
    return text if len(text) <= limit else text[:limit] + "..."


def _export_again(path: str) -> str:
    """How to write ``path`` again: from the workdir beside it when that is the run it came
    from (``<workdir>/params_<step>.npz`` with ``<workdir>/checkpoints``)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(name)[0]
    step = stem[len("params_"):] if stem.startswith("params_") else ""
    if os.path.isdir(os.path.join(folder, "checkpoints")) and step.isdigit():
        return ("Export it again from its run's checkpoint: vae-jax --config=<the run's "
                f"config> --workdir={folder} --mode=export --step={step}.")
    return ("Export it again from its run's workdir: vae-jax --config=<the run's config> "
            "--workdir=<that workdir> --mode=export [--step=N].")


def load_for(path: str, model, image_shape) -> tuple[dict, dict]:
    """``load`` checked against the parameters ``model`` (a Flax module called as
    ``model(x, key)``) has for images [*image_shape]."""
    x = jax.numpy.zeros((1, *image_shape), jax.numpy.float32)
    like = jax.eval_shape(lambda key: model.init(key, x, key), jax.random.key(0))
    return load(path, like)


# ------------------------------------------------------------ restoring a trained run

def restore_state(config: ml_collections.ConfigDict, workdir: str, model: nn.Module,
                  image_shape, step: Optional[int] = None,
                  steps_per_epoch: Optional[int] = None) -> TrainState:
    """The TrainState saved in ``workdir`` at ``step`` (default: the latest that verifies)."""
    config = config_checks.with_defaults(config)
    keys = root_keys(config.seed)
    state = create_train_state(
        keys["init"], model, optim.make_optimizer(config.optim, steps_per_epoch), image_shape,
        ema=config_checks.keeps_ema(config))
    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"), read_only=True,
                              max_to_keep=config.train.checkpoints_to_keep)
    try:
        if step is not None:
            return checkpoint.restore(mngr, state, step)
        restored, _, skipped = checkpoint.restore_latest_good(mngr, state)  # read-only
        if restored is None:
            raise CheckpointError(
                f"No restorable checkpoint in {mngr.directory}"
                + (f"; damaged: {[p for p, _ in skipped]}" if skipped else "")
                + ". Train first (--mode=train with this --workdir), or give the --workdir of "
                "a trained run.")
        return restored
    finally:
        mngr.close()


def is_params_file(source: str) -> bool:
    """Whether ``source`` (a ``--workdir``) names a parameter file ``--mode=export`` wrote
    (``.npz``), read in place of a workdir's checkpoint by ``restore_params``."""
    return source.endswith(".npz")


def restore_params(config: ml_collections.ConfigDict, source: str, model: nn.Module,
                   image_shape, step: Optional[int] = None,
                   steps_per_epoch: Optional[int] = None) -> tuple[Any, int]:
    """(evaluation parameters, step): the EMA where ``config.eval.use_ema``, of a workdir's
    checkpoint (latest, or ``step``) or of a ``.npz`` file ``export_params`` wrote."""
    if is_params_file(source):
        params, meta = load_for(source, model, image_shape)
        held = int(meta.get("step", -1))
        if step is not None and step != held:
            raise CheckpointError(f"--step={step}, but {source} holds the parameters of step "
                                  f"{held} only; drop --step, or export step {step} from the "
                                  f"run's workdir (--mode=export --step={step}).")
        return params, held
    state = restore_state(config, source, model, image_shape, step, steps_per_epoch)
    return (state.ema_params if config.eval.use_ema else state.params), int(state.step)
