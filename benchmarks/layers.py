"""Where a VGG step's time goes: each convolution alone, against the machine's matmul peak.

    python benchmarks/layers.py                    # VGG-16, 224x224, batch 8 (about 6 min)
    python benchmarks/layers.py --smoke --out DIR  # a tiny net: checks the script (tests)

For every convolution of the network (identical shapes measured once) this times, in one
process: XLA's convolution as vgg_jax runs it without oneDNN (forward, and forward + backward:
the input and kernel gradients, the kernel gradient alone for conv1_1), oneDNN's
(``vgg_jax.compute.onednn.conv``, where its float32 kernels are built), PyTorch's (NCHW, eager) where
installed, and a Winograd F(2x2, 3x3) formulation in JAX (Lavin & Gray, 2016: 2.25x fewer
multiplications; input gradient by Winograd too, kernel gradient by XLA; not for conv1_1,
whose 3 input channels leave nothing to save, and counted as XLA there in the totals). GFLOP/s count the
direct convolution's 2 FLOP per multiply-accumulate for every method, so above-peak values
would mean fewer multiplications paid off. The sum of XLA's layer times is set against the
whole training step: the difference is everything outside the convolutions (bias, ReLU,
pooling, the fully connected layers, the optimiser).

Writes ``layers.md`` and ``layers.png`` to ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import frameworks  # noqa: E402  (imports vgg_jax, which sets the fast XLA:CPU flags)
import results_table  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from speed import machine  # noqa: E402

from vgg_jax import models  # noqa: E402
from vgg_jax.compute import conv, onednn, winograd, xla  # noqa: E402

METHODS = (("xla", "XLA"), ("onednn", "oneDNN"), ("torch", "PyTorch"),
           ("winograd", "Winograd F(2,3), JAX"),
           ("winograd_cpu", "Winograd F(2,3), C++ transforms"))

def direct(x, w):
    """XLA's convolution (im2col on the tiny maps where vgg_jax uses it without oneDNN)."""
    return conv.convolve(x, w, "im2col" if conv.choose(x.shape, w.shape, onednn_ok=False)
                         == "im2col" else "xla")


def _check(method, x, w, name: str) -> None:
    want, got = direct(x, w), method(x, w)
    err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    if err > 1e-5:
        raise AssertionError(f"{method.__name__} differs from XLA by {err:.1e} at {name}")


def layer_shapes(arch: str, size: int, width: float) -> list[tuple[str, int, int, int, int]]:
    """(name, map size, in channels, out channels, kernel) of every convolution."""
    side, cin, shapes = size, 3, []
    for layer in models.get_spec(arch).layers():
        if layer.kind == "conv":
            cout = max(1, round(layer.channels * width))
            shapes.append((layer.name, side, cin, cout, layer.kernel))
            cin = cout
        elif layer.kind == "pool":
            side //= 2
    return shapes


def _best(run, repeats: int) -> float:
    return min(frameworks.step_times(run, repeats))


def time_jax(conv, x, w, first: bool, repeats: int) -> tuple[float, float]:
    """(forward s, forward + backward s); the first layer needs no input gradient."""
    ct = jnp.ones(x.shape[:3] + (w.shape[-1],), x.dtype)
    fwd = jax.jit(conv)
    argnums = (1,) if first else (0, 1)
    # value_and_grad: with grad alone XLA would drop the forward convolution as dead code.
    bwd = jax.jit(jax.value_and_grad(lambda x, w: jnp.vdot(conv(x, w), ct), argnums))
    return (_best(lambda: jax.block_until_ready(fwd(x, w)), repeats),
            _best(lambda: jax.block_until_ready(bwd(x, w)), repeats))


