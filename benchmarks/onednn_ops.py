"""Each oneDNN primitive of a convolution against XLA's: forward, input and kernel gradients.

    python benchmarks/onednn_ops.py            # VGG-16's 3x3 shapes at 224/8 and 32/128
    python benchmarks/onednn_ops.py --smoke    # tiny shapes: checks the script (tests)

For every shape the three products of a stride-1 "SAME" float32 convolution, each
jit-compiled alone and timed (best of ``--repeats`` after a warm-up call): XLA's (``vgg_jax.compute.conv``
without oneDNN: ``lax.conv_general_dilated``, im2col on 2x2 maps, and their derivatives) and
oneDNN's (``vgg_jax.compute.onednn``'s FFI targets), with the kernel oneDNN picks for each. This is
what ``onednn.gradient_by_xla`` rests on: where oneDNN's kernel-gradient primitive is its AVX2
one, XLA's is faster (and so is XLA's input gradient of 4x4 maps). The kernel gradient is
timed twice, reading the activations as NHWC and in oneDNN's blocked layout (copies
included): what ``onednn.blocked_kernel_gradient`` rests on. ``--tensorflow`` adds
TensorFlow's own three ops (``Conv2D``, ``Conv2DBackpropInput``, ``Conv2DBackpropFilter``: its
bundled, newer oneDNN, which is what Keras runs on CPU), timed in a child process so that
the two libraries' thread pools never meet. Prints a markdown table (CPU model and ISA
first); ``--out DIR`` also writes ``DIR/onednn_ops.md``.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import frameworks  # noqa: E402
import results_table  # noqa: E402
from vgg_jax.compute import onednn, xla  # noqa: E402

# (batch, map side, in channels, out channels): VGG-16's 3x3 layers at 224/8, then the
# CIFAR-size ones at 32/128 (the first layer of each block only where its input differs).
SHAPES = [(8, 224, 64, 64), (8, 112, 128, 128), (8, 56, 256, 256), (8, 28, 512, 512),
          (8, 14, 512, 512), (128, 32, 64, 64), (128, 16, 128, 128), (128, 8, 256, 256),
          (128, 4, 256, 512), (128, 4, 512, 512), (128, 2, 512, 512)]
SMOKE = [(2, 8, 8, 8), (2, 4, 16, 16)]


def _operands(shape):
    """x, kernel and output gradient of one (N, side, C, O) case, as numpy float32 arrays
    (the same in every process)."""
    n, h, c, o = shape
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, h, h, c)).astype(np.float32),
            (rng.normal(size=(3, 3, c, o)) * 0.05).astype(np.float32),
            rng.normal(size=(n, h, h, o)).astype(np.float32))


def _tensorflow_child(shapes, repeats: int) -> None:
    """Prints TensorFlow's version and {case: {op: [best ms, norm of the result]}}, as JSON."""
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    out = {}
    for shape in shapes:
        n, h, c, o = shape
        x, k, dy = (tf.constant(a) for a in _operands(shape))
        one = [1, 1, 1, 1]
        ops = {"forward": lambda: tf.nn.conv2d(x, k, 1, "SAME"),
               "backward_data": lambda: tf.raw_ops.Conv2DBackpropInput(
                   input_sizes=[n, h, h, c], filter=k, out_backprop=dy, strides=one,
                   padding="SAME"),
               "backward_weights": lambda: tf.raw_ops.Conv2DBackpropFilter(
                   input=x, filter_sizes=[3, 3, c, o], out_backprop=dy, strides=one,
                   padding="SAME")}
        case = out[json.dumps(shape)] = {}
        for op, fn in ops.items():
            run = tf.function(fn)
            case[op] = [_best_ms(lambda: run().numpy(), repeats),
                        float(np.linalg.norm(run().numpy()))]
    print(json.dumps({"version": tf.__version__, "cases": out}))


