"""VGG's layers: the convolution (with bias and ReLU), local response normalisation, 2x2
max-pooling, and fc6's windows for dense evaluation; ``models.VGG`` stacks them per Table 1.

``Conv`` computes with XLA's ``lax.conv_general_dilated``. It is the default of
``VGG(conv=...)``; a subclass that overrides ``Conv.compute`` computes the same layer another
way with the same parameters (``vgg_jax.compute.Conv`` does, per platform).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = Any
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class Conv(nn.Module):
    """A VGG convolution: stride 1, "SAME" padding, bias, then ReLU if ``relu``.

    Its parameters are ``nn.Conv``'s (``kernel`` HWIO, ``bias``), made in the same order
    from the same random streams.
    """

    features: int
    kernel_size: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    relu: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return self.compute(x, kernel, bias)

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        """The layer's arithmetic on promoted operands: ``conv_bias(..., self.relu)``."""
        return conv_bias(x, kernel, bias, self.relu)


def conv_bias(x: Array, kernel: Array, bias: Array, relu: bool = True) -> Array:
    """Stride-1 "SAME" convolution of NHWC ``x`` with an HWIO ``kernel``, plus ``bias``, then
    ReLU if ``relu``: VGG's layer, by XLA."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=DIMENSIONS) + bias
    return nn.relu(y) if relu else y


def local_response_norm(x: Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75) -> Array:
    """AlexNet's cross-channel LRN in Caffe's convention (alpha divided by ``size``).

    b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_c'^2) ** beta, NHWC input.
    """
    sq = jnp.square(x.astype(jnp.float32))
    half = size // 2
    window_sum = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
    return (x / jnp.power(k + (alpha / size) * window_sum, beta)).astype(x.dtype)


def max_pool_2x2(x: Array) -> Array:
    """2x2 stride-2 max-pooling (floor on odd sizes, like Caffe's VALID pooling in PyTorch).

    On even sizes a reshape-and-max (``_pool_even``), which XLA runs as one reduction with
    values identical to ``reduce_window``'s.
    """
    _, h, w, _ = x.shape
    if h % 2 or w % 2:
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return _pool_even(x)


def _windows_2x2(x: Array) -> Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _pool_even(x: Array) -> Array:
    """Its gradient goes to the first maximum of each window (row-major), as XLA's
    ``select_and_scatter`` and PyTorch give it; differentiating the max itself would split it
    among ties, at 4x the cost (a count and a division per pixel)."""
    return _windows_2x2(x).max(axis=(2, 4))


def _pool_even_fwd(x):
    y = _pool_even(x)
    return y, (x, y)


def _pool_even_bwd(residuals, g):
    x, y = residuals
    windows, taken, rows = _windows_2x2(x), jnp.zeros(y.shape, bool), []
    for i in range(2):
        row = []
        for j in range(2):
            first = (windows[:, :, i, :, j] == y) & ~taken
            taken = taken | first
            row.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
        rows.append(jnp.stack(row, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x.shape),)


_pool_even.defvjp(_pool_even_fwd, _pool_even_bwd)


def fc6_windows(x: Array, window: int) -> Array:
    """Every ``window`` x ``window`` patch of an NHWC map, flattened in fc6's (row, column,
    channel) order: (N, H - window + 1, W - window + 1, window * window * C).

    fc6 applied to these is the paper's dense evaluation (section 3.2): fc6 "converted to a
    convolutional layer" of its window, slid over a feature map of any size >= window.
    """
    _, h, w, _ = x.shape
    rows, cols = h - window + 1, w - window + 1
    return jnp.concatenate([x[:, i:i + rows, j:j + cols] for i in range(window)
                            for j in range(window)], axis=-1)
