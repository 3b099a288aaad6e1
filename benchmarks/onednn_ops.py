"""Each oneDNN primitive of a convolution against XLA's: forward, input and kernel gradients.

    python benchmarks/onednn_ops.py            # VGG-16's 3x3 shapes at 224/8 and 32/128
    python benchmarks/onednn_ops.py --smoke    # tiny shapes: checks the script (tests)

For every shape the three products of a stride-1 "SAME" float32 convolution, each
jit-compiled alone and timed (best of ``--repeats`` after a warm-up call): XLA's (``vgg_jax.conv``
without oneDNN: ``lax.conv_general_dilated``, im2col on 2x2 maps, and their derivatives) and
oneDNN's (``vgg_jax.onednn``'s FFI targets), with the kernel oneDNN picks for each. This is
what ``onednn.gradient_by_xla`` rests on: where oneDNN's kernel-gradient primitive is its AVX2
one, XLA's is faster (and so is XLA's input gradient of 4x4 maps). Prints a markdown table
(CPU model and ISA first); ``--out DIR`` also writes ``DIR/onednn_ops.md``.
"""

import argparse
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_table  # noqa: E402
from vgg_jax import conv, onednn  # noqa: E402

# (batch, map side, in channels, out channels): VGG-16's 3x3 layers at 224/8, then the
# CIFAR-size ones at 32/128 (the first layer of each block only where its input differs).
SHAPES = [(8, 224, 64, 64), (8, 112, 128, 128), (8, 56, 256, 256), (8, 28, 512, 512),
          (8, 14, 512, 512), (128, 32, 64, 64), (128, 16, 128, 128), (128, 8, 256, 256),
          (128, 4, 256, 512), (128, 4, 512, 512), (128, 2, 512, 512)]
SMOKE = [(2, 8, 8, 8), (2, 4, 16, 16)]


def _xla(x, k):
    """The convolution as vgg_jax computes it without oneDNN (XLA's, im2col on 2x2 maps)."""
    algorithm = conv.choose(x.shape, k.shape, training=True, onednn=False)
    return conv.convolve(x, k, algorithm, training=True)


def _best_ms(f, args, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def measure(shape, repeats: int) -> dict:
    """{op: (XLA ms, oneDNN ms, oneDNN's kernel)} for one (N, side, C, O) 3x3 convolution."""
    n, h, c, o = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, o)) * 0.05, jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, h, h, o)), jnp.float32)
    call = onednn._call  # noqa: SLF001  (the primitives one by one, not the custom_vjp)
    ops = {
        "forward": ((_xla, onednn.conv), (x, k)),
        "backward_data": ((lambda dy, k: jax.vjp(lambda x: _xla(x, k), x)[1](dy)[0],
                           lambda dy, k: call("vgg_onednn_conv_backward_data",
                                              (x.shape, x.dtype), dy, k)), (dy, k)),
        "backward_weights": ((lambda x, dy: jax.vjp(lambda k: _xla(x, k), k)[1](dy)[0],
                              lambda x, dy: call("vgg_onednn_conv_backward_weights",
                                                 (k.shape, k.dtype), x, dy)), (x, dy)),
    }
    out = {}
    for op, ((xla_fn, onednn_fn), args) in ops.items():
        want, got = jax.jit(xla_fn)(*args), jax.jit(onednn_fn)(*args)
        err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
        if err > 1e-4:
            raise AssertionError(f"oneDNN's {op} differs from XLA's by {err:.1e} at {shape}")
        out[op] = (_best_ms(jax.jit(xla_fn), args, repeats),
                   _best_ms(jax.jit(onednn_fn), args, repeats),
                   onednn.implementation((n, h, h, c), (3, 3, c, o), jnp.float32, op))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the script")
    parser.add_argument("--out", help="folder to write onednn_ops.md into")
    args = parser.parse_args(argv)
    if not (onednn.available() and onednn.has_kernels(jnp.float32)):
        sys.exit("error: oneDNN's float32 kernels are unavailable here (see the log line).")
    command = "python benchmarks/onednn_ops.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    lines = ["# oneDNN's convolution primitives against XLA's, one by one\n",
             f"    {command.strip()}\n", f"Machine: {results_table.cpu_description()}. "
             f"float32, 3x3, best of {args.repeats} after a warm-up call; ms, and XLA's time "
             "over oneDNN's (above 1: oneDNN faster).\n",
             "| N x side x C -> O | op | XLA ms | oneDNN ms | XLA / oneDNN | oneDNN kernel |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for shape in SMOKE if args.smoke else SHAPES:
        n, h, c, o = shape
        for op, (xla_ms, onednn_ms, impl) in measure(shape, args.repeats).items():
            lines.append(f"| {n}x{h}x{h}x{c} -> {o} | {op} | {results_table.figure(xla_ms)} | "
                         f"{results_table.figure(onednn_ms)} | "
                         f"{xla_ms / onednn_ms:.2f}x | {impl} |")
            print(lines[-1], flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "onednn_ops.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
