"""How VGG's stride-1 "SAME" convolutions are computed: oneDNN, tap by tap, XLA, im2col or
Winograd.

``convolve_bias`` is ``layers.Conv``'s layer (convolution, bias, optional ReLU); ``convolve``
the convolution alone. They pick, per layer shape (``choose``):
- on CPU, where ``vgg_jax.compute.onednn``'s kernels are built, float32 3x3 layers on even maps
  with at least ``WINOGRAD_CPU_MIN_CHANNELS`` channels in and out (VGG's blocks 2-5) by
  Winograd F(2x2, 3x3) with C++ tile transforms (``vgg_jax.compute.winograd.conv_bias``: 2.25x
  fewer multiplications, in training too), on maps of at least
  ``WINOGRAD_CPU_MIN_TRAINING_MAP`` pixels a side in training and
  ``WINOGRAD_CPU_MIN_INFERENCE_MAP`` in inference. A layer's forward pass and both
  gradients against oneDNN's direct convolution, batch 8, 2-core AMD EPYC Zen 4: 330 against
  433 ms at 112x112 128->128, 289 against 412 at 56x56x256, 294 against 407 at 28x28x512, 93
  against 103 at 14x14x512; forward alone 1.12-1.28x from 112 to 28 pixels, 0.77x at 14x14;
  64-channel layers 0.84-0.97x in training (224x224, and 32x32 at batch 128). VGG-16 224/8
  training 2.05 -> 2.72 img/s, inference 6.46 -> 7.72, 32/128 training 116 -> 121.
- else, where the kernels are built, every convolution of at least
  ``ONEDNN_MIN_MACS`` by oneDNN (forward, input and kernel gradients, but those gradients
  that ``onednn.gradient_by_xla`` leaves to XLA; float32 and bfloat16;
  ``benchmarks/results/onednn.md``); there, float32 maps of at most ``TAPS_MAP`` pixels a
  side with at least ``TAPS_MIN_CHANNELS`` channels in and out (blocks 4-5 of VGG on a
  32x32 CIFAR image) as one matrix product per kernel tap, over the
  output pixels whose input under that tap lies inside the map (``taps``, one oneDNN call
  each way: ``onednn.taps``; it comes before Winograd): a direct convolution also
  multiplies the "SAME" padding, 56%
  of its work on a 2x2 map and 31% on a 4x4 one under a 3x3 kernel. A layer's forward pass
  and both gradients, oneDNN's convolution against tap by tap, 2-core AMD EPYC Zen 4: 58 ms
  against 20.5 at 128x2x2x512, 136-140 against 116-138 at 128x4x4x512; VGG-16 32/128
  training 1.12x (``benchmarks/results/onednn.md``). On 8x8 maps oneDNN's convolution is
  faster; with fewer channels the smaller products of a layer cost more than they save (a
  quarter-width VGG-11 trained at 0.71x). Elsewhere, or without the kernels:
- tiny maps (2x2 or smaller; 4x4 or smaller under 5x5 and 7x7 kernels) as one matrix
  product over the gathered taps (im2col): XLA:CPU convolves them ~80x below its peak
  (block 5 of a 32x32 CIFAR image ran at 2 GFLOP/s; a 5x5 and a 7x7 kernel on 4x4 maps,
  forward and backward, 7-10x slower than im2col);
- for inference on CPU, 3x3 layers with 28..56-pixel maps and >= 256 input channels (VGG's
  blocks 3 and 4 at 224) by Winograd with every step XLA's (``winograd.xla_conv``). Not on
  larger maps, where its 4x larger transformed input costs more memory traffic through
  XLA's transforms than the multiplications it saves; not in training, where the whole
  step ran slower with it (measurements: ``benchmarks/results/layers.md`` and
  ``speed.md``); not in bfloat16, whose transforms would lose precision;
- everything else: ``lax.conv_general_dilated``.
All compute the same convolution (Winograd and oneDNN to float32 rounding, ~1e-6 relative).
Whatever the algorithm, a kernel larger than its map can reach (a 7x7 kernel on a 2x2 map:
only its centre 3x3 ever meets a pixel, the rest sees "SAME" padding) is first cut to the
part that can (``effective_kernel``): the same result for less work (5x5 and 7x7 twins).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.compute import winograd

Array = Any

SMALL_MAP = 2  # maps this small (or smaller) are convolved as one matrix product
LARGE_KERNEL_MAP = 4  # ... and so are maps this small under kernels larger than 3x3
# Without the C++ kernels: the smallest and largest map side that Winograd (all XLA's) takes
# on CPU, for inference, and its fewest input channels.
WINOGRAD_MAPS = (28, 56)
WINOGRAD_MIN_CHANNELS = 256
# Whether "auto" may pick Winograd with its C++ transforms where oneDNN's kernels are built
# (float32 3x3 layers, even maps): with at least this many channels in and out, on maps at
# least this large a side in training and in inference.
WINOGRAD = True
WINOGRAD_CPU_MIN_CHANNELS = 128
WINOGRAD_CPU_MIN_TRAINING_MAP = 8
WINOGRAD_CPU_MIN_INFERENCE_MAP = 28
ALGORITHMS = ("auto", "xla", "im2col", "winograd", "onednn", "taps")
# Whether "auto" may pick oneDNN (where built): False gives the rules without it, e.g. for a
# benchmark's baseline or a bit-for-bit comparison with runs made before it existed.
ONEDNN = True
# ... for convolutions of at least this many multiply-accumulates per call: below it, the
# fixed cost of a oneDNN call (~30 us forward, ~130 us for both gradients, measured on 2
# cores) outweighs its faster kernels (benchmarks/results/onednn.md).
ONEDNN_MIN_MACS = 1 << 20
# Whether "auto" computes float32 maps of at most TAPS_MAP pixels a side tap by tap (``taps``)
# where it would otherwise pick oneDNN on a CPU with AVX-512 (measured there only).
TAPS = True
TAPS_MAP = 4
TAPS_MIN_CHANNELS = 256
# Whether fc6-fc8's products may go to oneDNN too (``dense_uses_onednn``; needs ``ONEDNN``).
ONEDNN_FC = True

_DIMS = ("NHWC", "HWIO", "NHWC")


def choose(x_shape, kernel_shape, backend: str | None = None, training: bool = False,
           dtype=jnp.float32, onednn: bool | None = None) -> str:
    """The algorithm ``convolve`` uses for an NHWC input and HWIO kernel of these shapes.

    ``onednn``: whether oneDNN's kernels may be used (default: on CPU, if they are built).
    """
    _, h, w, c = x_shape
    backend = backend or jax.default_backend()
    if onednn is None:
        onednn = ONEDNN and backend == "cpu" and _onednn_available()
    macs = int(np.prod(x_shape)) * int(np.prod(kernel_shape[:2])) * kernel_shape[-1]
    kernel = _onednn_kernel(x_shape, kernel_shape, dtype) if (
        onednn and _worth_onednn(macs, dtype, backend)) else ""
    if kernel:
        if (TAPS and max(h, w) <= TAPS_MAP and jnp.dtype(dtype) == jnp.float32
                and min(c, kernel_shape[-1]) >= TAPS_MIN_CHANNELS and "avx512" in kernel):
            return "taps"
        if (WINOGRAD and winograd.supports(x_shape, kernel_shape, dtype)
                and min(c, kernel_shape[-1]) >= WINOGRAD_CPU_MIN_CHANNELS
                and min(h, w) >= (WINOGRAD_CPU_MIN_TRAINING_MAP if training
                                  else WINOGRAD_CPU_MIN_INFERENCE_MAP)):
            return "winograd"
        return "onednn"
    if min(h, w) <= SMALL_MAP or (max(kernel_shape[:2]) > 3 and min(h, w) <= LARGE_KERNEL_MAP):
        return "im2col"
    low, high = WINOGRAD_MAPS
    if (tuple(kernel_shape[:2]) == (3, 3) and low <= min(h, w) and max(h, w) <= high
            and c >= WINOGRAD_MIN_CHANNELS and not training and dtype == jnp.float32
            and backend == "cpu"):
        return "winograd"
    return "xla"


def dense_uses_onednn(x_shape, kernel_shape, dtype, backend: str | None = None) -> bool:
    """Whether a (N, K) x (K, M) fully connected product of these shapes goes to oneDNN
    (``layers.fc_dot_general``): on CPU, where the kernels are built, for float32 or
    bfloat16 products of at least ``ONEDNN_MIN_MACS``."""
    return ONEDNN_FC and _product_uses_onednn(x_shape, kernel_shape, dtype, backend)


def _product_uses_onednn(x_shape, kernel_shape, dtype, backend: str | None = None) -> bool:
    """Whether a (N, K) x (K, M) product goes to oneDNN: on CPU, where built, for float32 or
    bfloat16 of at least ``ONEDNN_MIN_MACS`` (fc6-fc8's and ``taps``'s)."""
    macs = x_shape[0] * kernel_shape[0] * kernel_shape[1]
    if not (ONEDNN and _worth_onednn(macs, dtype, backend or jax.default_backend())
            and _onednn_available()):
        return False
    from vgg_jax.compute import onednn
    return onednn.has_kernels(dtype)


def _worth_onednn(macs: int, dtype, backend: str) -> bool:
    """Whether oneDNN takes a product of this size and dtype on ``backend`` (if built)."""
    return (backend == "cpu" and jnp.dtype(dtype) in (jnp.float32, jnp.bfloat16)
            and macs >= ONEDNN_MIN_MACS)


def _onednn_available() -> bool:
    from vgg_jax.compute import onednn  # imported late: it builds its kernels on first use
    return onednn.available()


def _onednn_kernel(x_shape, kernel_shape, dtype) -> str:
    """oneDNN's JIT kernel for this convolution on this CPU (e.g. ``brgconv:avx512_core``),
    or "" where it has only its slow reference code or none at all (bfloat16 on a CPU
    without AVX-512: AVX2 has none)."""
    from vgg_jax.compute import onednn
    impl = onednn.implementation(x_shape, kernel_shape, dtype)
    usable = impl and not impl.startswith("ref") and onednn.has_kernels(dtype)
    return impl if usable else ""


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


def _route(x: Array, kernel: Array, algorithm: str, training: bool,
           bias: Array | None = None) -> tuple[Array, str]:
    """(the kernel cut to what the map can reach, the algorithm ``algorithm`` resolves to)."""
    kernel = effective_kernel(kernel, x.shape[1], x.shape[2])
    if algorithm == "auto":
        same = x.dtype == kernel.dtype and (bias is None or bias.dtype == x.dtype)
        algorithm = choose(x.shape, kernel.shape, training=training, dtype=x.dtype,
                           onednn=None if same else False)
    if algorithm not in ALGORITHMS[1:]:
        raise ValueError(f"Unknown convolution algorithm {algorithm!r}; use one of {ALGORITHMS}.")
    if algorithm == "winograd" and tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel, got {kernel.shape}.")
    if algorithm == "onednn":
        from vgg_jax.compute import onednn
        if not (onednn.available()
                and onednn.supports(x.dtype, kernel.dtype, None if bias is None else bias.dtype)):
            raise ValueError(f"oneDNN convolutions need the built kernels (python -m "
                             f"vgg_jax.compute.onednn) and float32 or bfloat16 operands of one dtype.")
    return kernel, algorithm


def convolve(x: Array, kernel: Array, algorithm: str = "auto", training: bool = False) -> Array:
    """Stride-1 "SAME" convolution of NHWC ``x`` with an HWIO ``kernel`` of odd size."""
    kernel, algorithm = _route(x, kernel, algorithm, training)
    if algorithm == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)
    if algorithm == "im2col":
        return _im2col(x, kernel)
    if algorithm == "winograd":
        if _winograd_cpu(x, kernel):
            return winograd.conv_bias(x, kernel, jnp.zeros(kernel.shape[-1], x.dtype))
        return winograd.xla_conv(x, kernel)
    if algorithm == "taps":
        return taps(x, kernel)
    from vgg_jax.compute import onednn
    return onednn.conv(x, kernel)


def convolve_bias(x: Array, kernel: Array, bias: Array, relu: bool = False,
                  algorithm: str = "auto", training: bool = False) -> Array:
    """``convolve(x, kernel) + bias``, then ReLU if ``relu``: VGG's layer.

    By oneDNN it is one pass that also adds the bias and applies ReLU, and whose gradient
    gets the bias gradient from the kernel-gradient primitive (``onednn.conv_bias``); the
    other algorithms leave the bias and ReLU to XLA.
    """
    kernel, algorithm = _route(x, kernel, algorithm, training, bias)
    if algorithm == "onednn":
        from vgg_jax.compute import onednn
        return onednn.conv_bias(x, kernel, bias, relu)
    if algorithm == "winograd" and _winograd_cpu(x, kernel, bias):
        return winograd.conv_bias(x, kernel, bias, relu)
    y = convolve(x, kernel, algorithm, training) + bias
    return jax.nn.relu(y) if relu else y


def _winograd_cpu(x: Array, kernel: Array, bias: Array | None = None) -> bool:
    """Whether Winograd runs with its C++ transforms here (else every step is XLA's)."""
    dtypes = {x.dtype, kernel.dtype} | ({bias.dtype} if bias is not None else set())
    return (dtypes == {jnp.dtype(jnp.float32)} and winograd.supports(x.shape, kernel.shape, x.dtype)
            and jax.default_backend() == "cpu" and winograd.available())


def _im2col(x: Array, kernel: Array) -> Array:
    n, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    taps = [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * c, kernel.shape[-1]))


def taps(x: Array, kernel: Array) -> Array:
    """Stride-1 "SAME" convolution as a sum of matrix products, one per kernel tap.

    Tap (dy, dx) multiplies the input pixels (y + dy, x + dx) that lie inside the map, at
    the output pixels (y, x) they reach, by its (C, C') matrix: no product meets padding.
    Where oneDNN takes products this large (``_product_uses_onednn``) the whole convolution
    and its gradients are one oneDNN call each, reading and writing the pixels in place
    (``onednn.taps``); else XLA's products of each tap's pixels, copied out and padded back
    (XLA's autodiff gives the gradients). Sums are float32, also for bfloat16.
    """
    n, h, w, c = x.shape
    kh, kw, _, out = kernel.shape
    if x.dtype == kernel.dtype and _product_uses_onednn((n * h * w, c), (c, out), x.dtype):
        from vgg_jax.compute import onednn
        return onednn.taps(x, kernel)
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