def tensorflow_ms(shapes, repeats: int) -> tuple[str, dict]:
    """TensorFlow's version and {(N, side, C, O): {op: (best ms, norm of the result)}},
    measured in a child process."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--tensorflow-child",
                           json.dumps(shapes), "--repeats", str(repeats)],
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return got["version"], {tuple(json.loads(key)): value for key, value in got["cases"].items()}


def _xla(x, k):
    """The convolution as vgg_jax computes it without oneDNN (XLA's, im2col on 2x2 maps)."""
    return xla.convolve(x, k, xla.choose(x.shape, k.shape, training=True))


def _best_ms(run, repeats: int) -> float:
    """Best milliseconds of ``repeats`` calls of ``run`` (which blocks) after a warm-up call."""
    return 1e3 * min(frameworks.step_times(run, repeats))


def measure(shape, repeats: int, tensorflow: dict | None = None) -> dict:
    """{op: (XLA ms, oneDNN ms, oneDNN's kernel, oneDNN ms in its blocked layout or None)}
    for one (N, side, C, O) 3x3 convolution (the blocked layout: the kernel gradient only).

    ``tensorflow``: this case's {op: (ms, norm)} from ``tensorflow_ms``, checked against
    oneDNN's result here.
    """
    n, h, c, o = shape
    x, k, dy = (jnp.asarray(a) for a in _operands(shape))
    call = onednn.call  # the primitives one by one, not the custom_vjp

    def kernel_gradient(blocked):
        return lambda x, dy: call("vgg_onednn_conv_backward_weights", (k.shape, k.dtype), x, dy,
                                  blocked=blocked)

    ops = {
        "forward": ((_xla, onednn.conv), (x, k)),
        "backward_data": ((lambda dy, k: jax.vjp(lambda x: _xla(x, k), x)[1](dy)[0],
                           lambda dy, k: call("vgg_onednn_conv_backward_data",
                                              (x.shape, x.dtype), dy, k)), (dy, k)),
        "backward_weights": ((lambda x, dy: jax.vjp(lambda k: _xla(x, k), k)[1](dy)[0],
                              kernel_gradient(False)), (x, dy)),
    }

    def timed(f, args):
        return _best_ms(lambda: jax.block_until_ready(f(*args)), repeats)

    def error(got, want):  # relative to the largest value
        return float(jnp.abs(got - want).max() / jnp.abs(want).max())

    out = {}
    for op, ((xla_fn, onednn_fn), args) in ops.items():
        xla_fn, onednn_fn = jax.jit(xla_fn), jax.jit(onednn_fn)  # compiled once: checked, timed
        want, got = xla_fn(*args), onednn_fn(*args)
        err = error(got, want)
        if err > 1e-4:
            raise AssertionError(f"oneDNN's {op} differs from XLA's by {err:.1e} at {shape}")
        norm = float(jnp.linalg.norm(got))
        if tensorflow and abs(tensorflow[op][1] - norm) > 1e-4 * norm:
            raise AssertionError(f"TensorFlow's {op} differs from oneDNN's at {shape}")
        blocked_ms = None
        if op == "backward_weights":
            blocked = jax.jit(kernel_gradient(True))
            err = error(blocked(*args), got)
            if err > 1e-4:
                raise AssertionError(f"the blocked kernel gradient differs by {err:.1e}")
            blocked_ms = timed(blocked, args)
        out[op] = (timed(xla_fn, args), timed(onednn_fn, args),
                   onednn.implementation((n, h, h, c), (3, 3, c, o), jnp.float32, op), blocked_ms)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the script")
    parser.add_argument("--out", help="folder to write onednn_ops.md into")
    parser.add_argument("--tensorflow", action="store_true",
                        help="add TensorFlow's ops (its bundled oneDNN, as Keras runs them)")
    parser.add_argument("--tensorflow-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tensorflow_child:
        return _tensorflow_child([tuple(s) for s in json.loads(args.tensorflow_child)],
                                 args.repeats)
    if not (onednn.available() and onednn.has_kernels(jnp.float32)):
        sys.exit("error: oneDNN's float32 kernels are unavailable here (see the log line).")
    command = "python benchmarks/onednn_ops.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    lines = ["# oneDNN's convolution primitives against XLA's, one by one\n",
             f"    {command.strip()}\n", f"Machine: {results_table.cpu_description()}. "
             f"float32, 3x3, best of {args.repeats} after a warm-up call; ms, and XLA's time "
             "over oneDNN's (above 1: oneDNN faster).\n",
             "| N x side x C -> O | op | XLA ms | oneDNN ms | XLA / oneDNN | oneDNN kernel | "
             "oneDNN blocked ms | NHWC / blocked |"
             + (" TensorFlow ms | TensorFlow / oneDNN |" if args.tensorflow else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if args.tensorflow else "")]
    shapes = SMOKE if args.smoke else SHAPES
    tensorflow = {}
    if args.tensorflow:
        version, tensorflow = tensorflow_ms(shapes, args.repeats)
        lines[2] = (lines[2].rstrip("\n") + f" TensorFlow {version}: its own ops (its bundled "
                    "oneDNN), in a child process; TensorFlow's time over vgg_jax's oneDNN's "
                    "(above 1: vgg_jax's faster).\n")
    print("\n".join(lines), flush=True)
    for shape in shapes:
        n, h, c, o = shape
        tf_case = tensorflow.get(shape)
        for op, (xla_ms, onednn_ms, impl, blocked_ms) in measure(shape, args.repeats,
                                                                  tf_case).items():
            blocked = (f" {results_table.figure(blocked_ms)} | {onednn_ms / blocked_ms:.2f}x |"
                       if blocked_ms else "  |  |")
            lines.append(f"| {n}x{h}x{h}x{c} -> {o} | {op} | {results_table.figure(xla_ms)} | "
                         f"{results_table.figure(onednn_ms)} | "
                         f"{xla_ms / onednn_ms:.2f}x | {impl} |" + blocked)
            if tf_case:
                tf_ms = tf_case[op][0]
                lines[-1] += f" {results_table.figure(tf_ms)} | {tf_ms / onednn_ms:.2f}x |"
            print(lines[-1], flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "onednn_ops.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
