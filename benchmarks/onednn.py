"""oneDNN's kernels against XLA's: whole training and inference steps, side by side.

    python benchmarks/onednn.py [--cases vgg16:224:8,vgg11:32:128:0.25] [--rounds 3]
                                [--fc | --kernel-gradient | --input-gradient | --taps |
                                 --blocked]

For each case (arch:image size:batch[:width]) and dtype (float32, bfloat16), the same
jit-compiled SGD training step and inference step, built twice in one process: with
``vgg_jax.compute.conv``'s rules without oneDNN (XLA, im2col, Winograd: what vgg_jax ran before
``vgg_jax.compute.onednn``) and with every convolution and fc6-fc8 by oneDNN; with ``--fc``, both
with oneDNN's convolutions, fc6-fc8 XLA's dots against oneDNN's; with ``--kernel-gradient``,
everything oneDNN's but the convolutions' kernel gradients, oneDNN's against XLA's
(``ComputeOptions.kernel_gradient``); with ``--input-gradient`` the same for their input gradients
(``ComputeOptions.input_gradient``), the kernel gradients as "auto" picks them; with ``--taps``, all
"auto", small float32 maps by oneDNN's convolutions against tap by tap (``ComputeOptions.taps``); with
``--blocked``, all "auto", oneDNN's kernel gradients reading NHWC against the layout "auto"
picks (``ComputeOptions.kernel_gradient_layout``). Images/s are medians over ``--rounds`` rounds of
``--steps`` steps, the two alternating (and taking turns to go first). Prints the CPU model
and its ISA extensions and oneDNN's kernel for a 3x3 layer; appends rows to
benchmarks/results/onednn.md.
"""

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_table  # noqa: E402
from vgg_jax import models  # noqa: E402
from vgg_jax.compute import onednn  # noqa: E402
from vgg_jax.compute.modules import cpu  # noqa: E402
from vgg_jax.compute.options import ComputeOptions  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build(arch, size, batch, width, dtype, use_onednn: bool, fc_only: bool = False,
          gradients: dict | None = None, taps: bool = True):
    """(train step, inference step, state) compiled with or without oneDNN's kernels (with
    ``fc_only``: with or without them for fc6-fc8, the convolutions oneDNN's), the
    convolutions' gradients routed by ``gradients`` (e.g. ``{"KERNEL_GRADIENT": "xla"}``:
    ``ComputeOptions``' fields, upper-cased; the others "auto"), small maps tap by tap if ``taps``
    (``ComputeOptions.taps``)."""
    options = ComputeOptions(onednn=use_onednn or fc_only, onednn_fc=use_onednn, taps=taps,
                             **{name.lower(): who for name, who in (gradients or {}).items()})
    plain = models.VGG(arch=arch, num_classes=1000 if width == 1 else 10, width=width,
                       dtype=dtype, dropout_rate=0.0)
    model = cpu(plain, training=True, options=options)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32)
    y = jnp.asarray(np.arange(batch) % model.num_classes)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    tx = optax.sgd(0.001, 0.9)

    def loss(params, stats):
        logits, new = model.apply({"params": params, **stats}, x, train=True,
                                  mutable=list(stats))
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), y).mean(), new

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))  # as the trainer's step
    def train(params, stats, opt):
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt, value

    inference_model = cpu(plain, training=False, options=options)
    infer = jax.jit(lambda v: inference_model.apply(v, x))
    params = variables["params"]
    stats = {k: v for k, v in variables.items() if k != "params"}
    state = [jax.tree.map(jnp.copy, params), stats, tx.init(params)]  # donated
    state[:3] = train(*state)[:3]  # compile now, with this route
    jax.block_until_ready(state)
    jax.block_until_ready(infer(variables))
    return train, infer, state, variables


