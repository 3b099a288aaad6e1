"""How the CPU computes VGG's stride-1 "SAME" convolutions and fc6-fc8's products: oneDNN,
tap by tap, Winograd, im2col or XLA's own.

``choose`` is the rule, per layer shape, dtype and ``ComputeOptions`` (the measurements
behind each of its thresholds: ``docs/compute.md``):
- where oneDNN's kernels are built (``compute.onednn``) and a call has at least
  ``onednn_min_macs`` multiply-accumulates:
  - float32 maps of at most ``taps_map`` pixels a side with >= ``taps_min_channels``
    channels in and out, on AVX-512 CPUs: one matrix product per kernel tap (``taps``),
    which never multiplies the "SAME" padding (56% of a 3x3 convolution's work on a 2x2 map);
  - float32 3x3 layers on even maps with >= ``winograd_min_channels`` channels in and out:
    Winograd F(2x2, 3x3) with C++ tile transforms (``compute.winograd``), on maps of at least
    ``winograd_min_training_map`` pixels a side in training, ``winograd_min_inference_map``
    in inference;
  - else oneDNN's direct convolution (float32 and bfloat16);
- else XLA's rule (``compute.xla.choose``): im2col on tiny maps, XLA's Winograd for some
  inference layers, XLA's convolution elsewhere.
Whatever the algorithm, a kernel larger than its map can reach is first cut to the part that
can (``xla.effective_kernel``). All compute the same convolution, to float32 rounding.
These rules are for the CPU only: ``compute.Conv`` applies them in the CPU branch of
``lax.platform_dependent``, so a program lowered for an accelerator never holds them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.compute import onednn, winograd, xla
from vgg_jax.compute.options import DEFAULT, ComputeOptions

Array = Any
ALGORITHMS = ("auto", "xla", "im2col", "winograd", "onednn", "taps")
PLAIN_PRODUCT = (((1,), (0,)), ((), ()))  # dot_general's numbers for (N, K) x (K, M)


def choose(x_shape, kernel_shape, training: bool = False, dtype=jnp.float32,
           onednn_ok: bool | None = None, options: ComputeOptions = DEFAULT) -> str:
    """The algorithm the CPU computes a convolution of these NHWC / HWIO shapes by.

    ``onednn_ok``: whether oneDNN's kernels may be used (default: ``options.onednn`` and
    the kernels are built).
    """
    _, h, w, c = x_shape
    if onednn_ok is None:
        onednn_ok = options.onednn and onednn.available()
    macs = int(np.prod(x_shape)) * int(np.prod(kernel_shape[:2])) * kernel_shape[-1]
    kernel = _onednn_kernel(x_shape, kernel_shape, dtype) if (
        onednn_ok and _worth_onednn(macs, dtype, options)) else ""
    if kernel:
        if (options.taps and max(h, w) <= options.taps_map
                and jnp.dtype(dtype) == jnp.float32
                and min(c, kernel_shape[-1]) >= options.taps_min_channels and "avx512" in kernel):
            return "taps"
        if (options.winograd and winograd.supports(x_shape, kernel_shape, dtype)
                and min(c, kernel_shape[-1]) >= options.winograd_min_channels
                and min(h, w) >= (options.winograd_min_training_map if training
                                  else options.winograd_min_inference_map)):
            return "winograd"
        return "onednn"
    return xla.choose(x_shape, kernel_shape, training, dtype, options)


def dense_uses_onednn(x_shape, kernel_shape, dtype, options: ComputeOptions = DEFAULT) -> bool:
    """Whether a (N, K) x (K, M) fully connected product of these shapes goes to oneDNN:
    where the kernels are built, for float32 or bfloat16 products of at least
    ``onednn_min_macs``, unless ``options.onednn_fc`` is off."""
    return options.onednn_fc and _product_uses_onednn(x_shape, kernel_shape, dtype, options)


def _product_uses_onednn(x_shape, kernel_shape, dtype, options: ComputeOptions) -> bool:
    macs = x_shape[0] * kernel_shape[0] * kernel_shape[1]
    return (options.onednn and _worth_onednn(macs, dtype, options) and onednn.available()
            and onednn.has_kernels(dtype))


def _worth_onednn(macs: int, dtype, options: ComputeOptions) -> bool:
    return (jnp.dtype(dtype) in (jnp.float32, jnp.bfloat16)
            and macs >= options.onednn_min_macs)


def _onednn_kernel(x_shape, kernel_shape, dtype) -> str:
    """oneDNN's JIT kernel for this convolution on this CPU (e.g. ``brgconv:avx512_core``),
    or "" where it has only its slow reference code or none at all (bfloat16 on a CPU
    without AVX-512: AVX2 has none)."""
    impl = onednn.implementation(x_shape, kernel_shape, dtype)
    usable = impl and not impl.startswith("ref") and onednn.has_kernels(dtype)
    return impl if usable else ""


def _route(x: Array, kernel: Array, algorithm: str, training: bool, bias: Array | None,
           options: ComputeOptions) -> tuple[Array, str]:
    """(the kernel cut to what the map can reach, the algorithm ``algorithm`` resolves to)."""
    kernel = xla.effective_kernel(kernel, x.shape[1], x.shape[2])
    if algorithm == "auto":
        same = x.dtype == kernel.dtype and (bias is None or bias.dtype == x.dtype)
        algorithm = choose(x.shape, kernel.shape, training=training, dtype=x.dtype,
                           onednn_ok=None if same else False, options=options)
    if algorithm not in ALGORITHMS[1:]:
        raise ValueError(f"Unknown convolution algorithm {algorithm!r}; use one of {ALGORITHMS}.")
    if algorithm == "winograd" and tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel, got {kernel.shape}.")
    if algorithm == "onednn" and not (
            onednn.available()
            and onednn.supports(x.dtype, kernel.dtype, None if bias is None else bias.dtype)):
        raise ValueError("oneDNN convolutions need the built kernels (python -m "
                         "vgg_jax.compute) and float32 or bfloat16 operands of one dtype.")
    return kernel, algorithm


def convolve(x: Array, kernel: Array, algorithm: str = "auto", training: bool = False,
             options: ComputeOptions = DEFAULT) -> Array:
    """Stride-1 "SAME" convolution of NHWC ``x`` with an HWIO ``kernel`` of odd size, on
    the CPU, by ``algorithm`` ("auto": ``choose``'s)."""
    kernel, algorithm = _route(x, kernel, algorithm, training, None, options)
    if algorithm == "onednn":
        return onednn.conv(x, kernel, options)
    if algorithm == "taps":
        return taps(x, kernel, options)
    if algorithm == "winograd" and _winograd_cpu(x, kernel):
        return winograd.conv_bias(x, kernel, jnp.zeros(kernel.shape[-1], x.dtype))
    return xla.convolve(x, kernel, algorithm)


def convolve_bias(x: Array, kernel: Array, bias: Array, relu: bool = False,
                  algorithm: str = "auto", training: bool = False,
                  options: ComputeOptions = DEFAULT) -> Array:
    """``convolve(x, kernel) + bias``, then ReLU if ``relu``: VGG's layer.

    By oneDNN it is one pass that also adds the bias and applies ReLU, and whose gradient
    gets the bias gradient from the kernel-gradient primitive (``onednn.conv_bias``); so is
    Winograd's with C++ transforms; the other algorithms leave the bias and ReLU to XLA.
    """
    kernel, algorithm = _route(x, kernel, algorithm, training, bias, options)
    if algorithm == "onednn":
        return onednn.conv_bias(x, kernel, bias, relu, options)
    if algorithm == "winograd" and _winograd_cpu(x, kernel, bias):
        return winograd.conv_bias(x, kernel, bias, relu)
    y = convolve(x, kernel, algorithm, training, options) + bias
    return jax.nn.relu(y) if relu else y


def taps(x: Array, kernel: Array, options: ComputeOptions = DEFAULT) -> Array:
    """``xla.taps``'s convolution (one product per kernel tap), in one oneDNN call each way
    where oneDNN takes products this large (``onednn.taps``), else XLA's."""
    n, h, w, c = x.shape
    if x.dtype == kernel.dtype and _product_uses_onednn((n * h * w, c), kernel.shape[2:],
                                                        x.dtype, options):
        return onednn.taps(x, kernel)
    return xla.taps(x, kernel)


def product(x: Array, kernel: Array, options: ComputeOptions = DEFAULT) -> Array:
    """``x @ kernel`` for fc6-fc8 on the CPU: a plain (N, K) x (K, M) product of float32 or
    bfloat16 operands of one dtype by oneDNN where ``dense_uses_onednn`` (its gradients
    too), anything else (a score map's 4-D input) by XLA."""
    if (x.ndim == kernel.ndim == 2 and x.dtype == kernel.dtype
            and dense_uses_onednn(x.shape, kernel.shape, x.dtype, options)):
        return onednn.dense(x, kernel)
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _winograd_cpu(x: Array, kernel: Array, bias: Array | None = None) -> bool:
    """Whether Winograd runs with its C++ transforms (else every step is XLA's)."""
    dtypes = {x.dtype, kernel.dtype} | ({bias.dtype} if bias is not None else set())
    return (dtypes == {jnp.dtype(jnp.float32)}
            and winograd.supports(x.shape, kernel.shape, x.dtype) and winograd.available())
