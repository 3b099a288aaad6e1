"""Real-data check: train configs/cifar10.py on CIFAR-10 JPEGs and record accuracy and time.

    python benchmarks/cifar10.py [--archive ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz]
        [--workdir /tmp/vgg_cifar10] [--config.num_epochs=40 ...]

Unpacks the archive (once) next to the workdir, trains through ``train_and_evaluate``, then
evaluates the final checkpoint with the paper's dense multi-scale protocol (``--scales``,
flips included) and appends a row (command, epochs, wall time, single-crop and dense test
top-1) to benchmarks/results/cifar10.md.
Not part of the tests: it takes most of an hour on a 2-core CPU.
"""

import os
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import vgg_jax  # noqa: E402,F401  (fast XLA:CPU flags before JAX loads)
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import results_table  # noqa: E402
from vgg_jax.inference import evaluate  # noqa: E402
from vgg_jax.training import train

DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg", "cifar10-jpeg.tar.gz")
flags.DEFINE_string("archive", DEFAULT_ARCHIVE, "cifar10-jpeg.tar.gz")
flags.DEFINE_string("workdir", "/tmp/vgg_cifar10", "Run directory (removed first if --fresh).")
flags.DEFINE_boolean("fresh", True, "Start from scratch rather than resume.")
flags.DEFINE_list("scales", ["32", "36", "40"], "Test scales Q of the dense evaluation.")
config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "cifar10.py"))
FLAGS = flags.FLAGS


def unpack(archive: str, dest: str) -> str:
    """Extracts the archive into ``dest`` once; returns the folder holding train/ and test/."""
    root = os.path.join(dest, "cifar10")
    if not os.path.isdir(os.path.join(root, "test")):
        if not os.path.exists(archive):
            sys.exit(f"error: {archive} not found: pass --archive=PATH/cifar10-jpeg.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return root


def main(argv):
    del argv
    data_root = unpack(FLAGS.archive, os.path.dirname(os.path.abspath(FLAGS.workdir)))
    config = FLAGS.config
    config.dataset = f"imagefolder:{data_root}"
    if FLAGS.fresh and os.path.isdir(FLAGS.workdir):
        subprocess.run(["rm", "-rf", FLAGS.workdir], check=True)
    start = time.time()
    metrics = train.train_and_evaluate(config, FLAGS.workdir)
    minutes = (time.time() - start) / 60
    dense = evaluate.evaluate(config, [FLAGS.workdir], scales=[int(q) for q in FLAGS.scales],
                              protocols=["dense"], batch_size=256)[0]
    total = (time.time() - start) / 60
    row = results_table.append_row(
        "cifar10", "CIFAR-10 (JPEG) with configs/cifar10.py",
        "Wall time includes every evaluation (and building the TFDS records on a first run).",
        ["model", "epochs", "minutes", "test top-1 %", "test images",
         "dense Q", "dense top-1 %", "minutes with dense eval"],
        [f"{config.arch} x{config.width}", f"{config.num_epochs:g}", f"{minutes:.1f}",
         f"{100 * metrics['eval_top1']:.2f}", metrics["eval_count"], "/".join(FLAGS.scales),
         f"{100 - dense['top1_error']:.2f}", f"{total:.1f}"])
    print(row, end="")


if __name__ == "__main__":
    app.run(main)
