"""oneDNN's CPU kernels for VGG's convolutions, called from JAX as XLA FFI custom calls.

``conv(x, kernel)`` is a stride-1 "SAME" convolution of NHWC ``x`` with an HWIO ``kernel``
(float32, or bfloat16 accumulated in float32) whose forward pass, input gradient and kernel
gradient are oneDNN primitives (``kernels/onednn_ffi.cc``); oneDNN picks the kernel for this
CPU (AVX2, AVX-512, AVX-512 BF16, AMX). ``vgg_jax.compute.conv`` routes to it on CPU. ``dense(x,
kernel)`` is fc6-fc8's product (and its gradients) by oneDNN's matmul
(``layers.fc_dot_general`` routes to it); ``taps(x, kernel)`` the convolution of small maps
as one product per kernel tap (``vgg_jax.compute.conv.taps`` routes to it). The same library holds
Winograd's C++ tile transforms (``kernels/winograd.cc``), which ``vgg_jax.compute.winograd`` calls
through ``call``.

``pip install`` compiles the C++ source (``kernels/build.py``, run by ``setup.py``) with the
system's C++ compiler, against JAX's FFI headers and the oneDNN packages vgg_jax depends on
(``onednn-cpu-gomp``, ``onednn-devel-cpu-gomp``). Where it could not (or the source or
jaxlib changed since), the first use compiles it into ``$VGG_JAX_CACHE`` (default
``~/.cache/vgg_jax``). ``python -m vgg_jax.onednn`` builds
it and prints the kernels oneDNN picks here. Where it cannot be built or loaded (no
compiler, no oneDNN, not x86-64) or ``VGG_JAX_NO_ONEDNN=1``, ``available()`` is False, one
log line says why, and every convolution stays XLA's. Where the CPU has no oneDNN kernels for
bfloat16 (oneDNN 3.2 needs AVX-512 BF16 or AMX; a plain AVX2 CPU has none, not even its
reference code), ``has_kernels(jnp.bfloat16)`` is False, one log line says so, and bfloat16
convolutions and products stay XLA's while float32 ones still come here.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from typing import Any, Optional

import jax
import jax.numpy as jnp
from absl import logging

from vgg_jax.compute import xla
from vgg_jax.compute.kernels import build as build_lib
from vgg_jax.compute.options import DEFAULT, ComputeOptions

Array = Any
TARGETS = {"vgg_onednn_conv_forward": "VggConvForward",
           "vgg_onednn_conv_bias_forward": "VggConvBiasForward",
           "vgg_onednn_conv_backward_data": "VggConvBackwardData",
           "vgg_onednn_conv_backward_weights": "VggConvBackwardWeights",
           "vgg_onednn_conv_bias_backward": "VggConvBiasBackward",
           "vgg_onednn_matmul": "VggMatmul",
           "vgg_onednn_taps_forward": "VggTapsForward",
           "vgg_onednn_taps_backward": "VggTapsBackward",
           # Winograd's tile transforms (kernels/winograd.cc: vgg_jax.compute.winograd), built alongside
           "vgg_winograd_input": "VggWinogradInput",
           "vgg_winograd_output": "VggWinogradOutput",
           "vgg_winograd_output_gradient": "VggWinogradOutputGradient",
           "vgg_winograd_input_gradient": "VggWinogradInputGradient"}
_DTYPES = (jnp.float32, jnp.bfloat16)


BuildError = build_lib.BuildError


def library_path() -> str:
    """Where the compiled kernels for this source and this jaxlib are: the copy ``pip install``
    built into the package, else the one built on first use in ``$VGG_JAX_CACHE``."""
    name = build_lib.library_name()
    installed = os.path.join(build_lib.HERE, name)
    if os.path.exists(installed):
        return installed
    cache = os.environ.get("VGG_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "vgg_jax")
    return os.path.join(cache, name)


def build(force: bool = False) -> str:
    """The kernels' library path, compiling them first unless built (by the install or before)."""
    path = library_path()
    if force or not os.path.exists(path):
        build_lib.compile_library(path)
    return path


