"""Soft training targets: label smoothing, mixup and CutMix, on the device inside the train step.

A batch is mixed with itself reversed (as timm's ``Mixup`` does), with one mixing
proportion ``lam`` per batch:

- mixup (Zhang et al., 2018): ``lam * x + (1 - lam) * x[::-1]``, ``lam ~ Beta(a, a)``;
- CutMix (Yun et al., 2019): a box of area ``(1 - lam) * H * W`` (clipped at the borders)
  pasted from ``x[::-1]``, and ``lam`` corrected to the area actually kept.

Targets are mixed in the same proportion after label smoothing, so each is a distribution
over classes. The random numbers come from the step's key, so a resumed run mixes as an
unbroken one would.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Mixing:
    """What the train step does to targets (all off by default: the paper's hard labels)."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0         # probability that a batch is mixed at all
    mix_switch_prob: float = 0.5  # CutMix rather than mixup, when both are on

    @classmethod
    def from_config(cls, config) -> "Mixing":
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def smooth(labels: jnp.ndarray, num_classes: int, smoothing: float) -> jnp.ndarray:
    """One-hot targets with ``smoothing`` spread evenly over all classes (float32)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return onehot * (1.0 - smoothing) + smoothing / num_classes


def cutmix_box(rng: jax.Array, lam: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """A (height, width) mask, 1 inside a box of ``(1 - lam)`` of the area (to the pixel).

    The box has sides ``round(sqrt(1 - lam) * side)`` and a uniformly drawn centre; it is
    clipped at the borders, so its area can be smaller.
    """
    cy_key, cx_key = jax.random.split(rng)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = jnp.round(height * ratio), jnp.round(width * ratio)
    cy = jax.random.randint(cy_key, (), 0, height)
    cx = jax.random.randint(cx_key, (), 0, width)
    top, left = cy - cut_h // 2, cx - cut_w // 2
    y0, y1 = jnp.clip(top, 0, height), jnp.clip(top + cut_h, 0, height)
    x0, x1 = jnp.clip(left, 0, width), jnp.clip(left + cut_w, 0, width)
    ys, xs = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).astype(jnp.float32)


def mix(rng: jax.Array, images: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
        mixing: Mixing) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(images, soft targets, dominant labels) of one device's batch.

    Without mixup and CutMix the images pass unchanged and the dominant labels are the
    labels. The dominant label is the one with the larger share of the image, the label
    that training top-1/top-5 are counted against.
    """
    targets = smooth(labels, num_classes, mixing.label_smoothing)
    if not mixing.mixes:
        return images, targets, labels
    lam, box = mix_draws(rng, mixing, images.shape[1], images.shape[2])
    keep = (1.0 - box)[None, :, :, None]
    lam_mask = lam[None, None, None, None]
    images = jnp.where(box.any(), images * keep + images[::-1] * (1.0 - keep),
                       lam_mask * images + (1.0 - lam_mask) * images[::-1]).astype(images.dtype)
    targets = lam * targets + (1.0 - lam) * targets[::-1]
    return images, targets, jnp.where(lam >= 0.5, labels, labels[::-1])


def mix_draws(rng: jax.Array, mixing: Mixing, height: int, width: int
              ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(lam, CutMix box) of one batch: the box is all zeros for mixup or no mixing.

    For CutMix, ``lam`` is 1 - the box's share of the image; with no mixing it is 1.
    """
    apply_key, switch_key, mixup_key, cutmix_key, box_key = jax.random.split(rng, 5)
    applied = jax.random.uniform(apply_key) < mixing.mix_prob
    if mixing.mixup_alpha > 0 and mixing.cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(switch_key) < mixing.mix_switch_prob
    else:
        use_cutmix = jnp.bool_(mixing.cutmix_alpha > 0)
    mixup_lam = (jax.random.beta(mixup_key, mixing.mixup_alpha, mixing.mixup_alpha)
                 if mixing.mixup_alpha > 0 else jnp.float32(1.0))
    cut_lam = (jax.random.beta(cutmix_key, mixing.cutmix_alpha, mixing.cutmix_alpha)
               if mixing.cutmix_alpha > 0 else jnp.float32(1.0))
    box = cutmix_box(box_key, cut_lam, height, width) * (use_cutmix & applied)
    lam = jnp.where(use_cutmix, 1.0 - box.mean(), mixup_lam)
    return jnp.where(applied, lam, 1.0).astype(jnp.float32), box
