"""Trains and evaluates a VGG net: ``python -m vgg_jax.main --config=configs/vgg16.py --workdir=DIR``.

Any config field can be overridden: ``--config.batch_size=128 --config.dataset=imagefolder:/d``.
Rerunning with the same workdir resumes from its latest checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

import vgg_jax  # noqa: F401  (sets the fast XLA:CPU flags before JAX starts)
from vgg_jax import train
from vgg_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard files and logs.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    # Orbax reports every file it writes at INFO; keep the log to training progress.
    logging.get_absl_handler().python_handler.addFilter(
        lambda r: r.levelno >= logging.WARNING or "/orbax/" not in r.pathname)
    try:
        metrics = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items()))


if __name__ == "__main__":
    app.run(main)
