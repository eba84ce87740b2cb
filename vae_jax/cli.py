"""The command line ``vae-jax``: train, evaluate, sample or export one run.

    vae-jax --config=experiments/configs/default.py --workdir=runs/default \
        [--config.train.num_epochs=5] [--mode=train|eval|sample|export] [--step=N]
        [--coordinator_address=host:port --num_processes=N --process_id=I | --distributed]

``python -m experiments.main`` in a checkout is the same command; ``vae-jax-sweep`` (a grid
of runs) is ``vae_jax.run.sweep.main``. A config is a Python file with ``get_config()`` (``--config=path.py`` or
``path.py:variant``); it may import modules from the current folder, as under
``python -m`` (the repository's configs import ``experiments.configs``). A user's mistake
ends with one paragraph and its exit code (``vae_jax.errors``), not a traceback.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import errors
from vae_jax.ops import compile as xla_compile
from vae_jax.run import experiment, runtime

FLAGS = flags.FLAGS


def _define_run_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py or "
                                    "path.py:variant).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go (or, for "
                        "--mode=eval / sample, a parameter file .npz).")
    flags.mark_flags_as_required(["config", "workdir"])
    flags.DEFINE_enum("mode", "train", list(experiment.MODES),
                      "Train (resuming), evaluate a checkpoint, write its pictures (PNG), or "
                      "export its evaluation parameters (workdir/params_<step>.npz).")
    flags.DEFINE_integer("step", None, "Checkpoint step for --mode=eval/sample/export "
                         "(default: the latest).")
    flags.DEFINE_string("coordinator_address", None,
                        "Multi-process: host:port of process 0 (else JAX's auto-detection).")
    flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes in all.")
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index, 0-based.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with JAX's "
                      "auto-detection (Slurm, Open MPI, TPU pods, ...) when no address is "
                      "given.")
    flags.DEFINE_integer("distributed_timeout", 300, "Multi-process: seconds to wait for "
                         "every process to join before aborting.")
    flags.DEFINE_string("compilation_cache", None, "Folder of the persistent JAX compilation "
                        "cache (default ~/.cache/vae_jax/jax); empty turns it off.")
    flags.DEFINE_bool("progress", True, "Progress bar; --noprogress (or --verbosity=-2) "
                      "silences it.")
    flags.DEFINE_bool("traceback", False, "Show the traceback of a user's error (a bad "
                      "config, missing data, a busy workdir, ...; also --verbosity=1), not "
                      "only its one-paragraph message.")


def _run(argv) -> None:
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs every checkpoint at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        runtime.report_errors(experiment.run, FLAGS.config, FLAGS.workdir, mode=FLAGS.mode,
                              step=FLAGS.step, show_progress=FLAGS.progress,
                              coordinator_address=FLAGS.coordinator_address,
                              num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                              auto_distributed=FLAGS.distributed,
                              distributed_timeout=FLAGS.distributed_timeout,
                              compilation_cache=FLAGS.compilation_cache,
                              show_traceback=FLAGS.traceback or FLAGS.verbosity >= 1)
    except errors.Interrupted as stop:   # saved and said so: end with 128 + signal
        xla_compile.exit_at_shutdown(stop.code)
        raise


USAGE = """Train, evaluate, sample or export one run of a config.

  vae-jax --config=experiments/configs/default.py --workdir=runs/default
  vae-jax --config=experiments/configs/default.py --workdir=runs/default --mode=eval
  vae-jax --config=experiments/configs/default.py --workdir=runs/default --mode=sample

Any config field is a flag too: --config.train.num_epochs=5 --config.loss.beta=4 ...
"""


def main() -> None:
    """``vae-jax``: train, evaluate, sample or export one run."""
    runtime.current_folder_importable()
    _define_run_flags()
    runtime.list_flags_in_help(USAGE, ["config", "workdir", "mode", "step", "progress",
                                       "compilation_cache", "traceback",
                                       "coordinator_address", "num_processes", "process_id",
                                       "distributed", "distributed_timeout"])
    app.run(_run)


if __name__ == "__main__":
    main()
