"""Receptive fields of a VGG net: the geometric one per layer, and the effective one measured.

- ``fields(arch)``: the side of the input square each layer's unit sees, from the spec alone
  (a k x k convolution widens it by (k - 1) x the product of the strides before it, a 2x2
  pooling by 1 x that product).
- ``block_table(arch)``: per block, its receptive field, weights, multiply-accumulates and
  ReLUs (what section 2.3 weighs: three 3x3 layers against one 7x7).
- ``effective_field(model, variables, images, layer)``: the gradient of the centre unit of
  ``layer`` with respect to the input, in absolute value, summed over channels and averaged
  over images (Luo et al., 2016): where the net actually looks, which is more concentrated
  than the geometric field.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax import models


def fields(arch: str) -> dict[str, int]:
    """{layer: receptive field side in input pixels} for every convolution and pooling."""
    field, jump, out = 1, 1, {}
    for layer in models.get_spec(arch).layers():
        if layer.kind == "conv":
            field += (layer.kernel - 1) * jump
        elif layer.kind == "pool":
            field += jump
            jump *= 2
        else:
            continue  # LRN looks across channels only
        out[layer.name] = field
    return out


def block_table(arch: str, image_size: int = 224) -> list[dict]:
    """Per block: receptive field of its last convolution, weights, MACs and ReLUs."""
    rows = models.summary(models.create_model(arch), image_size)
    field = fields(arch)
    convs = models.get_spec(arch).convs()
    table = []
    for b in sorted({layer.block for layer in convs}):
        block = [layer for layer in convs if layer.block == b]
        names = {layer.name for layer in block}
        layers = [r for r in rows if r["name"] in names]
        table.append({"block": b, "kernels": "+".join(f"{c.kernel}x{c.kernel}" for c in block),
                      "field": field[block[-1].name],
                      "params": sum(r["params"] for r in layers),
                      "macs": sum(r["macs"] for r in layers), "relus": len(layers)})
    return table


def effective_field(model: models.VGG, variables: Mapping, images: jnp.ndarray,
                    layer: str) -> np.ndarray:
    """Mean over images of |d (centre unit of ``layer``, summed over channels) / d input|,
    summed over colour channels: an (H, W) map, normalised to sum to 1."""

    def centre(image):
        feat = models.extract_features(model, variables, image[None], [layer])[layer]
        return feat[0, feat.shape[1] // 2, feat.shape[2] // 2].sum()

    grads = jax.jit(jax.vmap(jax.grad(centre)))(images)
    erf = np.asarray(jnp.abs(grads).sum(-1).mean(0), np.float64)
    return erf / max(erf.sum(), 1e-30)


def spread(erf: np.ndarray) -> float:
    """The standard deviation (pixels) of an effective field around its centre of mass: one
    number for how widely a unit looks."""
    h, w = erf.shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = (erf * yy).sum(), (erf * xx).sum()
    return float(np.sqrt((erf * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum()))
