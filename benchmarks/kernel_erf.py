"""Effective receptive fields of the kernel study's trained nets (B against B-5x5, D against D-7x7).

    python benchmarks/kernel_erf.py --workdir runs/kernel --images /tmp/vgg_cifar10/cifar10/test

For each pair, the gradient of block 3's centre unit (B: conv3_2, two 3x3; B-5x5: conv3_1,
one 5x5; D: conv3_3; D-7x7: conv3_1 - equal geometric fields) with respect to the input,
averaged over test images (``vgg_jax.models.receptive.effective_field``), for the trained net of
seed 0 and for the same net freshly initialised. Writes
benchmarks/results/ablations/kernel/erf.npz (the trained fields, which the architecture
notebook shows) and erf.png, and prints each field's spread in pixels.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import vgg_jax  # noqa: E402,F401
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vgg_jax.inference import evaluate  # noqa: E402
from vgg_jax.models import receptive

NETS = (("B", "B-seed0", "conv3_2"), ("B-5x5", "B-5x5-seed0", "conv3_1"),
        ("D", "D-seed0", "conv3_3"), ("D-7x7", "D-7x7-seed0", "conv3_1"))
OUT = os.path.join(HERE, "results", "ablations", "kernel")


def load_images(folder: str, count: int, size: int) -> np.ndarray:
    """The first ``count`` images (sorted paths, all classes) resized to size x size."""
    paths = sorted(glob.glob(os.path.join(folder, "*", "*")))[::max(1, 10_000 // count)][:count]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR),
                                np.float32) for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the kernel sweep's folder")
    parser.add_argument("--images", required=True, help="a split folder: <class>/*.jpg")
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    fields, rows = {}, []
    for label, run, layer in NETS:
        path = os.path.join(args.workdir, run)
        if not os.path.isdir(os.path.join(path, "checkpoints")):
            print(f"{label}: no checkpoint in {path}, skipped")
            continue
        net = evaluate.Net.load(path)
        images = load_images(args.images, args.count, net.record.image_size)
        x = (images - np.asarray(net.record.mean_rgb)) / np.asarray(net.record.std_rgb)
        trained = receptive.effective_field(net.model, net.variables, x, layer)
        fresh = receptive.effective_field(net.model, net.model.init(jax.random.key(0), x[:1]),
                                          x, layer)
        fields[label] = trained
        rows.append((label, layer, receptive.fields(net.record.arch)[layer],
                     receptive.spread(fresh), receptive.spread(trained)))
        fields[f"{label}_init"] = fresh
    os.makedirs(OUT, exist_ok=True)
    np.savez(os.path.join(OUT, "erf.npz"), **{k: v for k, v in fields.items()
                                                if not k.endswith("_init")})
    print("| net | layer | geometric field | ERF spread at init (px) | trained (px) |")
    print("|---|---|---|---|---|")
    for label, layer, geometric, s0, s1 in rows:
        print(f"| {label} | {layer} | {geometric} | {s0:.2f} | {s1:.2f} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r[0] for r in rows]
    fig, axes = plt.subplots(2, len(labels), figsize=(3 * len(labels), 6), squeeze=False)
    for j, label in enumerate(labels):
        for i, (key, when) in enumerate(((f"{label}_init", "init"), (label, "trained"))):
            axes[i, j].imshow(fields[key], cmap="magma")
            axes[i, j].set_title(f"{label}, {when}", fontsize=9)
            axes[i, j].axis("off")
    fig.suptitle("Effective receptive field of block 3's centre unit (64x64 CIFAR-10 test images)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "erf.png"), dpi=110)


if __name__ == "__main__":
    main()
