"""Top-5 classes of image files under a trained or converted checkpoint.

    python -m vgg_jax.predict --checkpoint DIR [--protocol single|dense|multicrop]
        [--scales 256,384] IMAGE [IMAGE ...]

Each image is preprocessed as the checkpoint expects (its stored mean and std, test scale Q
and crop) and evaluated under one of the paper's protocols (see ``vgg_jax.evaluate``).
Class names come with the checkpoint (image-folder runs) or, for 1000-class ImageNet nets,
with the package. A file that cannot be read as an image is reported and skipped.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before anything heavy loads (vgg_jax.hugepages)
    from vgg_jax import hugepages
    hugepages.restart()

import os
import re
import sys
from typing import Sequence

import numpy as np
import tensorflow as tf

from vgg_jax import evaluate
from vgg_jax.data import augment
from vgg_jax.errors import UserError
from vgg_jax.record import ModelRecord

IMAGENET_CLASSES = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")


def class_names(record: ModelRecord) -> list[str]:
    """Human-readable names of the checkpoint's classes."""
    names, n = record.class_names, record.num_classes
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
    record = net.record
    evaluator = evaluate.Evaluator([net], [protocol], sorted(images[0]) if images else [],
                                   record.image_size, record.mean_rgb, record.std_rgb,
                                   len(images), batch_size)
    for i, image in enumerate(images):
        evaluator.add(i, image)
    probs = evaluator.results()[protocol]
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    return [[(int(c), float(p[c])) for c in row] for p, row in zip(probs, order)]


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("checkpoint", None, "A training workdir or convert --out.")
    flags.DEFINE_enum("protocol", "single", list(evaluate.PROTOCOLS), "Test protocol.")
    flags.DEFINE_list("scales", [], "Test scales Q (default: the checkpoint's eval_scale).")
    flags.register_validator("scales", lambda v: all(q.strip().isdigit() for q in v),
                             message="--scales takes whole numbers, e.g. 256,384.")
    flags.DEFINE_integer("top", 5, "How many classes to print per image.", lower_bound=1)
    flags.DEFINE_bool("ema", True, evaluate.EMA_FLAG_HELP)
    flags.mark_flags_as_required(["checkpoint"])


def main(argv: Sequence[str]) -> int:
    """CLI: ``python -m vgg_jax.predict --checkpoint DIR IMAGE...``; 1 if an image failed."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) < 2:
        raise UserError("give one or more image files after the flags.")
    record = evaluate.read_record(f.checkpoint)
    if not record.include_top:
        raise UserError(f"{f.checkpoint} holds a net without its classifier (no fc6-8): "
                        f"it extracts features but cannot predict classes.")
    scales = [int(q) for q in f.scales] or [record.eval_scale]
    evaluate.check_protocols([f.protocol], scales, record.image_size)
    images, paths, failed = [], [], 0
    for path in argv[1:]:
        try:
            images.append(rescaled(path, scales))
            paths.append(path)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if images:
        names = class_names(record)
        net = evaluate.Net.load(f.checkpoint, f.ema)
        for path, best in zip(paths, predict(net, images, f.protocol, f.top)):
            print(f"{path} ({f.protocol}, Q={','.join(map(str, scales))})")
            for c, p in best:
                print(f"  {p:.4f}  {names[c]}")
    return 1 if failed else 0


if __name__ == "__main__":
    from vgg_jax import cli
    cli.run(main, define_flags)
