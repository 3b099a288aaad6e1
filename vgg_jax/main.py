"""Trains and evaluates a VGG net: ``python -m vgg_jax.main --config=configs/vgg16.py --workdir=DIR``.

Any config field can be overridden: ``--config.batch_size=128 --config.dataset=imagefolder:/d``.
Rerunning with the same workdir resumes from its latest checkpoint.

Exit status: 0 when done; 2 after ``error:`` lines (bad input, a field out of its allowed
values, a non-finite loss, a checkpoint that could not be written); 75 when stopped by
SIGTERM after writing a checkpoint (rerun to resume).
"""

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.main")

from absl import flags
from ml_collections import config_flags

import vgg_jax  # noqa: F401  (first: sets XLA and TensorFlow flags before they load)
from vgg_jax import cli
from vgg_jax.parallel import distributed
from vgg_jax.training import schema, train

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard files and logs.")
    config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                    lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.no_arguments(argv)
    config = cli.resolve_config(FLAGS.config)
    schema.check(config)  # before joining other processes or touching a device
    distributed.initialize(config)
    metrics = train.train_and_evaluate(config, FLAGS.workdir)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in metrics.items()))


if __name__ == "__main__":
    cli.run(main, define_flags)