def time_torch(batch, side, cin, cout, kernel, first: bool, repeats: int):
    """PyTorch's (forward s, forward + backward s), or (None, None) without PyTorch."""
    try:
        import torch
    except ImportError:
        return None, None
    x = torch.randn(batch, cin, side, side, requires_grad=not first)
    w = torch.randn(cout, cin, kernel, kernel, requires_grad=True)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, padding=kernel // 2)

    def backward():
        torch.nn.functional.conv2d(x, w, padding=kernel // 2).sum().backward()

    return _best(forward, repeats), _best(backward, repeats)


def measure(arch: str, size: int, batch: int, width: float, repeats: int) -> list[dict]:
    """One row per convolution with seconds and GFLOP/s of each method."""
    rows, cache = [], {}
    rng = np.random.default_rng(0)
    for name, side, cin, cout, kernel in layer_shapes(arch, size, width):
        key = (side, cin, cout, kernel, name == "conv1_1")
        if key not in cache:
            x = jnp.asarray(rng.standard_normal((batch, side, side, cin), np.float32))
            w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout), np.float32) * 0.05)
            first = name == "conv1_1"
            t = {"xla": time_jax(direct, x, w, first, repeats),
                 "torch": time_torch(batch, side, cin, cout, kernel, first, repeats)}
            if onednn.available() and onednn.has_kernels(jnp.float32):
                _check(onednn.conv, x, w, name)
                t["onednn"] = time_jax(onednn.conv, x, w, first, repeats)
            if kernel == 3 and not first:  # 3 input channels: nothing to gain
                _check(xla.winograd_conv, x, w, name)
                t["winograd"] = time_jax(xla.winograd_conv, x, w, first, repeats)
            if (kernel == 3 and not first and winograd.available()
                    and winograd.supports(x.shape, w.shape, x.dtype)):
                cpu = lambda x, w: conv.convolve(x, w, "winograd")  # noqa: E731  (C++ here)
                _check(cpu, x, w, name)
                t["winograd_cpu"] = time_jax(cpu, x, w, first, repeats)
            cache[key] = t
            print(f"[layers] {name} {side}x{side} {cin}->{cout}: " + ", ".join(
                f"{m} {s[0] * 1e3:.1f}/{s[1] * 1e3:.1f} ms" for m, s in t.items()
                if s[0] is not None), flush=True)
        flop = 2 * batch * side * side * cin * cout * kernel * kernel
        # A training step costs 3x the forward pass; conv1_1 has no input gradient (2x).
        train_flop = flop * (2 if name == "conv1_1" else 3)
        uses = [conv.choose((batch, side, side, cin), (kernel, kernel, cin, cout), training=t)
                for t in (False, True)]
        rows.append({"name": name, "side": side, "cin": cin, "cout": cout, "kernel": kernel,
                     "uses": uses, "flop": flop, "train_flop": train_flop, **{
                         m: None if s[0] is None else {
                             "fwd_s": s[0], "train_s": s[1], "fwd_gflops": flop / s[0] / 1e9,
                             "train_gflops": train_flop / s[1] / 1e9}
                         for m, s in cache[key].items()}})
    return rows


def step_seconds(arch: str, size: int, batch: int, width: float, repeats: int) -> float:
    """vgg_jax's whole training step, median seconds, as the speed suite measures it."""
    case = frameworks.Case(arch, size, batch, steps=repeats, width=width, modes=("train",))
    return batch / frameworks.measure_jax(case)[0]["images_per_s"]


