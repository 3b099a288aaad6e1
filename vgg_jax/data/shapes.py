"""``vgg_shapes``: the built-in data set, so that training runs with nothing downloaded.

Ten classes of shapes drawn procedurally on cluttered backgrounds, JPEG-encoded at 64x64.
Each image varies the shape's position, scale, rotation and colour, and the background's
gradient, noise and distractor strokes, so a classifier has to learn the shape itself.
Example ``i`` of a split is drawn from a generator seeded by (split, i): the data set is
the same on every machine. TFDS builds it into its data directory on first use.
"""

from __future__ import annotations

import io
import math

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "ring", "square", "frame", "triangle", "star", "plus", "crescent",
           "hourglass", "arrow")
IMAGE_SIZE = 64
SPLIT_SIZES = {"train": 10_000, "validation": 2_000}
_SPLIT_SEEDS = {"train": 1, "validation": 2}


def _rotate(points, angle, cx, cy):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _shape_polygons(name: str, r: float) -> list[list[tuple[float, float]]]:
    """Polygons (centred at 0) outlining the class ``name`` at radius ``r``."""
    if name == "square":
        return [[(-r, -r), (r, -r), (r, r), (-r, r)]]
    if name == "triangle":
        return [[(0, -r), (r * 0.95, r * 0.7), (-r * 0.95, r * 0.7)]]
    if name == "star":
        return [[(r * (1 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                  -r * (1 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5))
                 for k in range(10)]]
    if name == "plus":
        t = r * 0.33
        return [[(-t, -r), (t, -r), (t, r), (-t, r)], [(-r, -t), (r, -t), (r, t), (-r, t)]]
    if name == "hourglass":
        return [[(-r, -r), (r, -r), (0, 0)], [(-r, r), (r, r), (0, 0)]]
    if name == "arrow":
        t = r * 0.3
        return [[(-r, -t), (0.1 * r, -t), (0.1 * r, -r * 0.8), (r, 0), (0.1 * r, r * 0.8),
                 (0.1 * r, t), (-r, t)]]
    raise KeyError(name)


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float,
                angle: float, colour: tuple, background: tuple) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r * 0.3)))
    elif name == "frame":
        poly = _rotate(_shape_polygons("square", r)[0], angle, cx, cy)
        draw.polygon(poly, outline=colour, width=max(2, int(r * 0.3)))
    elif name == "crescent":
        draw.ellipse(box, fill=colour)
        dx, dy = 0.55 * r * math.cos(angle), 0.55 * r * math.sin(angle)
        draw.ellipse((cx - r + dx, cy - r + dy, cx + r + dx, cy + r + dy), fill=background)
    else:
        for poly in _shape_polygons(name, r):
            draw.polygon(_rotate(poly, angle, cx, cy), fill=colour)


def render(label: int, seed: int) -> np.ndarray:
    """Draws one RGB uint8 image of class ``label`` from ``seed``."""
    return render_with_box(label, seed)[0]


def render_with_box(label: int, seed: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """``render``'s image and the box (x0, y0, x1, y1) in pixels that holds the shape."""
    rng = np.random.default_rng(seed)
    n = IMAGE_SIZE
    # Background: a random two-colour gradient, plus noise added after drawing.
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, n)[:, None, None]
    grad = c0 * (1 - t) + c1 * t
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)
    base = np.broadcast_to(grad, (n, n, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(base))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):  # distractor strokes
        pts = rng.uniform(0, n, 4)
        draw.line(list(pts), fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
                  width=int(rng.integers(1, 3)))
    mean_bg = tuple(int(v) for v in (c0 + c1) / 2)
    while True:  # a foreground colour that stands out from the background
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - (c0 + c1) / 2).sum() > 150:
            break
    r = rng.uniform(0.2, 0.4) * n
    cx, cy = rng.uniform(r, n - r, 2)
    name = CLASSES[label]
    angle = rng.uniform(-math.pi / 9, math.pi / 9) if name in ("square", "frame", "plus",
                                                                 "hourglass") \
        else rng.uniform(0, 2 * math.pi)
    _draw_shape(draw, name, cx, cy, r, angle, tuple(int(v) for v in colour), mean_bg)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, rng.uniform(2, 12), (n, n, 3))
    return np.clip(arr, 0, 255).astype(np.uint8), (cx - r, cy - r, cx + r, cy + r)


def example(split: str, index: int) -> tuple[np.ndarray, int, tuple[float, ...]]:
    """Example ``index`` of ``split`` before JPEG encoding: (image, label, shape's box)."""
    label = index % len(CLASSES)
    image, box = render_with_box(label, seed=_SPLIT_SEEDS[split] * 10_000_019 + index)
    return image, label, box


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class VggShapes(tfds.core.GeneratorBasedBuilder):
    """Ten procedurally drawn shape classes on cluttered backgrounds (64x64 JPEG)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                             encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=CLASSES),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split: str):
        for i in range(SPLIT_SIZES[split]):
            image, label, _ = example(split, i)
            yield i, {"image": encode_jpeg(image), "label": label}
