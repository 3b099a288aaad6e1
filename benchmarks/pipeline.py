"""Input-pipeline throughput: the fused decode-and-crop training path against the naive one.

    python benchmarks/pipeline.py [--images 256] [--seconds 20]

Makes ImageNet-sized JPEGs (about 500x375, photo-like: smooth gradients, texture, edges),
then times, side by side in one run, images/s on ONE core (a private tf.data thread pool of
size 1) of
- fused: S jittered in [256, 512], crop window decoded alone (decode_and_crop_jpeg),
  resized to 224, uint8, PCA colour offset and the flip bit (vgg_jax.data.augment, as the
  pipeline; the device mirrors the image while it normalises the batch);
- naive: decode the whole image, rescale to S, crop 224, then the same flip/uint8/colour;
- randaugment: fused, then RandAugment (N, M from --randaugment) on the crop.
(Mean subtraction and the colour offset are applied on the device, not here.)
Appends a row to benchmarks/results/pipeline.md and one to pipeline_randaugment.md.
"""

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_table  # noqa: E402
from vgg_jax.data import augment  # noqa: E402


def photos(n: int, seed: int = 0) -> list[bytes]:
    """JPEG bytes of ``n`` photo-like images of ImageNet's typical size."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (375, 500) if rng.random() < 0.7 else (500, 375)
        yy, xx = np.mgrid[:h, :w] / max(h, w)
        base = np.stack([np.sin(6 * yy + rng.uniform(0, 6)), np.cos(5 * xx + rng.uniform(0, 6)),
                         np.sin(4 * (xx + yy))], -1) * 80 + 128
        image = base + rng.normal(0, 12, (h, w, 3))  # sensor-like texture
        for _ in range(8):  # edges
            y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
            image[y0:y0 + rng.integers(20, 120), x0:x0 + rng.integers(20, 120)] = \
                rng.uniform(0, 255, 3)
        out.append(tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8),
                                     quality=90).numpy())
    return out


def rate(images: list[bytes], fn, seconds: float, threads: int) -> float:
    """Images/s of ``fn(bytes, seed)`` under tf.data with ``threads`` worker threads."""
    ds = tf.data.Dataset.from_tensor_slices(images).repeat().enumerate()
    ds = ds.map(lambda i, b: fn(b, tf.stack([tf.constant(0, tf.int64), i])),
                num_parallel_calls=threads).batch(32).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    it = iter(ds)
    for _ in range(3):
        next(it)
    count, start = 0, time.time()
    while time.time() - start < seconds:
        next(it)
        count += 32
    return count / (time.time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--randaugment", type=lambda v: (int(v.split(",")[0]),
                                                         float(v.split(",")[1])),
                        default=(2, 9.0), help="N,M of the RandAugment rows (default 2,9)")
    args = parser.parse_args()
    images = photos(args.images)
    def finish(image, seed):  # what the pipeline does after the crop: flip, colour, uint8
        seeds = tf.random.experimental.stateless_split(seed, 4)
        image = tf.cond(tf.random.stateless_uniform([], seeds[2]) < 0.5,
                        lambda: tf.image.flip_left_right(image), lambda: image)
        return augment.to_uint8(image), augment.pca_shift(seeds[3], 0.1)

    def fused(b, seed):  # as vgg_jax.data.pipeline: the flip is a bit the device applies
        image = augment.to_uint8(augment.train_image(b, seed, 224, 256, 512, flip=False))
        colour = augment.pca_shift(tf.random.experimental.stateless_split(seed, 4)[3], 0.1)
        return image, augment.flip_draw(seed), colour

    def naive(b, seed):
        return finish(augment.reference_train_crop(b, seed, 224, 256, 512), seed)

    def randaugmented(b, seed):  # fused, then RandAugment on the crop, as the pipeline does
        image = augment.train_image(b, seed, 224, 256, 512, flip=False)
        image = augment.to_uint8(augment.randaugment(image, seed, *args.randaugment))
        colour = augment.pca_shift(tf.random.experimental.stateless_split(seed, 4)[3], 0.1)
        return image, augment.flip_draw(seed), colour

    rows = {}
    for name, fn in (("fused", fused), ("naive", naive), ("randaugment", randaugmented)) * 2:
        rows.setdefault(name, []).append(rate(images, fn, args.seconds / 2, threads=1))
    fused_rate, naive_rate = np.mean(rows["fused"]), np.mean(rows["naive"])
    all_cores = rate(images, fused, args.seconds / 2, threads=os.cpu_count())
    sizes = np.mean([len(b) for b in images]) / 1024
    row = results_table.append_row(
        "pipeline", "Training input pipeline, 224 crops with S in [256, 512]",
        "Images/s on one core (tf.data private pool of 1 thread); fused = decode_and_crop_jpeg "
        "of the crop window, naive = decode all, rescale, crop. Both then flip, round to "
        "uint8 and draw the PCA colour offset (mean subtraction happens on the device).",
        ["fused img/s/core", "naive img/s/core", "ratio", "fused, all cores", "mean JPEG"],
        [f"{fused_rate:.0f}", f"{naive_rate:.0f}", f"{fused_rate / naive_rate:.2f}x",
         f"{all_cores:.0f}", f"{sizes:.0f} KiB"])
    print(row, end="")
    ra_rate = np.mean(rows["randaugment"])
    ra_all = rate(images, randaugmented, args.seconds / 2, threads=os.cpu_count())
    n, m = args.randaugment
    row = results_table.append_row(
        "pipeline_randaugment", "Training input pipeline with RandAugment, 224 crops",
        "Images/s on one core of the fused path above without and with RandAugment "
        "(vgg_jax.data.randaugment: N operations at magnitude M, each applied with "
        "probability 1/2) on the 224 crop, side by side in one run. Target: >= 400 "
        "images/s per core with RandAugment on.",
        ["N, M", "fused img/s/core", "+ RandAugment img/s/core", "ratio",
         "+ RandAugment, all cores"],
        [f"{n}, {m:g}", f"{fused_rate:.0f}", f"{ra_rate:.0f}", f"{ra_rate / fused_rate:.2f}x",
         f"{ra_all:.0f}"])
    print(row, end="")


if __name__ == "__main__":
    main()
