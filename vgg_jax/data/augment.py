"""Per-image preprocessing of the paper (section 3.1), as TensorFlow ops on encoded bytes.

Training: isotropic rescale so that the smallest side is S (S fixed, or drawn per image from
[S_min, S_max]), one random crop, random horizontal flip; the images leave as uint8, with
AlexNet's PCA colour shift as a per-image RGB offset, and the device subtracts the mean. The crop is
computed in the original image's coordinates and only that window is decoded
(``tf.io.decode_and_crop_jpeg``) and then resized: the same as rescale-then-crop, at a
fraction of the decoding cost. Evaluation: rescale to Q and take the centre crop, or keep the whole rescaled image
(dense evaluation).

All randomness is stateless and driven by a per-example seed, so a run resumes exactly.
"""

from __future__ import annotations


import tensorflow as tf

from vgg_jax.data import randaugment as _randaugment

# AlexNet's PCA of ImageNet RGB pixels (0-1 scale), as in fb.resnet.torch's transforms.lua.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


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
    # Plain bilinear: the paper's scale range resizes the window by 0.5x-2x at most, where
    # antialiasing changes little and costs a third of the pipeline's time.
    return tf.image.resize(image, (crop, crop), method="bilinear")


def pca_shift(seed: tf.Tensor, std: float) -> tf.Tensor:
    """AlexNet's colour shift for one image: eigvec @ (alpha * eigval), alpha ~ N(0, std).

    An RGB offset (3,) in the 0-255 range, added to every pixel where the batch is
    normalised (on the device, see ``vgg_jax.training.steps.normalize``).
    """
    alpha = tf.random.stateless_normal([3], seed, stddev=std)
    eigval = tf.constant(IMAGENET_PCA_EIGVAL, tf.float32) * 255.0
    return tf.linalg.matvec(tf.constant(IMAGENET_PCA_EIGVEC, tf.float32), alpha * eigval)


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_ops: int, magnitude: float) -> tf.Tensor:
    """RandAugment's N = ``num_ops`` operations at M = ``magnitude`` on a training crop.

    ``seed`` is the example's seed, as ``train_image`` takes it: RandAugment draws from a
    stream of its own, folded out of it.
    """
    ra_seed = tf.random.experimental.stateless_fold_in(seed, 0x5241)
    return _randaugment.randaugment(image, ra_seed, num_ops, magnitude)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Rounds a 0-255 float image to uint8: a quarter of the bytes to move to the device."""
    return tf.saturate_cast(image + 0.5, tf.uint8)


def _inception_window(shape: tf.Tensor, seed: tf.Tensor, area_range=(0.08, 1.0),
                      aspect_range=(3 / 4, 4 / 3)) -> tf.Tensor:
    """A random-resized-crop window [y, x, h, w] (Szegedy et al.'s "inception" crop)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], 0), tf.zeros([0, 0, 4], tf.float32), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=aspect_range, area_range=area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def draw_scale_and_offset(seed: tf.Tensor, scale_min: int, scale_max: int):
    """The per-image draws of the paper's crop: (S, crop offset in [0, 1]^2, flip/colour seeds).

    S is uniform over the integers in [scale_min, scale_max].
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    scale = tf.random.stateless_uniform([], seeds[0], scale_min, scale_max + 1, tf.int32)
    return scale, tf.random.stateless_uniform([2], seeds[1]), seeds


def train_image(image_bytes: tf.Tensor, seed: tf.Tensor, crop: int, scale_min: int,
                scale_max: int, flip: bool = True, crop_mode: str = "scale") -> tf.Tensor:
    """Random-crop, random-flip training image (float32, 0-255 range).

    ``crop_mode="scale"`` is the paper's: S drawn uniformly from the integers in
    [scale_min, scale_max] (a fixed S when they are equal), then a random ``crop`` square;
    ``"inception"`` is the random-resized crop (8%-100% of the area, aspect 3/4-4/3).
    ``seed`` is a stateless seed [2]; ``pca_shift(draw_scale_and_offset(...)[2][3], std)``
    is the same image's colour shift.
    """
    if scale_min < crop or scale_max < scale_min:
        raise ValueError(f"Need crop <= scale_min <= scale_max, got crop {crop}, "
                         f"scale [{scale_min}, {scale_max}].")
    scale, offset, seeds = draw_scale_and_offset(seed, scale_min, scale_max)
    if crop_mode == "scale":
        window = _window(_shape(image_bytes), scale, crop, offset)
    elif crop_mode == "inception":
        window = _inception_window(_shape(image_bytes), seeds[0])
    else:
        raise ValueError(f"Unknown crop_mode {crop_mode!r}; use 'scale' or 'inception'.")
    image = _resize(_decode_window(image_bytes, window), crop)
    if flip:
        image = tf.cond(flip_draw(seed), lambda: tf.image.flip_left_right(image), lambda: image)
    return image


def flip_draw(seed: tf.Tensor) -> tf.Tensor:
    """Whether ``train_image(..., seed, ...)`` flips the image (probability 1/2).

    The input pipeline crops with ``flip=False`` and ships this bit, and the device flips
    while it normalises the batch: free there, a copy of every image here.
    """
    return tf.random.stateless_uniform([], tf.random.experimental.stateless_split(seed, 4)[2]) < 0.5


def reference_train_crop(image_bytes: tf.Tensor, seed: tf.Tensor, crop: int, scale_min: int,
                         scale_max: int) -> tf.Tensor:
    """The naive path of ``train_image`` (no flip or colour shift): decode the whole image,
    rescale it so its smallest side is S, then crop. Same random draws as the fused path.

    Kept to check the fused path against and as the benchmarks' baseline.
    """
    scale, offset, _ = draw_scale_and_offset(seed, scale_min, scale_max)
    image = rescaled_image(image_bytes, scale, antialias=False)  # as the fused path resizes
    size = tf.shape(image)[:2]
    top_left = tf.cast(tf.round(offset * tf.cast(size - crop, tf.float32)), tf.int32)
    return image[top_left[0]:top_left[0] + crop, top_left[1]:top_left[1] + crop]


def eval_image(image_bytes: tf.Tensor, crop: int, scale: int) -> tf.Tensor:
    """Rescale so the smallest side is ``scale`` (Q), centre crop ``crop`` (float32, 0-255)."""
    if scale < crop:
        raise ValueError(f"The test scale Q={scale} is smaller than the crop {crop}.")
    window = _window(_shape(image_bytes), tf.constant(scale), crop, tf.constant([0.5, 0.5]))
    return _resize(_decode_window(image_bytes, window), crop)


def rescaled_image(image_bytes: tf.Tensor, scale: int, antialias: bool = True) -> tf.Tensor:
    """The whole image rescaled so its smallest side is ``scale`` (Q), for dense evaluation."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.cast(tf.round(shape * tf.cast(scale, tf.float32) / tf.reduce_min(shape)), tf.int32)
    return tf.image.resize(image, size, method="bilinear", antialias=antialias)