@functools.lru_cache(maxsize=None)
def _load() -> Optional[ctypes.CDLL]:
    if os.environ.get("VGG_JAX_NO_ONEDNN") == "1":
        logging.info("oneDNN kernels off (VGG_JAX_NO_ONEDNN=1): XLA's convolutions.")
        return None
    if platform.machine() not in ("x86_64", "AMD64"):
        logging.info("oneDNN kernels are built for x86-64 only: XLA's convolutions.")
        return None
    # oneDNN's OpenMP threads would otherwise spin between primitives and starve XLA's own
    # threads on the same cores (a bfloat16 training step ran 40x slower on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        runtime = build_lib.onednn_runtime()
        if runtime:  # before the kernels, which need it (by name) and may not find it
            ctypes.CDLL(runtime, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(build())
    except (BuildError, OSError) as e:
        logging.warning("oneDNN kernels unavailable, using XLA's convolutions: %s", e)
        return None
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    lib.VggConvImplementation.restype = ctypes.c_char_p
    lib.VggConvImplementation.argtypes = [ctypes.c_int64] * 7 + [ctypes.c_int] * 4
    return lib


def available() -> bool:
    """Whether the kernels are built and loaded (building them on the first call)."""
    return _load() is not None


OPS = ("forward", "backward_data", "backward_weights")


def implementation(x_shape, kernel_shape, dtype=jnp.float32, op: str = "forward",
                   bias: bool = False, blocked: bool = False) -> str:
    """The oneDNN kernel that ``op`` (one of ``OPS``) of a convolution of these shapes runs
    (e.g. ``brgconv:avx512_core``), with a bias (and its gradient) if ``bias``, reading the
    activations in oneDNN's blocked layout if ``blocked`` (the kernel gradient only)."""
    lib = _load()
    if lib is None:
        return ""
    n, h, w, c = x_shape
    kh, kw, _, o = kernel_shape
    return lib.VggConvImplementation(n, h, w, c, kh, kw, o, int(jnp.dtype(dtype) == jnp.bfloat16),
                                     OPS.index(op), int(bias), int(blocked)).decode()


def has_kernels(dtype) -> bool:
    """Whether oneDNN has JIT kernels for ``dtype`` on this CPU (not only its slow reference
    code, nor none at all: bfloat16 needs AVX-512 BF16 or AMX; a plain AVX2 CPU has neither).
    Logs once per dtype that it has not."""
    impl = implementation((1, 8, 8, 16), (3, 3, 16, 16), dtype)
    if impl and not impl.startswith("ref"):
        return True
    name = jnp.dtype(dtype).name
    if name not in _WARNED and _load() is not None:
        _WARNED.add(name)
        logging.info("oneDNN has no %s kernels on this CPU (%s): XLA computes in %s.", name,
                     impl or "none", name)
    return False


_WARNED: set = set()


def supports(x_dtype, kernel_dtype, bias_dtype=None) -> bool:
    """Whether ``conv`` / ``conv_bias`` take these dtypes (float32 or bfloat16, ``x`` and
    ``kernel`` the same)."""
    ok = lambda d: any(jnp.dtype(d) == t for t in _DTYPES)  # noqa: E731
    return (jnp.dtype(x_dtype) == jnp.dtype(kernel_dtype) and ok(x_dtype)
            and (bias_dtype is None or ok(bias_dtype)))


def gradient_by_xla(op: str, x_shape, kernel_shape, dtype,
                    options: ComputeOptions = DEFAULT) -> bool:
    """Whether XLA, not oneDNN, computes gradient ``op`` ("backward_weights" or
    "backward_data") of this convolution.

    ``options.kernel_gradient`` / ``input_gradient`` decide; under "auto" (measurements:
    ``docs/compute.md``), XLA takes
    - the kernel gradient where oneDNN's primitive for it is its AVX2 one (CPUs without
      AVX-512), which is slower than XLA's, or its im2col + GEMM fallback (2x2 maps);
    - the input gradient of maps up to ``options.xla_input_gradient_map`` pixels a side
      where oneDNN's is AVX2.
    """
    choice = {"backward_weights": options.kernel_gradient,
              "backward_data": options.input_gradient}[op]
    if choice != "auto":
        return choice == "xla"
    impl = implementation(x_shape, kernel_shape, dtype, op)
    if op == "backward_weights" and "gemm" in impl:
        return True
    if not impl.endswith(":avx2"):
        return False
    return op == "backward_weights" or min(x_shape[1:3]) <= options.xla_input_gradient_map


def blocked_kernel_gradient(x_shape, kernel_shape, dtype,
                            options: ComputeOptions = DEFAULT) -> bool:
    """Whether oneDNN's kernel gradient of this convolution reads its input and output
    gradient in oneDNN's blocked layout (nChw16c: copied there first) rather than as NHWC.

    ``options.kernel_gradient_layout`` decides; under "auto", for 3x3 float32 kernels on
    large maps (``blocked_min_pixels``, with ``blocked_min_channels`` in or out) where the
    kernel is ``jit:avx512_core``, whose NHWC version runs below the matmul peak there
    (``docs/compute.md``).
    """
    if options.kernel_gradient_layout != "auto":
        return options.kernel_gradient_layout == "blocked"
    _, h, w, c = x_shape
    kh, kw, _, o = kernel_shape
    return (jnp.dtype(dtype) == jnp.float32 and (kh, kw) == (3, 3)
            and h * w >= options.blocked_min_pixels and max(c, o) >= options.blocked_min_channels
            and implementation(x_shape, kernel_shape, dtype, "backward_weights")
            == "jit:avx512_core")


def _xla_gradient(wrt: int, x: Array, kernel: Array, dy: Array, options: ComputeOptions) -> Array:
    """XLA's gradient of the convolution with respect to ``x`` (``wrt`` 0) or ``kernel`` (1):
    the input gradient by the algorithm XLA would compute this convolution by (im2col's on
    tiny maps), the kernel gradient always by XLA's direct convolution's."""
    algorithm = "xla"
    if wrt == 0:
        algorithm = xla.choose(x.shape, kernel.shape, training=True, dtype=x.dtype,
                               options=options)
    return jax.vjp(lambda x, k: xla.convolve(x, k, algorithm), x, kernel)[1](dy)[wrt]


def call(target: str, results, *operands: Array, **attributes):
    """One of the library's ``TARGETS`` on ``operands``, as an XLA custom call.

    ``results``: a (shape, dtype) pair, or a list of them for several results.
    """
    if _load() is None:
        raise RuntimeError("oneDNN kernels unavailable (see the log); check available() first")
    for dtype in {jnp.dtype(a.dtype) for a in operands}:
        if not has_kernels(dtype):  # at trace time, before XLA compiles a call that would fail
            raise ValueError(f"oneDNN has no {dtype.name} kernels on this CPU (bfloat16 needs "
                             f"AVX-512 BF16 or AMX); use XLA's (algorithm 'xla' or 'auto').")
    many = isinstance(results, list)
    structs = [jax.ShapeDtypeStruct(*r) for r in (results if many else [results])]
    # Under vmap each example is one call ("sequential"): the kernels take plain NHWC/HWIO.
    out = jax.ffi.ffi_call(target, structs if many else structs[0],
                           vmap_method="sequential")(*operands, **attributes)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: Array, kernel: Array, options: ComputeOptions = DEFAULT) -> Array:
    """Stride-1 "SAME" convolution, NHWC x HWIO -> NHWC, by oneDNN (odd kernel sizes)."""
    return call("vgg_onednn_conv_forward", ((*x.shape[:3], kernel.shape[-1]), x.dtype),
                x, kernel)


