"""Convolutions computed by XLA alone, for CPUs where oneDNN's kernels are not built or not
wanted: XLA's direct convolution, im2col for tiny maps, tap by tap, and Winograd F(2x2, 3x3)
with every step XLA's. ``choose`` picks among them per layer shape (``ComputeOptions``),
``convolve`` computes one. oneDNN's gradients fall back to these too (``compute.onednn``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.compute.options import DEFAULT, ComputeOptions

Array = Any
ALGORITHMS = ("xla", "im2col", "winograd", "taps")
_DIMS = ("NHWC", "HWIO", "NHWC")

# F(2, 3): y = A^T [(G g G^T) * (B^T d B)] A for a 4x4 input tile d and 3x3 kernel g.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def choose(x_shape, kernel_shape, training: bool = False, dtype=jnp.float32,
           options: ComputeOptions = DEFAULT) -> str:
    """The algorithm XLA computes this convolution by on CPU: tiny maps by im2col (XLA:CPU
    convolves them far below its peak), 3x3 inference layers on mid-sized maps with many
    channels by Winograd, everything else XLA's own convolution (``docs/compute.md``)."""
    _, h, w, c = x_shape
    if min(h, w) <= options.small_map or (max(kernel_shape[:2]) > 3
                                          and min(h, w) <= options.large_kernel_map):
        return "im2col"
    low, high = options.xla_winograd_maps
    if (tuple(kernel_shape[:2]) == (3, 3) and low <= min(h, w) and max(h, w) <= high
            and c >= options.xla_winograd_min_channels and not training
            and jnp.dtype(dtype) == jnp.float32):
        return "winograd"
    return "xla"


def convolve(x: Array, kernel: Array, algorithm: str = "xla") -> Array:
    """Stride-1 "SAME" convolution of NHWC ``x`` with an HWIO ``kernel`` by ``algorithm``
    (one of ``ALGORITHMS``), every step XLA's."""
    if algorithm == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)
    if algorithm == "im2col":
        return im2col(x, kernel)
    if algorithm == "winograd":
        return winograd_conv(x, kernel)
    if algorithm == "taps":
        return taps(x, kernel)
    raise ValueError(f"Unknown convolution algorithm {algorithm!r}; use one of {ALGORITHMS}.")


def effective_kernel(kernel: Array, height: int, width: int) -> Array:
    """The centre of an odd HWIO ``kernel`` that can meet pixels of a height x width map.

    Taps more than ``side - 1`` away from the centre only ever multiply padding zeros.
    """
    kh, kw = kernel.shape[:2]
    th, tw = min(kh, 2 * height - 1), min(kw, 2 * width - 1)
    if (th, tw) == (kh, kw):
        return kernel
    y, x = (kh - th) // 2, (kw - tw) // 2
    return kernel[y:y + th, x:x + tw]


def im2col(x: Array, kernel: Array) -> Array:
    """Stride-1 "SAME" convolution as one matrix product over the gathered taps."""
    n, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    taps = [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * c, kernel.shape[-1]))


def kernel_transform(kernel: Array) -> Array:
    """(3, 3, C, K) kernel -> the (16, C, K) transformed kernel U = G g G^T."""
    g = jnp.asarray(G, kernel.dtype)
    return jnp.einsum("pi,ijck,qj->pqck", g, kernel, g).reshape(16, *kernel.shape[2:])


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
def winograd_conv(x: Array, kernel: Array) -> Array:
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


winograd_conv.defvjp(_xla_conv_fwd, _xla_conv_bwd)


def taps(x: Array, kernel: Array) -> Array:
    """Stride-1 "SAME" convolution as a sum of matrix products, one per kernel tap.

    Tap (dy, dx) multiplies the input pixels (y + dy, x + dx) that lie inside the map, at
    the output pixels (y, x) they reach, by its (C, C') matrix: no product meets padding.
    Here XLA's products of each tap's pixels, copied out and padded back (XLA's autodiff
    gives the gradients); ``onednn.taps`` does it in one call each way. Sums are float32,
    also for bfloat16.
    """
    n, h, w, c = x.shape
    kh, kw, _, out = kernel.shape
    total = None
    for ty in range(kh):
        for tx in range(kw):
            dy, dx = ty - kh // 2, tx - kw // 2
            y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
            if y1 <= y0 or x1 <= x0:
                continue  # only ever meets padding
            inside = x[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx, :].reshape(-1, c)
            part = jnp.dot(inside, kernel[ty, tx], preferred_element_type=jnp.float32)
            part = jnp.pad(part.reshape(n, y1 - y0, x1 - x0, out),
                           ((0, 0), (y0, h - y1), (x0, w - x1), (0, 0)))
            total = part if total is None else total + part
    return total.astype(x.dtype)
