"""Top-5 classes of image files under a trained or converted checkpoint.

    python -m vgg_jax.predict --checkpoint DIR [--protocol single|dense|multicrop]
        [--scales 256,384] IMAGE [IMAGE ...]

Each image is preprocessed as the checkpoint expects (its stored mean and std, test scale Q
and crop) and evaluated under one of the paper's protocols (see ``vgg_jax.evaluate``).
Class names come with the checkpoint (image-folder runs) or, for 1000-class ImageNet nets,
with the package. A file that cannot be read as an image is reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from vgg_jax import evaluate
from vgg_jax.data import augment
from vgg_jax.errors import UserError

IMAGENET_CLASSES = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")


def class_names(meta: dict) -> list[str]:
    """Human-readable names of the checkpoint's classes."""
    names = meta.get("class_names") or []
    n = meta["num_classes"]
    if n == 1000 and (not names or all(re.fullmatch(r"n\d{8}", s) for s in names)):
        with open(IMAGENET_CLASSES) as f:  # ImageNet's synsets in their usual order
            return [line.strip() for line in f]
    return list(names) if len(names) == n else [f"class {i}" for i in range(n)]


def rescaled(path: str, scales: Sequence[int]) -> dict[int, np.ndarray]:
    """{Q: the image at ``path`` rescaled so its smallest side is Q}; UserError if unreadable."""
    try:
        data = tf.io.read_file(path)
        return {q: augment.rescaled_image(data, q).numpy() for q in scales}
    except (tf.errors.OpError, OSError) as e:
        message = getattr(e, "message", str(e)).split("\n")[0]
        raise UserError(f"{path}: not a readable image ({message}).") from None


def predict(net: evaluate.Net, images: Sequence[dict[int, np.ndarray]],
            protocol: str = "single", top: int = 5, batch_size: int = 8) -> list[list[tuple]]:
    """Per image, the ``top`` (class index, probability) pairs, most probable first."""
    meta = net.meta
    evaluator = evaluate.Evaluator([net], [protocol], sorted(images[0]) if images else [],
                                   meta["image_size"], meta["mean_rgb"], meta["std_rgb"],
                                   len(images), batch_size)
    for i, image in enumerate(images):
        evaluator.add(i, image)
    probs = evaluator.results()[protocol]
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    return [[(int(c), float(p[c])) for c in row] for p, row in zip(probs, order)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a training workdir or convert --out")
    parser.add_argument("--protocol", default="single", choices=evaluate.PROTOCOLS)
    parser.add_argument("--scales", default="", help="test scales Q (default: the checkpoint's)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    try:
        meta = evaluate.read_meta(args.checkpoint)
        if not meta.get("include_top", True):
            raise UserError(f"{args.checkpoint} holds a net without its classifier (no fc6-8): "
                            f"it extracts features but cannot predict classes.")
        scales = [int(q) for q in args.scales.split(",")] if args.scales else [meta["eval_scale"]]
        evaluate.check_protocols([args.protocol], scales, meta["image_size"])
    except (UserError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    images, paths, failed = [], [], 0
    for path in args.images:
        try:
            images.append(rescaled(path, scales))
            paths.append(path)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if images:
        names = class_names(meta)
        net = evaluate.Net.load(args.checkpoint)
        for path, best in zip(paths, predict(net, images, args.protocol, args.top)):
            print(f"{path} ({args.protocol}, Q={','.join(map(str, scales))})")
            for c, p in best:
                print(f"  {p:.4f}  {names[c]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
