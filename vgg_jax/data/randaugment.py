"""RandAugment (Cubuk et al., 2020) as stateless TensorFlow ops on one training crop.

``N`` operations are drawn uniformly, with replacement, from timm's list of 15 (AutoContrast,
Equalize, Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness,
Sharpness, ShearX, ShearY, TranslateX, TranslateY); each is applied with probability 1/2
(as in timm's ``rand-mM-nN``), at magnitude ``M`` out of 10, with a random sign where the
operation has one. Every operation grows stronger with ``M`` (timm's "increasing" levels:
at M = 10, 30 degrees of rotation, shear 0.3, translation 45% of the side, 4 bits kept,
solarize everything, enhance factors 1 +- 0.9). Geometric operations fill with grey (128).

All draws come from the example's seed, so a resumed run augments exactly as an unbroken
one; the image is float32 in the 0-255 range, in and out.
"""

from __future__ import annotations

import math

import tensorflow as tf

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
       "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
       "TranslateY")
FILL = 128.0
APPLY_PROB = 0.5


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL's ImageEnhance: ``degenerate + factor * (image - degenerate)``, clipped to 0-255."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grey(image: tf.Tensor) -> tf.Tensor:
    return tf.image.rgb_to_grayscale(image)


def _transform(image: tf.Tensor, matrix) -> tf.Tensor:
    """Samples output pixel (x, y) at input ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``."""
    shape = tf.shape(image)[:2]
    transforms = tf.reshape(tf.concat([tf.cast(tf.stack(matrix), tf.float32),
                                       tf.zeros([2])], 0), [1, 8])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transforms, output_shape=shape,
        fill_value=FILL, interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def _rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    theta = degrees * math.pi / 180.0
    cy = (tf.cast(tf.shape(image)[0], tf.float32) - 1) / 2
    cx = (tf.cast(tf.shape(image)[1], tf.float32) - 1) / 2
    cos, sin = tf.cos(theta), tf.sin(theta)
    return _transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                              sin, cos, cy - sin * cx - cos * cy])


def _equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL's ImageOps.equalize, channel by channel."""
    def channel(values):
        values = tf.cast(values, tf.int32)
        hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        lut = (tf.cumsum(hist, exclusive=True) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(lut, 0, 255)
        return tf.where(step == 0, values, tf.gather(lut, values))

    rounded = tf.clip_by_value(tf.round(image), 0, 255)
    return tf.cast(tf.stack([channel(rounded[..., c]) for c in range(3)], -1), tf.float32)


def _autocontrast(image: tf.Tensor) -> tf.Tensor:
    lo = tf.reduce_min(image, axis=[0, 1])
    hi = tf.reduce_max(image, axis=[0, 1])
    scaled = (image - lo) * 255.0 / tf.maximum(hi - lo, 1e-3)
    return tf.where(hi > lo, scaled, image)


def _sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with a 3x3 smoothing (borders left as they are)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    inner = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    degenerate = inner * smooth + (1.0 - inner) * image
    return _blend(degenerate, image, factor)


def _posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    step = tf.pow(2.0, 8.0 - bits)
    return tf.floor(tf.clip_by_value(tf.round(image), 0, 255) / step) * step


def _apply(index: tf.Tensor, image: tf.Tensor, level: float, sign: tf.Tensor) -> tf.Tensor:
    """Operation ``OPS[index]`` at ``level`` = M / 10, signed by ``sign`` (+-1) where it has one."""
    side_y = tf.cast(tf.shape(image)[0], tf.float32)
    side_x = tf.cast(tf.shape(image)[1], tf.float32)
    enhance = 1.0 + 0.9 * level * sign
    shear, shift = 0.3 * level * sign, 0.45 * level * sign
    branches = [
        lambda: _autocontrast(image),
        lambda: _equalize(image),
        lambda: 255.0 - image,
        lambda: _rotate(image, 30.0 * level * sign),
        lambda: _posterize(image, 8.0 - float(int(4 * level))),
        lambda: tf.where(image < 256.0 * (1.0 - level), image, 255.0 - image),
        lambda: tf.where(image < 128.0, tf.minimum(image + 110.0 * level, 255.0), image),
        lambda: _blend(_grey(image), image, enhance),
        lambda: _blend(tf.fill(tf.shape(image), tf.reduce_mean(_grey(image))), image, enhance),
        lambda: _blend(tf.zeros_like(image), image, enhance),
        lambda: _sharpness(image, enhance),
        lambda: _transform(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0]),
        lambda: _transform(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0]),
        lambda: _transform(image, [1.0, 0.0, shift * side_x, 0.0, 1.0, 0.0]),
        lambda: _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, shift * side_y]),
    ]
    out = tf.switch_case(index, branches)
    return tf.ensure_shape(out, image.shape)


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_ops: int, magnitude: float) -> tf.Tensor:
    """``num_ops`` random operations at ``magnitude`` (0-10) on ``image`` (H, W, 3, 0-255).

    ``seed`` is a stateless seed [2]: the same (seed, image) always gives the same result.
    """
    image = tf.cast(image, tf.float32)
    level = float(magnitude) / 10.0
    for seed_i in tf.unstack(tf.random.experimental.stateless_split(seed, max(num_ops, 1))
                             )[:num_ops]:
        op_seed, apply_seed, sign_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed_i, 3))
        index = tf.random.stateless_uniform([], op_seed, 0, len(OPS), tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        applied = tf.random.stateless_uniform([], apply_seed) < APPLY_PROB
        image = tf.cond(applied, lambda: _apply(index, image, level, sign), lambda: image)
    return image


def apply_op(name: str, image: tf.Tensor, magnitude: float, sign: float = 1.0) -> tf.Tensor:
    """One named operation of ``OPS`` (for tests and pictures)."""
    return _apply(tf.constant(OPS.index(name)), tf.cast(image, tf.float32),
                  float(magnitude) / 10.0, tf.constant(sign, tf.float32))