def timed(run, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        out = run()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="vgg16:224:8,vgg11:32:128:0.25")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fc", action="store_true",
                        help="Only fc6-fc8 with and without oneDNN (convolutions oneDNN's).")
    parser.add_argument("--kernel-gradient", action="store_true",
                        help="Only the kernel gradients by oneDNN and by XLA (all else oneDNN's).")
    parser.add_argument("--input-gradient", action="store_true",
                        help="Only the input gradients by oneDNN and by XLA (all else 'auto').")
    parser.add_argument("--taps", action="store_true",
                        help="Only small float32 maps by oneDNN's convolutions and tap by tap.")
    parser.add_argument("--blocked", action="store_true",
                        help="Only oneDNN's kernel gradients reading NHWC and as 'auto' picks.")
    parser.add_argument("--out", default=results_table.RESULTS, help="Folder of onednn.md.")
    args = parser.parse_args(argv)
    # The onednn setting compared: its value without and with, and the rows' label.
    gradient, without, with_, label = (
        ("KERNEL_GRADIENT", "onednn", "xla", " kernel grad by XLA") if args.kernel_gradient else
        ("INPUT_GRADIENT", "onednn", "xla", " input grad by XLA") if args.input_gradient else
        ("KERNEL_GRADIENT_LAYOUT", "nhwc", "auto", " kernel grad blocked") if args.blocked else
        (None, None, None, ""))
    if args.fc + args.kernel_gradient + args.input_gradient + args.taps + args.blocked > 1:
        sys.exit("error: --fc, --kernel-gradient, --input-gradient, --taps and --blocked "
                 "compare different things; pass one.")
    print(results_table.cpu_description(), flush=True)
    if not onednn.available():
        sys.exit("error: oneDNN kernels unavailable here (see the log line above).")
    for case in args.cases.split(","):
        arch, size, batch, *rest = case.split(":")
        size, batch, width = int(size), int(batch), float(rest[0]) if rest else 1.0
        for dname in args.dtypes.split(","):
            dtype = DTYPES[dname]
            impl = onednn.implementation((batch, size // 4, size // 4, round(128 * width)),
                                         (3, 3, round(128 * width), round(128 * width)), dtype)
            runs = {}
            for use in (False, True):
                if args.taps:
                    built = build(arch, size, batch, width, dtype, True, taps=use)
                elif gradient:
                    built = build(arch, size, batch, width, dtype, True,
                                  gradients={gradient: with_ if use else without})
                else:
                    built = build(arch, size, batch, width, dtype, use, args.fc)
                train, infer, state, variables = built

                def train_step(train=train, state=state):
                    state[:3] = train(*state)[:3]
                    return state[0]

                runs[use] = {"train": train_step, "infer": lambda infer=infer, v=variables: infer(v),
                             "times": {"train": [], "infer": []}}
            for r in range(args.rounds):
                for use in (False, True) if r % 2 == 0 else (True, False):  # no order bias
                    run = runs[use]
                    for mode in ("train", "infer"):
                        run["times"][mode].append(timed(run[mode], args.steps))
            for mode in ("train", "infer"):
                rate = {use: batch / np.median(run["times"][mode]) for use, run in runs.items()}
                row = results_table.append_row(
                    "onednn", "oneDNN's kernels against XLA's, whole steps",
                    "The same jit-compiled step built twice in one process: with vgg_jax.compute.conv's "
                    "rules without oneDNN (XLA's convolutions, im2col on tiny maps, Winograd "
                    "in float32 inference: vgg_jax before vgg_jax.compute.onednn) and with every "
                    "convolution by oneDNN (forward, input and kernel gradients) and, from "
                    "2026-12-02, fc6-fc8's products too (and, from session 12, the kernel "
                    "gradients as ComputeOptions.kernel_gradient's 'auto' picks them). Rows with 'fc "
                    "only' compare fc6-fc8 by XLA and by oneDNN, both with oneDNN's "
                    "convolutions (--fc); rows with 'kernel grad' compare oneDNN's kernel "
                    "gradients ('without') with XLA's ('with'), all else oneDNN's "
                    "(--kernel-gradient); 'input grad' the same for input gradients, kernel "
                    "gradients as 'auto' picks them (--input-gradient); 'taps' compare small "
                    "float32 maps by oneDNN's convolutions and tap by tap (conv.taps), all else "
                    "'auto' (--taps); 'kernel grad blocked' oneDNN's kernel gradients reading "
                    "NHWC ('without') and the layout onednn.blocked_kernel_gradient picks "
                    "('with'), all else 'auto' (--blocked). Images/s: medians over rounds, the "
                    "two alternating.",
                    ["net", "batch", "dtype", "step", "img/s without", "img/s with oneDNN",
                     "speed-up", "oneDNN kernel (3x3)"],
                    [f"{arch}/{width:g} {size}" if width != 1 else f"{arch} {size}", batch,
                     dname + (" fc only" if args.fc else "") + (" taps" if args.taps else "")
                     + label,
                     mode, f"{rate[False]:.2f}",
                     f"{rate[True]:.2f}", f"{rate[True] / rate[False]:.2f}x", impl],
                    directory=args.out)
                print(row, end="", flush=True)


if __name__ == "__main__":
    main()