def _conv_fwd(x, kernel, options):
    return conv(x, kernel, options), (x, kernel)


def _conv_bwd(options, residuals, dy):
    x, kernel = residuals
    dy = dy.astype(x.dtype)
    by_xla = functools.partial(gradient_by_xla, x_shape=x.shape, kernel_shape=kernel.shape,
                               dtype=x.dtype, options=options)
    dx = (_xla_gradient(0, x, kernel, dy, options) if by_xla("backward_data") else
          call("vgg_onednn_conv_backward_data", (x.shape, x.dtype), dy, kernel))
    dk = (_xla_gradient(1, x, kernel, dy, options) if by_xla("backward_weights") else
          call("vgg_onednn_conv_backward_weights", (kernel.shape, kernel.dtype), x, dy,
               blocked=blocked_kernel_gradient(x.shape, kernel.shape, x.dtype, options)))
    return dx, dk


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_bias(x: Array, kernel: Array, bias: Array, relu: bool = False,
              options: ComputeOptions = DEFAULT) -> Array:
    """``conv(x, kernel) + bias``, then ReLU if ``relu``, in one oneDNN pass.

    Its gradient is one call too: the ReLU mask from the output, then the input gradient
    (only if ``x`` is differentiated: not for the images), the kernel and bias gradients
    (only if they are: not for a saliency map); XLA never makes a pass over the activation
    for the bias or the ReLU.
    """
    return call("vgg_onednn_conv_bias_forward", ((*x.shape[:3], kernel.shape[-1]), x.dtype),
                x, kernel, bias, relu=bool(relu))


def _conv_bias_fwd(x, kernel, bias, relu, options):
    y = conv_bias(x.value, kernel.value, bias.value, relu, options)
    # The residuals' structure says (statically) what needs a gradient, and holds the mask.
    wanted = (x.perturbed, kernel.perturbed or bias.perturbed)
    return y, (x.value, kernel.value, bias.value, y if relu else None, wanted)


