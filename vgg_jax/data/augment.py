"""Per-image preprocessing of the paper (section 3.1), as TensorFlow ops on encoded bytes.

Training: isotropic rescale so that the smallest side is S (S fixed, or drawn per image from
[S_min, S_max]), one random crop, random horizontal flip, mean-RGB subtraction. The crop is
computed in the original image's coordinates and only that window is decoded
(``tf.io.decode_and_crop_jpeg``) and then resized: the same as rescale-then-crop, at a
fraction of the decoding cost. Evaluation: rescale to Q and take the centre crop.

All randomness is stateless and driven by a per-example seed, so a run resumes exactly.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


def _shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """(height, width) of an encoded image without decoding JPEG pixels."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.extract_jpeg_shape(image_bytes)[:2],
        lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3,
                                            expand_animations=False))[:2])


def _decode_window(image_bytes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Decodes only ``window`` = [y, x, h, w] of the image, as RGB uint8."""
    def plain():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return tf.cond(tf.io.is_jpeg(image_bytes),
                   lambda: tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3),
                   plain)


def _window(shape: tf.Tensor, scale: tf.Tensor, crop: int, offset_frac: tf.Tensor) -> tf.Tensor:
    """The original-image window that becomes a ``crop`` square after rescaling to ``scale``.

    ``scale`` is the target smallest side; ``offset_frac`` in [0, 1]^2 places the window.
    """
    shape_f = tf.cast(shape, tf.float32)
    factor = tf.cast(scale, tf.float32) / tf.reduce_min(shape_f)
    size = tf.minimum(tf.cast(tf.round(crop / factor), tf.int32), tf.reduce_min(shape))
    size = tf.maximum(size, 1)
    offset = tf.cast(tf.round(offset_frac * tf.cast(shape - size, tf.float32)), tf.int32)
    return tf.stack([offset[0], offset[1], size, size])


def _resize(image: tf.Tensor, crop: int) -> tf.Tensor:
    return tf.image.resize(tf.cast(image, tf.float32), (crop, crop), method="bilinear",
                           antialias=True)


def normalize(image: tf.Tensor, mean_rgb: Sequence[float], std_rgb: Sequence[float]) -> tf.Tensor:
    """(image - mean) / std per channel, in float32."""
    return (image - tf.constant(mean_rgb, tf.float32)) / tf.constant(std_rgb, tf.float32)


def train_image(image_bytes: tf.Tensor, seed: tf.Tensor, crop: int, scale_min: int,
                scale_max: int, flip: bool = True) -> tf.Tensor:
    """Random-scale, random-crop, random-flip training image (float32, 0-255 range).

    ``seed`` is a stateless seed of shape [2]; S is drawn uniformly from the integers in
    [scale_min, scale_max] (a fixed S when they are equal).
    """
    if scale_min < crop or scale_max < scale_min:
        raise ValueError(f"Need crop <= scale_min <= scale_max, got crop {crop}, "
                         f"scale [{scale_min}, {scale_max}].")
    seeds = tf.random.experimental.stateless_split(seed, 3)
    scale = tf.random.stateless_uniform([], seeds[0], scale_min, scale_max + 1, tf.int32)
    offset = tf.random.stateless_uniform([2], seeds[1])
    window = _window(_shape(image_bytes), scale, crop, offset)
    image = _resize(_decode_window(image_bytes, window), crop)
    if flip:
        image = tf.cond(tf.random.stateless_uniform([], seeds[2]) < 0.5,
                        lambda: tf.image.flip_left_right(image), lambda: image)
    return image


def eval_image(image_bytes: tf.Tensor, crop: int, scale: int) -> tf.Tensor:
    """Rescale so the smallest side is ``scale`` (Q), centre crop ``crop`` (float32, 0-255)."""
    if scale < crop:
        raise ValueError(f"The test scale Q={scale} is smaller than the crop {crop}.")
    window = _window(_shape(image_bytes), tf.constant(scale), crop, tf.constant([0.5, 0.5]))
    return _resize(_decode_window(image_bytes, window), crop)
