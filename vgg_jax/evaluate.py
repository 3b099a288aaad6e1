"""The paper's evaluation protocols (sections 3.2 and 4), for one checkpoint or an ensemble.

    python -m vgg_jax.evaluate --checkpoint=WORKDIR [--checkpoint=WORKDIR2 ...] \
        [--config=configs/vgg16.py] [--scales=256,384,512] [--protocols=single,dense,...]

Protocols, each averaging soft-max posteriors over the test scales Q and the checkpoints:
- ``single``: rescale to Q, centre crop (what torchvision and Keras report);
- ``dense``: the whole rescaled image through the fully-convolutional net, class score map
  averaged spatially, posteriors averaged with those of the horizontal flip;
- ``multicrop``: a 5x5 grid of crops times 2 flips (50 per scale);
- ``dense+multicrop``: the average of the two.
Dense inputs of any size are padded into a few shapes per scale (their long side rounded up
to a multiple of ``bucket``), with the padding masked out exactly, so each shape compiles once.
The table (protocol, train scale, test scales, top-1 and top-5 error, images, seconds) is
printed and written as JSON and CSV.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.compute.hugepages)
    from vgg_jax.compute import hugepages
    hugepages.restart("vgg_jax.evaluate")

import os

from absl import flags

from vgg_jax import cli
from vgg_jax.inference.evaluate import PROTOCOLS, evaluate, format_table, write_results
from vgg_jax.parallel import distributed
from vgg_jax.training import schema

FLAGS = flags.FLAGS



def define_flags() -> None:
    from ml_collections import config_flags
    flags.DEFINE_multi_string("checkpoint", None, "Training workdir(s); several: an ensemble.")
    config_flags.DEFINE_config_file("config", None, "Config giving the data set and split.")
    flags.DEFINE_list("scales", [], "Test scales Q, e.g. 256,384,512 (default: eval_scale).")
    flags.register_validator("scales", lambda v: all(q.strip().isdigit() for q in v),
                             message="--scales takes whole numbers, e.g. 256,384,512.")
    flags.DEFINE_list("protocols", list(PROTOCOLS), f"Comma-separated protocols: "
                      f"{', '.join(PROTOCOLS)}.")
    flags.register_validator("protocols", lambda v: bool(v) and set(v) <= set(PROTOCOLS),
                             message=f"--protocols takes some of {', '.join(PROTOCOLS)}.")
    flags.DEFINE_string("split", "", "Split to evaluate (default: the config's eval_split).")
    flags.DEFINE_string("out", "", "Directory for results.json/csv (default: CKPT/eval).")
    flags.DEFINE_integer("batch_size", 32, "Crops or dense inputs per batch.", lower_bound=1)
    flags.DEFINE_bool("ema", True, cli.EMA_FLAG_HELP)
    flags.mark_flags_as_required(["checkpoint", "config"])


def main(argv):
    cli.no_arguments(argv)
    config = cli.resolve_config(FLAGS.config)
    schema.check(config)
    distributed.initialize(config)
    scales = [int(q) for q in FLAGS.scales] or None
    rows = evaluate(config, FLAGS.checkpoint, scales, FLAGS.protocols, FLAGS.split or None,
                    FLAGS.batch_size, FLAGS.ema)
    out = FLAGS.out or os.path.join(FLAGS.checkpoint[0], "eval")
    write_results(rows, out)
    print(format_table(rows))
    print(f"written to {out}/results.json and results.csv")


if __name__ == "__main__":
    cli.run(main, define_flags)
