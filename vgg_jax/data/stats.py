"""Mean and standard deviation of the RGB pixels of a split (the paper's only preprocessing).

    python -m vgg_jax.data.stats --dataset=imagefolder:/path/to/root [--split=train]

prints ``mean_rgb`` and ``std_rgb`` (0-255 scale) to put into a config. ImageNet's are
already the default (``configs/default.py``).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vgg_jax.data import sources
from vgg_jax.errors import UserError


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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--max_images", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        builder = sources.get_builder(args.dataset, args.data_dir, args.manual_dir)
        sources.check_splits(builder, [args.split])
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    sources.prepare(builder, args.manual_dir)
    mean, std = rgb_stats(builder, args.split, args.max_images)
    print(f"--config.mean_rgb='({mean[0]:.3f}, {mean[1]:.3f}, {mean[2]:.3f})' "
          f"--config.std_rgb='({std[0]:.3f}, {std[1]:.3f}, {std[2]:.3f})'")


if __name__ == "__main__":
    main()