def report(rows, peak: float, step_s: float, args, command: str) -> str:
    """The markdown table, totals and the share of the step outside the convolutions."""
    def cell(r, method, what):
        m = r.get(method)
        if not m:
            return "-"
        return results_table.figure(m[f"{what}_gflops"])

    lines = ["# Convolutions one by one: XLA, oneDNN, PyTorch and Winograd F(2x2, 3x3)\n",
             f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}:\n", f"    {command}\n",
             f"Machine: {machine()}; matmul peak {peak / 1e9:.0f} GFLOP/s "
             f"(float32, XLA, best square product). {args.arch} at {args.size}x{args.size}, "
             f"batch {args.batch}, float32; best of {args.repeats} after a warm-up call.\n",
             "GFLOP/s count the direct convolution's FLOPs for every method (train: forward + "
             "input and kernel gradients, 3x the forward FLOPs; conv1_1 2x, no input "
             "gradient).\n",
             "| layer | map | in -> out | vgg_jax uses (infer / train) | "
             + " | ".join(f"{m} {w}" for m, _ in METHODS for w in ("fwd", "train")) + " |",
             "|---" * (4 + 2 * len(METHODS)) + "|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['side']} | {r['cin']} -> {r['cout']} | {' / '.join(r['uses'])} | "
                     + " | ".join(cell(r, m, w) for m, _ in METHODS
                                  for w in ("fwd", "train")) + " |")
    # Per method, and vgg_jax's choice per layer; Winograd counts XLA where it has no entry.
    picks = {"xla": lambda r: r["xla"], "onednn": lambda r: r.get("onednn"),
             "torch": lambda r: r["torch"], "winograd": lambda r: r.get("winograd") or r["xla"],
             "winograd_cpu": lambda r: r.get("winograd_cpu") or r.get("onednn") or r["xla"]}
    totals = {m: (sum(pick(r)["fwd_s"] for r in rows), sum(pick(r)["train_s"] for r in rows))
              for m, pick in picks.items() if all(pick(r) for r in rows)}
    def timed_as(r, use):  # im2col is timed as "xla"; Winograd's is the C++ one where built
        cpu = "winograd_cpu" if r.get("winograd_cpu") else "winograd"
        return r[{"winograd": cpu, "onednn": "onednn"}.get(use, "xla")]

    ours = [[timed_as(r, r["uses"][t]) for r in rows] for t in (0, 1)]
    totals["vgg_jax"] = (sum(m["fwd_s"] for m in ours[0]), sum(m["train_s"] for m in ours[1]))
    flop = sum(r["flop"] for r in rows)
    train_flop = sum(r["train_flop"] for r in rows)
    lines.append("| all | | | | " + " | ".join(
        f"{flop / totals[m][0] / 1e9:.0f} | {train_flop / totals[m][1] / 1e9:.0f}"
        if m in totals else "- | -" for m, _ in METHODS) + " |\n")
    fwd_s, conv_s = totals["vgg_jax"]
    lines += [
        f"vgg_jax's choice per layer (column 'uses'): {flop / fwd_s / 1e9:.0f} GFLOP/s forward "
        f"({100 * flop / fwd_s / peak:.0f}% of the peak), {train_flop / conv_s / 1e9:.0f} in "
        f"training ({100 * train_flop / conv_s / peak:.0f}%); XLA alone: "
        f"{100 * flop / totals['xla'][0] / peak:.0f}% and "
        f"{100 * train_flop / totals['xla'][1] / peak:.0f}%.",
        f"vgg_jax's whole training step (`steps.train_step`, median of {args.repeats}): "
        f"{step_s:.3g} s, of which its convolutions alone take {conv_s:.3g} s "
        f"({100 * conv_s / step_s:.0f}%); everything else (bias, ReLU, pooling, fc6-fc8, "
        f"loss, optimiser) {step_s - conv_s:.3g} s.\n"]
    return "\n".join(lines)


def plot(rows, peak: float, path: str) -> None:
    """GFLOP/s per layer and method, training and forward, with the peak as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    x = np.arange(len(rows))
    for ax, what in zip(axes, ("fwd", "train")):
        for i, (m, label) in enumerate(METHODS):
            values = [r[m][f"{what}_gflops"] if r.get(m) else 0 for r in rows]
            width = 0.8 / len(METHODS)
            ax.bar(x + (i - (len(METHODS) - 1) / 2) * width, values, width, label=label)
        ax.axhline(peak / 1e9, color="k", ls="--", lw=1, label="matmul peak")
        ax.set_xticks(x, [r["name"] for r in rows], rotation=60, fontsize=7)
        ax.set_title({"fwd": "forward", "train": "forward + backward"}[what])
        ax.set_ylabel("GFLOP/s (direct-convolution FLOPs)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny net: checks the script")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if args.smoke:
        args.arch, args.size, args.batch, args.width, args.repeats = "vgg11", 32, 2, 0.0625, 1
    command = "python benchmarks/layers.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    os.makedirs(args.out, exist_ok=True)
    peak = frameworks.matmul_peak("vgg_jax", "float32", (256,) if args.smoke else
                                  (1024, 2048, 3072))
    rows = measure(args.arch, args.size, args.batch, args.width, args.repeats)
    step_s = step_seconds(args.arch, args.size, args.batch, args.width, args.repeats)
    md = report(rows, peak, step_s, args, command.strip())
    with open(os.path.join(args.out, "layers.md"), "w") as f:
        f.write(md)
    plot(rows, peak, os.path.join(args.out, "layers.png"))
    print(md)


if __name__ == "__main__":
    main()
