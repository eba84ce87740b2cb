"""Launcher: flags plus one call.

python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default \
    [--config.train.num_epochs=5] [--mode=train|eval|sample]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import progress, sampling, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"],
                  "Train (resuming), evaluate a checkpoint, or write its pictures (PNG).")
flags.DEFINE_integer("step", None, "Checkpoint step for --mode=eval/sample (default: the latest).")
flags.DEFINE_bool("progress", True, "Progress bar; --noprogress (or --verbosity=-2) silences it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs every checkpoint at INFO
        logging.set_verbosity(logging.WARNING)
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
