"""Explanations of a trained VGG (``Explainer``): Grad-CAM, saliency, SmoothGrad,
integrated gradients and the dense evaluation's class score map, each one jit-compiled,
batched method; ``colourise`` and ``overlay`` draw them. The command is
``python -m vgg_jax.explain`` (``vgg_jax/explain.py``)."""

from __future__ import annotations

import contextlib
import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax import models
from vgg_jax.errors import UserError
from vgg_jax.inference import evaluate

METHODS = ("gradcam", "saliency", "smoothgrad", "integrated-gradients", "scoremap")
SMOOTHGRAD_SAMPLES = 25
SMOOTHGRAD_NOISE = 0.15  # of the pixel range (255)
IG_STEPS = 64


def default_layer(arch: str) -> str:
    """The last convolution of ``arch`` (``conv5_3`` for VGG-16): Grad-CAM's usual layer."""
    return models.layer_names(arch)[-1]


def check_layer(arch: str, layer: str) -> None:
    """``UserError`` unless ``layer`` is a spatial layer of ``arch`` (a conv, LRN or pool)."""
    spatial = models.feature_names(arch, include_top=False)
    if layer not in spatial:
        raise UserError(f"no layer {layer!r} in {arch} to explain with: use one of "
                        f"{', '.join(spatial)}.")


class Explainer:
    """The methods of this module for one net (a ``vgg_jax.inference.evaluate.Net`` or its parts)."""

    def __init__(self, model: models.VGG, variables: dict, mean_rgb: Sequence[float],
                 std_rgb: Sequence[float]):
        self.model, self.variables = model, variables
        self.mean = jnp.asarray(mean_rgb, jnp.float32)
        self.std = jnp.asarray(std_rgb, jnp.float32)

    @classmethod
    def of(cls, net: evaluate.Net) -> "Explainer":
        """The explainer of a loaded net (``evaluate.Net.load(checkpoint)``)."""
        return cls(net.model, net.variables, net.record.mean_rgb, net.record.std_rgb)

    def _logits(self, pixels, delta=None, layer: Optional[str] = None):
        """Logits of pixel images; ``delta`` is added to ``layer``'s activation on the way.

        Returns (logits, that layer's activation).
        """
        def add_delta(next_fun, args, kwargs, context):
            if context.method_name == "_record" and args[0] == layer:
                return next_fun(args[0], args[1] + delta)
            return next_fun(*args, **kwargs)

        x = (pixels - self.mean) / self.std
        with nn.intercept_methods(add_delta) if layer else contextlib.nullcontext():
            logits, state = self.model.apply(self.variables, x, mutable=["intermediates"])
        acts = state["intermediates"]["layers"][layer] if layer else None
        return logits.astype(jnp.float32), acts

    def _class_logit_sum(self, pixels, classes):
        logits, _ = self._logits(pixels)
        return jnp.take_along_axis(logits, classes[:, None], axis=1).sum()

    def predicted(self, pixels) -> jax.Array:
        """The most probable class of each image."""
        return _jit_predicted(self, jnp.asarray(pixels, jnp.float32))

    def _classes(self, pixels, classes):
        if classes is None:
            return self.predicted(pixels)
        classes = jnp.asarray(classes, jnp.int32)
        return jnp.broadcast_to(classes, (len(pixels),))

    def gradcam(self, pixels, classes=None, layer: Optional[str] = None) -> jax.Array:
        """Grad-CAM maps (N, H, W) >= 0 of ``layer`` (default: the last convolution)."""
        layer = layer or default_layer(self.model.arch)
        check_layer(self.model.arch, layer)
        pixels = jnp.asarray(pixels, jnp.float32)
        return _jit_gradcam(self, pixels, self._classes(pixels, classes), layer)

    def saliency(self, pixels, classes=None) -> jax.Array:
        """max over channels of |d logit / d pixel|, (N, H, W)."""
        pixels = jnp.asarray(pixels, jnp.float32)
        return _jit_saliency(self, pixels, self._classes(pixels, classes))

    def smoothgrad(self, pixels, classes=None, samples: int = SMOOTHGRAD_SAMPLES,
                   noise: float = SMOOTHGRAD_NOISE, seed: int = 0) -> jax.Array:
        """Saliency averaged over ``samples`` copies with Gaussian noise, (N, H, W)."""
        pixels = jnp.asarray(pixels, jnp.float32)
        return _jit_smoothgrad(self, pixels, self._classes(pixels, classes),
                               jax.random.key(seed), samples, noise * 255.0)

    def integrated_gradients(self, pixels, classes=None, baseline=None,
                             steps: int = IG_STEPS) -> jax.Array:
        """Attributions (N, H, W, 3) along the path from ``baseline`` (default black)."""
        pixels = jnp.asarray(pixels, jnp.float32)
        baseline = jnp.zeros_like(pixels) if baseline is None else jnp.asarray(baseline,
                                                                                jnp.float32)
        return _jit_integrated(self, pixels, baseline, self._classes(pixels, classes), steps)

    def scoremap(self, pixels, classes=None) -> jax.Array:
        """The dense score map's posterior of each image's class, at pixel resolution."""
        pixels = jnp.asarray(pixels, jnp.float32)
        crop = 32 * models.fc6_window(self.model.arch, self.variables["params"])
        if min(pixels.shape[1:3]) < crop:
            raise UserError(f"the score map needs images of at least {crop}x{crop} (the "
                            f"net's crop); got {pixels.shape[1]}x{pixels.shape[2]}.")
        return _jit_scoremap(self, pixels, None if classes is None else
                             jnp.broadcast_to(jnp.asarray(classes, jnp.int32), (len(pixels),)),
                             crop)

    def explain(self, method: str, pixels, classes=None, layer: Optional[str] = None):
        """The maps (N, H, W) of ``method`` (one of ``METHODS``)."""
        if method == "gradcam":
            return self.gradcam(pixels, classes, layer)
        if method == "integrated-gradients":
            return jnp.abs(self.integrated_gradients(pixels, classes)).sum(-1)
        if method in ("saliency", "smoothgrad", "scoremap"):
            return getattr(self, method)(pixels, classes)
        raise UserError(f"unknown method {method!r}: use one of {', '.join(METHODS)}.")

    # Explainers are static arguments of the jitted functions below, compared by identity.
    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


