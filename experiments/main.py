"""Launcher: flags plus one call.

python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default \
    [--config.train.num_epochs=5] [--mode=train|eval|sample]
    [--coordinator_address=host:port --num_processes=N --process_id=I | --distributed]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import parallel, progress, sampling, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"],
                  "Train (resuming), evaluate a checkpoint, or write its pictures (PNG).")
flags.DEFINE_integer("step", None, "Checkpoint step for --mode=eval/sample (default: the latest).")
flags.DEFINE_bool("progress", True, "Progress bar; --noprogress (or --verbosity=-2) silences it.")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process: host:port of process 0 (else JAX's auto-detection).")
flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes in all.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index, 0-based.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with JAX's "
                  "auto-detection (Slurm, Open MPI, TPU pods, ...) when no address is given.")
flags.DEFINE_integer("distributed_timeout", 300, "Multi-process: seconds to wait for every "
                     "process to join before aborting.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs every checkpoint at INFO
        logging.set_verbosity(logging.WARNING)
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, auto=FLAGS.distributed,
                                    timeout_s=FLAGS.distributed_timeout)
    if not FLAGS.progress:
        progress.set_enabled(False)
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "sample":
        sampling.sample_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
    else:
        train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)


if __name__ == "__main__":
    app.run(main)
