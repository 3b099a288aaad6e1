"""Winograd F(2x2, 3x3) convolutions (Lavin & Gray, 2016), which need 2.25x fewer
multiplications than a direct 3x3 convolution.

Two implementations of one algorithm, both stride-1 "SAME", NHWC x HWIO, float32:
- ``conv_bias(x, kernel, bias, relu)``: the tile transforms in C++ (``kernels/winograd.cc``,
  built and loaded with oneDNN's kernels by ``vgg_jax.compute.onednn``: ``available()``), the 16
  products between them XLA's batched dots; its gradient is the adjoint of the same three
  steps (a transform of the output gradient, which also masks the ReLU and sums the bias
  gradient, two sets of products, a transform back), so training gets the 2.25x too;
- ``xla_conv(x, kernel)``: every step XLA's (any CPU or accelerator; its input gradient is
  itself a Winograd convolution, its kernel gradient XLA's direct one).
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
import numpy as np

from vgg_jax.compute import onednn  # its library holds the transforms  it loads lazily, on first use 

Array = Any

# F(2, 3): y = A^T [(G g G^T) * (B^T d B)] A for a 4x4 input tile d and 3x3 kernel g.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def available() -> bool:
    """Whether the C++ transforms are built and loaded (with oneDNN's kernels)."""
    return onednn.available()


def supports(x_shape, kernel_shape, dtype) -> bool:
    """Whether ``conv_bias`` takes this convolution: float32, a 3x3 kernel, an even map."""
    _, h, w, _ = x_shape
    return (jnp.dtype(dtype) == jnp.float32 and tuple(kernel_shape[:2]) == (3, 3)
            and h % 2 == 0 and w % 2 == 0)


def kernel_transform(kernel: Array) -> Array:
    """(3, 3, C, K) kernel -> the (16, C, K) transformed kernel U = G g G^T."""
    g = jnp.asarray(G, kernel.dtype)
    return jnp.einsum("pi,ijck,qj->pqck", g, kernel, g).reshape(16, *kernel.shape[2:])


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


def _xla_forward(x: Array, kernel: Array) -> Array:
    n, h, w, c = x.shape
    th, tw = -(-h // 2), -(-w // 2)  # 2x2 output tiles, each from a 4x4 input tile
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    # Each transform is one broadcast sum of strided slices: XLA fuses it into one loop.
    tiles = sum(jnp.asarray(np.outer(BT[:, i], BT[:, j]).reshape(4, 4, 1, 1, 1, 1), x.dtype)
                * xp[None, None, :, i:i + 2 * th - 1:2, j:j + 2 * tw - 1:2, :]
                for i in range(4) for j in range(4))
    u = kernel_transform(kernel)
    m = jnp.einsum("spc,sck->spk", tiles.reshape(16, -1, c), u)
    m = m.reshape(4, 4, n, th, tw, kernel.shape[-1])
    y = sum(jnp.asarray(np.outer(AT[:, p], AT[:, q]).reshape(1, 1, 2, 1, 2, 1), m.dtype)
            * m[p, q][:, :, None, :, None, :] for p in range(4) for q in range(4))
    return y.reshape(n, 2 * th, 2 * tw, -1)[:, :h, :w]


@jax.custom_vjp
def xla_conv(x: Array, kernel: Array) -> Array:
    """3x3 stride-1 "SAME" convolution by Winograd F(2x2, 3x3), every step XLA's (any map
    size and dtype).

    The input gradient is itself a Winograd convolution (of the output gradient with the
    flipped, transposed kernel); the kernel gradient is XLA's direct one.
    """
    return _xla_forward(x, kernel)


def _xla_conv_fwd(x, kernel):
    return _xla_forward(x, kernel), (x, kernel)


def _xla_conv_bwd(residuals, dy):
    x, kernel = residuals
    dx = _xla_forward(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
    conv = lambda k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return dx, jax.vjp(conv, kernel)[1](dy)[0]


xla_conv.defvjp(_xla_conv_fwd, _xla_conv_bwd)