@functools.partial(jax.jit, static_argnums=0)
def _jit_predicted(self: Explainer, pixels):
    return jnp.argmax(self._logits(pixels)[0], axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _jit_gradcam(self: Explainer, pixels, classes, layer):
    def class_logits(delta):
        logits, acts = self._logits(pixels, delta, layer)
        return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), acts

    shape = jax.eval_shape(class_logits, 0.0)[1]
    grads, acts = jax.grad(class_logits, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    weights = grads.mean(axis=(1, 2))  # alpha_k: one weight per channel
    cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", acts, weights))
    return jax.image.resize(cam, pixels.shape[:3], "bilinear")


def _saliency_of(self: Explainer, pixels, classes):
    return jnp.abs(jax.grad(self._class_logit_sum)(pixels, classes)).max(axis=-1)


_jit_saliency = jax.jit(_saliency_of, static_argnums=0)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jit_smoothgrad(self: Explainer, pixels, classes, key, samples, sigma):
    def one(total, k):
        noisy = pixels + sigma * jax.random.normal(k, pixels.shape)
        return total + _saliency_of(self, noisy, classes), None

    total, _ = jax.lax.scan(one, jnp.zeros(pixels.shape[:3]), jax.random.split(key, samples))
    return total / samples


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jit_integrated(self: Explainer, pixels, baseline, classes, steps):
    grad = jax.grad(self._class_logit_sum)
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.full(steps + 1, 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps)

    def one(total, aw):
        a, w = aw
        return total + w * grad(baseline + a * (pixels - baseline), classes), None

    mean_grad, _ = jax.lax.scan(one, jnp.zeros_like(pixels), (alphas, weights))
    return (pixels - baseline) * mean_grad


@functools.partial(jax.jit, static_argnums=(0, 3))
def _jit_scoremap(self: Explainer, pixels, classes, crop):
    x = (pixels - self.mean) / self.std
    scores = self.model.apply(self.variables, x, dense=True, return_map=True)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)  # (N, h', w', classes)
    if classes is None:
        classes = jnp.argmax(probs.mean(axis=(1, 2)), axis=-1)
    maps = jnp.take_along_axis(probs, classes[:, None, None, None], axis=-1)[..., 0]
    # Position (i, j) sees the crop at (32 i, 32 j): spread the map over the crops' centres.
    n, h, w = pixels.shape[:3]
    span = (n, maps.shape[1] * 32, maps.shape[2] * 32)
    inner = jax.image.resize(maps, span, "bilinear")
    top, left = (crop - 32) // 2, (crop - 32) // 2
    return jnp.pad(inner, ((0, 0), (top, h - span[1] - top), (left, w - span[2] - left)),
                   mode="edge")


TURBO_ANCHORS = np.array([[48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 152],
                          [164, 252, 60], [237, 208, 58], [251, 128, 34], [208, 47, 5],
                          [122, 4, 3]], np.float32)  # Google's Turbo colour map, 9 stops


def colourise(heat: np.ndarray) -> np.ndarray:
    """A (H, W) map, scaled to its own range, as Turbo colours (H, W, 3) uint8."""
    heat = np.asarray(heat, np.float32)
    span = heat.max() - heat.min()
    t = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    pos = t * (len(TURBO_ANCHORS) - 1)
    low = np.clip(np.floor(pos).astype(int), 0, len(TURBO_ANCHORS) - 2)
    frac = (pos - low)[..., None]
    rgb = TURBO_ANCHORS[low] * (1 - frac) + TURBO_ANCHORS[low + 1] * frac
    return rgb.astype(np.uint8)


def overlay(photo: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The photo (H, W, 3) uint8 and, beside it, the heat map blended over it."""
    blend = (1 - alpha) * photo.astype(np.float32) + alpha * colourise(heat)
    gap = np.full((photo.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([photo, gap, blend.astype(np.uint8)], axis=1)
