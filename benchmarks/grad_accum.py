"""Gradient accumulation: training images/s and peak memory of one update, k = 1 against k.

    python benchmarks/grad_accum.py [--arch vgg16] [--image_size 224] [--batch 32] [--accum 4]

The same global batch (``--batch``) and the same update, computed in one pass (k = 1) or as
``--accum`` micro-batches (``grad_accum_steps``), side by side in one run on the first local
device: the path this backend runs (unrolled on CPU), and the ``lax.scan`` that accelerators
run, compiled for its peak memory. Peak memory is XLA's buffer assignment of the compiled train
step (arguments + outputs - donated + temporaries: what the device must hold), the figure
that decides whether a batch fits on an accelerator. Images/s alternate k = 1 and k over
``--rounds`` rounds of ``--steps`` steps. Appends a row to benchmarks/results/grad_accum.md.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_table  # noqa: E402
from configs import default  # noqa: E402
from vgg_jax import models  # noqa: E402
from vgg_jax.training import optim, steps

MIB = 1 << 20


def peak_bytes(compiled) -> int:
    """What the device holds while the step runs, from XLA's buffer assignment."""
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.batch % args.accum:
        parser.error(f"--batch {args.batch} must be a multiple of --accum {args.accum}")
    config = default.get_config()
    config.schedule = "constant"
    model = models.VGG(arch=args.arch, num_classes=1000, dropout_rate=0.5,
                       bn_axis_name=steps.AXIS)
    schedule = optim.create_schedule(config, 100, 100)
    tx = optim.create_optimizer(config, schedule)
    rng = np.random.default_rng(0)
    batch = {"images": rng.integers(0, 255, (1, args.batch, args.image_size, args.image_size,
                                             3)).astype(np.uint8),
             "labels": rng.integers(0, 1000, (1, args.batch))}
    runs = {}
    for k in (1, args.accum):
        state, key = steps.initial_state(model, tx, args.image_size, 0)
        p_train, _ = steps.pmap_steps(model, tx, schedule, config.mean_rgb, config.std_rgb,
                                      steps.StepOptions(grad_accum_steps=k))
        start = time.time()
        compiled = p_train.lower(state, batch, key).compile()
        compile_s = time.time() - start
        state, metrics = compiled(state, batch, key)  # warm-up
        jax.block_until_ready(metrics)
        runs[k] = {"step": compiled, "state": state, "key": key, "times": [],
                   "peak": peak_bytes(compiled), "compile": compile_s}
        print(f"k={k}: compiled in {compile_s:.0f} s, peak {runs[k]['peak'] / MIB:.0f} MiB",
              flush=True)
    for r in range(args.rounds):
        for k, run in runs.items():
            start = time.time()
            for _ in range(args.steps):
                run["state"], metrics = run["step"](run["state"], batch, run["key"])
            jax.block_until_ready(metrics)
            run["times"].append((time.time() - start) / args.steps)
            print(f"round {r + 1}: k={k} {args.batch / run['times'][-1]:.1f} images/s",
                  flush=True)
    state, key = steps.initial_state(model, tx, args.image_size, 0)
    p_scan, _ = steps.pmap_steps(model, tx, schedule, config.mean_rgb, config.std_rgb,
                                 # the accelerators' path, compiled for its memory alone
                                 steps.StepOptions(grad_accum_steps=args.accum,
                                                   accumulation="scan"))
    scan_peak = peak_bytes(p_scan.lower(state, batch, key).compile())
    one, many = runs[1], runs[args.accum]
    rate = {k: args.batch / np.median(run["times"]) for k, run in runs.items()}
    row = results_table.append_row(
        "grad_accum", "Gradient accumulation: the same update in one pass or k micro-batches",
        "One train step of the global batch on one device (`grad_accum_steps` = 1 and k, "
        "side by side in one run). Peak memory: XLA's buffer assignment of the compiled "
        "step (arguments + outputs - donated + temporaries). Micro-batches run in a "
        "`lax.scan` on accelerators (one micro-batch's activations alive at a time: the "
        "scan columns, compiled here for their memory) and unrolled on CPU, where XLA "
        "computes weight gradients ~20x slower inside loops (the 'this backend' columns "
        "and the images/s). Images/s: median over rounds.",
        ["net", "batch", "k", "backend", "peak MiB (k=1)", "peak MiB (k, this backend)",
         "peak MiB (k, scan)", "scan memory ratio", "img/s (k=1)", "img/s (k)",
         "speed ratio"],
        [f"{args.arch} {args.image_size}", args.batch, args.accum, jax.default_backend(),
         f"{one['peak'] / MIB:.0f}", f"{many['peak'] / MIB:.0f}", f"{scan_peak / MIB:.0f}",
         f"{scan_peak / one['peak']:.2f}x", f"{rate[1]:.1f}", f"{rate[args.accum]:.1f}",
         f"{rate[args.accum] / rate[1]:.2f}x"])
    print(row, end="")


if __name__ == "__main__":
    main()
