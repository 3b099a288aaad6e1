"""Top-5 classes of image files under a checkpoint: the images rescaled as the checkpoint
expects (``rescaled``), its class names (``class_names``) and ``predict``. The command is
``python -m vgg_jax.predict`` (``vgg_jax/predict.py``)."""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from vgg_jax.data import augment
from vgg_jax.errors import UserError
from vgg_jax.inference import evaluate
from vgg_jax.store.record import ModelRecord

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
