"""Sweep launcher: flags plus one call (see vae_jax.sweep for the grid and the outputs).

python -m experiments.sweep --config=experiments/configs/sweep_beta.py --workdir=runs/sweep \
    [--parallel=2] [--config.train.num_epochs=1]

Writes workdir/<point>/ (one training run each), workdir/summary.csv, summary.md and
elbo_vs_beta.png. Rerunning skips the points already finished.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import progress, sweep

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file declaring config.sweep.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Sweep folder: one subfolder per point plus summaries.")
flags.DEFINE_integer("parallel", 1, "Points run at once: 1 = in this process, one after "
                     "another; N > 1 = up to N subprocesses.")
flags.DEFINE_integer("point", None, "Internal: run only this point index (a subprocess).")
flags.DEFINE_bool("progress", True, "Progress bars; --noprogress silences them.")
flags.mark_flags_as_required(["config", "workdir"])


def _point_command(i: int) -> list[str]:
    args = [a for a in sys.argv[1:] if not a.startswith(("--parallel", "--point"))]
    return [sys.executable, "-m", "experiments.sweep", *args, "--parallel=1", f"--point={i}"]


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs every checkpoint at INFO
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.progress:
        progress.set_enabled(False)
    if FLAGS.point is not None:
        sweep.run_point(FLAGS.config, FLAGS.workdir, sweep.grid(FLAGS.config)[FLAGS.point])
    else:
        sweep.run_sweep(FLAGS.config, FLAGS.workdir, parallel=FLAGS.parallel,
                        command=_point_command)


if __name__ == "__main__":
    app.run(main)