def _conv_bias_bwd(relu, options, residuals, dy):
    x, kernel, bias, y, (data, weights) = residuals
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):
        return None, None, None
    dy = dy.astype(x.dtype)
    if relu:
        dy = jnp.where(y > 0, dy, jnp.zeros((), dy.dtype))
    by_xla = functools.partial(gradient_by_xla, x_shape=x.shape, kernel_shape=kernel.shape,
                               dtype=x.dtype, options=options)
    data_by_xla = data and by_xla("backward_data")
    weights_by_xla = weights and by_xla("backward_weights")
    onednn_data, onednn_weights = data and not data_by_xla, weights and not weights_by_xla
    shape = lambda a, wanted: a.shape if wanted else (1,)  # noqa: E731  (1,): not computed
    dx = dk = dbias = None
    if onednn_data or onednn_weights:
        dx, dk, dbias = call("vgg_onednn_conv_bias_backward",
                             [(shape(x, onednn_data), x.dtype),
                              (shape(kernel, onednn_weights), kernel.dtype),
                              (shape(bias, onednn_weights), bias.dtype)],
                              dy, x, kernel, data=onednn_data, weights=onednn_weights,
                              blocked=blocked_kernel_gradient(x.shape, kernel.shape, x.dtype,
                                                              options))
    if data_by_xla:
        dx = _xla_gradient(0, x, kernel, dy, options)
    if weights_by_xla:
        dk = _xla_gradient(1, x, kernel, dy, options)
        dbias = dy.sum((0, 1, 2), dtype=jnp.float32).astype(bias.dtype)
    return (dx if data else None, dk if weights else None, dbias if weights else None)


conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd, symbolic_zeros=True)


def matmul(a: Array, b: Array, transpose_a: bool = False, transpose_b: bool = False) -> Array:
    """``op(a) @ op(b)`` by oneDNN, in ``a``'s dtype (float32 accumulation), no gradient;
    ``op`` transposes ``a`` (given as K x M) or ``b`` (given as N x K) where asked, without
    a copy."""
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    return call("vgg_onednn_matmul", ((m, n), a.dtype), a, b, transpose_a=bool(transpose_a),
                transpose_b=bool(transpose_b))


@jax.custom_vjp
def dense(x: Array, kernel: Array) -> Array:
    """``x @ kernel`` for (N, K) ``x`` and a (K, M) ``kernel`` (fc6-fc8), by oneDNN; both
    gradients are oneDNN products too, reading ``kernel`` and ``x`` transposed in place.

    At VGG's batch sizes these products are bound by reading the kernel (fc6: 411 MB in
    float32); XLA:CPU's ran about 1.5x slower (``benchmarks/results/onednn.md``).
    """
    return matmul(x, kernel)


def _dense_fwd(x, kernel):
    return matmul(x, kernel), (x, kernel)


def _dense_bwd(residuals, dy):
    x, kernel = residuals
    dy = dy.astype(x.dtype)
    return matmul(dy, kernel, transpose_b=True), matmul(x, dy, transpose_a=True)


dense.defvjp(_dense_fwd, _dense_bwd)


def _hwnc(a: Array) -> Array:
    return a.transpose(1, 2, 0, 3)


def _nhwc(a: Array) -> Array:
    return a.transpose(2, 0, 1, 3)


@jax.custom_vjp
def taps(x: Array, kernel: Array) -> Array:
    """``vgg_jax.compute.conv.taps``'s convolution (NHWC x HWIO -> NHWC) in one oneDNN call: one
    matrix product per kernel tap and map row, over only the pixels that tap reaches.

    The call takes the activations as HWNC (transposed here; between two such layers XLA
    cancels the transposes), where the rows of one map row that a tap reaches are
    contiguous for all images at once, so the products read and write the activations in
    place; XLA's version copies each tap's pixels out and pads each product back. Sums and
    gradients are float32 (bfloat16 products too), the result in ``x``'s dtype.
    """
    return _taps_fwd(x, kernel)[0]


def _taps_fwd(x, kernel):
    x = _hwnc(x)
    y = call("vgg_onednn_taps_forward", ((*x.shape[:3], kernel.shape[-1]), jnp.float32),
             x, kernel)
    return _nhwc(y).astype(x.dtype), (x, kernel)


def _taps_bwd(residuals, dy):
    x, kernel = residuals
    dx, dk = call("vgg_onednn_taps_backward", [(x.shape, jnp.float32),
                                                (kernel.shape, jnp.float32)],
                  _hwnc(dy.astype(x.dtype)), x, kernel)
    return _nhwc(dx).astype(x.dtype), dk.astype(kernel.dtype)


taps.defvjp(_taps_fwd, _taps_bwd)
