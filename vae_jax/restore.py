"""A trained run's state or evaluation parameters: ``restore_state`` (the whole TrainState
of a workdir's checkpoint) and ``restore_params`` (the parameters its figures use, from a
workdir or from the ``.npz`` file ``experiment.export_params`` wrote), shared by the modes
of ``vae_jax.experiment`` and the benchmark scripts."""

from __future__ import annotations

import os
from typing import Any, Optional

import flax.linen as nn
import ml_collections

from vae_jax import checkpoint, optim, params_file, train
from vae_jax import config as config_lib
from vae_jax.errors import CheckpointError


def restore_state(config: ml_collections.ConfigDict, workdir: str, model: nn.Module,
                  image_shape, step: Optional[int] = None,
                  steps_per_epoch: Optional[int] = None) -> train.TrainState:
    """The TrainState saved in ``workdir`` at ``step`` (default: the latest that verifies)."""
    config = config_lib.with_defaults(config)
    keys = config_lib.root_keys(config.seed)
    state = train.create_train_state(
        keys["init"], model, optim.make_optimizer(config.optim, steps_per_epoch), image_shape,
        ema=config_lib.keeps_ema(config))
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
        params, meta = params_file.load_for(source, model, image_shape)
        held = int(meta.get("step", -1))
        if step is not None and step != held:
            raise CheckpointError(f"--step={step}, but {source} holds the parameters of step "
                                  f"{held} only; drop --step, or export step {step} from the "
                                  f"run's workdir (--mode=export --step={step}).")
        return params, held
    state = restore_state(config, source, model, image_shape, step, steps_per_epoch)
    return (state.ema_params if config.eval.use_ema else state.params), int(state.step)
