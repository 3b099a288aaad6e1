"""Mean and standard deviation of the RGB pixels of a split (the paper's only preprocessing).

    python -m vgg_jax.data.stats --dataset=imagefolder:/path/to/root [--split=train]

prints ``mean_rgb`` and ``std_rgb`` (0-255 scale) to put into a config. ImageNet's are
already the default (``configs/default.py``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vgg_jax.data import sources


def rgb_stats(builder: tfds.core.DatasetBuilder, split: str,
              max_images: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every pixel of (the first ``max_images`` of) ``split``."""
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    if max_images:
        ds = ds.take(max_images)

    def moments(ex):
        image = tf.cast(tf.io.decode_image(ex["image"], channels=3, expand_animations=False),
                        tf.float64)
        pixels = tf.reshape(image, [-1, 3])
        return (tf.cast(tf.shape(pixels)[0], tf.float64), tf.reduce_sum(pixels, 0),
                tf.reduce_sum(tf.square(pixels), 0))

    ds = ds.map(moments, num_parallel_calls=tf.data.AUTOTUNE)
    count, total, total_sq = ds.reduce(
        (tf.constant(0.0, tf.float64), tf.zeros(3, tf.float64), tf.zeros(3, tf.float64)),
        lambda acc, m: (acc[0] + m[0], acc[1] + m[1], acc[2] + m[2]))
    mean = (total / count).numpy()
    return mean, np.sqrt(np.maximum((total_sq / count).numpy() - mean ** 2, 0.0))


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("dataset", None, "vgg_shapes, imagefolder:/path or a TFDS name.")
    flags.DEFINE_string("split", "train", "Split to measure.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
    flags.DEFINE_string("manual_dir", None, "Where manually downloaded archives are.")
    flags.DEFINE_integer("max_images", None, "Measure only the first N images.", lower_bound=1)
    flags.mark_flags_as_required(["dataset"])


def main(argv: Sequence[str]) -> None:
    """CLI: prints ``--config.mean_rgb=... --config.std_rgb=...`` for a split."""
    from absl import flags
    from vgg_jax import cli
    cli.no_arguments(argv)
    f = flags.FLAGS
    builder = sources.get_builder(f.dataset, f.data_dir, f.manual_dir)
    sources.check_splits(builder, [f.split])
    sources.prepare(builder, f.manual_dir)
    mean, std = rgb_stats(builder, f.split, f.max_images)
    print(f"--config.mean_rgb='({mean[0]:.3f}, {mean[1]:.3f}, {mean[2]:.3f})' "
          f"--config.std_rgb='({std[0]:.3f}, {std[1]:.3f}, {std[2]:.3f})'")


if __name__ == "__main__":
    from vgg_jax import cli
    cli.run(main, define_flags)
