"""VGG's layers: the convolution (with bias and ReLU), local response normalisation, 2x2
max-pooling, fc6 (dense or as a convolution) and the product fc6-fc8 multiply by
(``fc_dot_general``); ``models.VGG`` stacks them per Table 1."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vgg_jax.compute import conv

Array = Any


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


def max_pool_2x2(x: Array, before_fc: bool = False) -> Array:
    """2x2 stride-2 max-pooling (floor on odd sizes, like Caffe's VALID pooling in PyTorch).

    On even sizes a reshape-and-max (``_pool_even``), which XLA:CPU runs far faster than
    ``reduce_window`` with bit-identical values. ``before_fc``: pool5, which takes the
    maximum of the four strided views instead of a reduction: XLA:CPU's YNN fusions for
    reductions (vgg_jax/__init__.py) would otherwise pull it and fc6-fc8's products into one
    YNN graph that ran VGG-16 inference 3x slower (the other pools are faster as YNN ones).
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    # Not for a symbolic batch (export), where the views would be gathers TFLite lacks.
    return _pool_even(x, before_fc and isinstance(n, int))


def _windows(x: Array) -> Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool_even(x: Array, elementwise: bool = False) -> Array:
    """Its gradient goes to the first maximum of each window (row-major), as XLA's
    ``select_and_scatter`` and PyTorch give it; differentiating the max itself would split it
    among ties, at 4x the cost (a count and a division per pixel: 0.1 s of a VGG-16 step)."""
    w = _windows(x)
    if not elementwise:
        return w.max(axis=(2, 4))
    return jnp.maximum(jnp.maximum(w[:, :, 0, :, 0], w[:, :, 0, :, 1]),
                       jnp.maximum(w[:, :, 1, :, 0], w[:, :, 1, :, 1]))


def _pool_even_fwd(x, elementwise):
    y = _pool_even(x, elementwise)
    return y, (x, y)


def _pool_even_bwd(elementwise, residuals, g):
    x, y = residuals
    windows, taken, rows = _windows(x), jnp.zeros(y.shape, bool), []
    for i in range(2):
        row = []
        for j in range(2):
            first = (windows[:, :, i, :, j] == y) & ~taken
            taken = taken | first
            row.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
        rows.append(jnp.stack(row, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x.shape),)


_pool_even.defvjp(_pool_even_fwd, _pool_even_bwd)


class Conv(nn.Module):
    """A VGG convolution: stride 1, "SAME" padding, bias, then ReLU if ``relu``.

    Its parameters are ``nn.Conv``'s (``kernel`` HWIO, ``bias``), made in the same order
    from the same random streams; ``vgg_jax.compute.conv.convolve_bias`` computes it (on CPU by one
    fused oneDNN pass, where its kernels are built).
    """

    features: int
    kernel_size: int
    kernel_init: Callable
    relu: bool = True
    training: bool = False
    algorithm: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv.convolve_bias(x, kernel, bias, self.relu, self.algorithm, self.training)


_PLAIN_PRODUCT = (((1,), (0,)), ((), ()))  # dot_general's numbers for (N, K) x (K, M)


def fc_dot_general(algorithm: str = "auto") -> Callable:
    """The ``lax.dot_general`` fc6-fc8 use (flax's ``nn.Dense(dot_general=...)``).

    With ``algorithm`` "auto" (or "onednn"), on CPU where ``vgg_jax.compute.onednn``'s kernels are
    built, a plain (N, K) x (K, M) product of float32 or bfloat16 operands of at least
    ``conv.ONEDNN_MIN_MACS`` is oneDNN's (``onednn.dense``, its gradients too); anything else
    (another algorithm, as exporters ask for; a score map's 4-D input) is XLA's.
    """
    def dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
        if (algorithm in ("auto", "onednn") and dimension_numbers == _PLAIN_PRODUCT
                and x.ndim == kernel.ndim == 2 and x.dtype == kernel.dtype
                and preferred_element_type in (None, x.dtype)
                and conv.dense_uses_onednn(x.shape, kernel.shape, x.dtype)):
            from vgg_jax.compute import onednn
            return onednn.dense(x, kernel)
        return jax.lax.dot_general(x, kernel, dimension_numbers, precision,
                                   preferred_element_type=preferred_element_type)

    return dot_general


class FC6(nn.Module):
    """fc6: a dense layer over the flattened (NHWC) last feature map.

    Its kernel has shape (k * k * C, features). In dense mode the same kernel is reshaped to a
    k x k convolution (7x7 at 224) and slid over a feature map of any size >= k.
    """

    features: int
    kernel_init: Callable
    dtype: Any = None
    param_dtype: Any = jnp.float32
    algorithm: str = "auto"

    @nn.compact
    def __call__(self, x: Array, dense: bool = False) -> Array:
        n, h, w, c = x.shape
        if self.has_variable("params", "kernel"):
            fan_in = self.get_variable("params", "kernel").shape[0]
        else:
            fan_in = h * w * c
        kernel = self.param("kernel", self.kernel_init, (fan_in, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        window = math.isqrt(fan_in // c)
        if window * window * c != fan_in:
            raise ValueError(f"fc6 kernel with {fan_in} inputs does not fit {c} channels.")
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if dense:
            if h < window or w < window:
                raise ValueError(
                    f"Dense evaluation needs a final feature map of at least {window}x{window} "
                    f"(input at least {32 * window}x{32 * window}); got {h}x{w}.")
            kernel = kernel.reshape(window, window, c, self.features)
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return y + bias
        if h * w * c != fan_in:
            raise ValueError(
                f"fc6 was built for a {window}x{window}x{c} feature map "
                f"(input {32 * window}x{32 * window}) but got {h}x{w}x{c}: resize the images "
                f"to {32 * window}x{32 * window} or use dense=True.")
        product = fc_dot_general(self.algorithm)
        return product(x.reshape(n, -1), kernel, _PLAIN_PRODUCT) + bias
