"""Winograd F(2x2, 3x3) convolutions (Lavin & Gray, 2016), which need 2.25x fewer
multiplications than a direct 3x3 convolution.

``conv_bias(x, kernel, bias, relu)`` (stride-1 "SAME", NHWC x HWIO, float32): the tile
transforms in C++ (``kernels/winograd.cc``, built and loaded with oneDNN's kernels by
``vgg_jax.compute.onednn``: ``available()``), the 16 products between them XLA's batched
dots; its gradient is the adjoint of the same three steps (a transform of the output
gradient, which also masks the ReLU and sums the bias gradient, two sets of products, a
transform back), so training gets the 2.25x too.
``xla.winograd_conv`` is the same algorithm with every step XLA's.
Each 2x2 output tile reads a 4x4 input tile: the transformed input and output are 4x the
size of the map, so on large maps with few channels the extra memory traffic costs more
than the multiplications save; ``vgg_jax.compute.conv.choose`` picks the layers where it pays.
Results match a direct convolution to float32 rounding (~1e-6 relative).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vgg_jax.compute import onednn  # its library holds the transforms (loaded on first use)
from vgg_jax.compute.xla import kernel_transform

Array = Any


def available() -> bool:
    """Whether the C++ transforms are built and loaded (with oneDNN's kernels)."""
    return onednn.available()


def supports(x_shape, kernel_shape, dtype) -> bool:
    """Whether ``conv_bias`` takes this convolution: float32, a 3x3 kernel, an even map."""
    _, h, w, _ = x_shape
    return (jnp.dtype(dtype) == jnp.float32 and tuple(kernel_shape[:2]) == (3, 3)
            and h % 2 == 0 and w % 2 == 0)


def conv_bias(x: Array, kernel: Array, bias: Array, relu: bool = False) -> Array:
    """``conv(x, kernel) + bias``, then ReLU if ``relu``, by Winograd with C++ transforms
    (``supports`` must hold; XLA's autodiff carries the gradient through the kernel's
    transform)."""
    if not supports(x.shape, kernel.shape, x.dtype):
        raise ValueError(f"Winograd F(2x2, 3x3) here takes float32 3x3 kernels on even maps, "
                         f"not {x.dtype} {x.shape} with a {kernel.shape} kernel.")
    return _transformed(x, kernel_transform(kernel), bias.astype(jnp.float32), bool(relu))


def _forward(x, u, bias, relu):
    n, h, w, c = x.shape
    tiles = n * (h // 2) * (w // 2)
    v = onednn.call("vgg_winograd_input", ((16, tiles, c), jnp.float32), x)
    m = jnp.einsum("spc,sck->spk", v, u)
    y = onednn.call("vgg_winograd_output", ((n, h, w, u.shape[-1]), jnp.float32), m, bias,
                    relu=relu)
    return y, v


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _transformed(x, u, bias, relu):
    return _forward(x, u, bias, relu)[0]


def _transformed_fwd(x, u, bias, relu):
    y, v = _forward(x.value, u.value, bias.value, relu)
    # Statically: which gradients are wanted (not the images'), and y for the ReLU mask.
    wanted = (x.perturbed, u.perturbed or bias.perturbed)
    return y, (v, u.value, y if relu else None, x.value.shape, wanted)


def _transformed_bwd(relu, residuals, dy):
    v, u, y, x_shape, (data, weights) = residuals
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):
        return None, None, None
    dy = dy.astype(jnp.float32)
    k = u.shape[-1]
    dm, dbias = onednn.call("vgg_winograd_output_gradient",
                            [((*v.shape[:2], k), jnp.float32), ((k,), jnp.float32)],
                            dy, dy if y is None else y, relu=relu)
    dx = du = None
    if data:
        dx = onednn.call("vgg_winograd_input_gradient", (x_shape, jnp.float32),
                         jnp.einsum("spk,sck->spc", dm, u))
    if weights:
        du = jnp.einsum("spc,spk->sck", v, dm)
    return dx, du, dbias if weights else None


_transformed.defvjp(_transformed_fwd, _transformed_bwd, symbolic_zeros=True)
