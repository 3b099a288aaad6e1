"""Speed suite: vgg_jax against PyTorch and Keras, side by side in one run.

    python benchmarks/speed.py            # the full grid (about 25 min on 2 cores)
    python benchmarks/speed.py --quick    # VGG-16 only (about 6 min)
    python benchmarks/speed.py --quick --rounds 3   # each case 3 times, frameworks in turn
    python benchmarks/speed.py --smoke --out DIR   # a tiny net: checks the suite (tests)

Measures, each framework in its own process (``benchmarks/frameworks.py``):
- the machine's matmul peak (best square product, float32 in XLA and PyTorch, bfloat16 in
  XLA), the reference for utilisation;
- per configuration, image size, batch and dtype: training-step and inference images/s,
  compile (first-call) seconds, peak resident memory; vgg_jax's FLOP/s (2 FLOP per MAC, a
  training step counted as 3x the forward pass) and utilisation of the measured peak;
  PyTorch (eager) and Keras (TensorFlow) as ratios to vgg_jax;
- the input pipeline's images/s per core (``benchmarks/pipeline.py``'s fused path) times
  the host's cores, against the training throughput of VGG-16 at 224.
Writes ``speed.md`` (tables, targets, machine, command) and ``speed.png`` to
``benchmarks/results/`` (or ``--out``). PyTorch comes with ``pip install -e ".[bench]"``;
without it its columns say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import results_table  # noqa: E402
from frameworks import Case  # noqa: E402

from vgg_jax.compute import hugepages  # noqa: E402

FRAMEWORKS = ("vgg_jax", "pytorch", "keras")
NO_BF16 = ("not measured: this CPU has no bfloat16 arithmetic (no AVX-512 BF16, no AMX), so "
           "every framework converts to float32 and back, slower than float32 (PyTorch's "
           "square bfloat16 products alone took minutes on an AVX2 Zen 3); --bfloat16 "
           "measures it anyway")
TABLE1 = ("vgg11", "vgg11_lrn", "vgg13", "vgg16_conv1", "vgg16", "vgg19")
LETTERS = dict(zip(TABLE1, ("A", "A-LRN", "B", "C", "D", "E")))


def grid(name: str, bfloat16: bool = True) -> list[tuple[Case, tuple[str, ...]]]:
    """(case, frameworks) pairs of a named grid (without its bfloat16 cases unless
    ``bfloat16``; the smoke grid keeps them)."""
    full = name == "full"
    archs = TABLE1 if full else ("vgg16",)
    cases = [(Case(a, 224, 8), FRAMEWORKS) for a in archs]
    cases += [(Case("vgg16", 224, 16), FRAMEWORKS)] if full else []
    cases += [(Case("vgg16", 224, 8, "bfloat16"), FRAMEWORKS)] if bfloat16 else []
    cases += [(Case(a, 32, b, steps=5), FRAMEWORKS) for a in archs
              for b in (128,)]
    if name == "smoke":
        cases = [(Case("vgg11", 32, 4, steps=1, width=0.0625), FRAMEWORKS),
                 (Case("vgg11", 32, 4, "bfloat16", steps=1, width=0.0625), FRAMEWORKS)]
    return cases


def _worker(args) -> None:
    """Child process: measures the cases given as JSON, prints one JSON line per result."""
    import frameworks
    if args.worker == "peak":
        dtypes = ("float32", "bfloat16") if args.bfloat16 else ("float32",)
        out = {dtype: frameworks.matmul_peak("vgg_jax", dtype, args.peak_sizes)
               for dtype in dtypes}
        for library in ("pytorch", "onednn"):  # the fastest library sets the peak
            for dtype in dtypes:
                try:
                    out[f"{library}_{dtype}"] = frameworks.matmul_peak(library, dtype,
                                                                       args.peak_sizes)
                except ImportError:
                    pass
        print("RESULT " + json.dumps(out), flush=True)
        return
    if args.worker == "pipeline":
        import pipeline
        import tensorflow as tf
        from vgg_jax.data import augment
        images = pipeline.photos(64)
        fn = lambda b, seed: (augment.to_uint8(  # noqa: E731
            augment.train_image(b, seed, 224, 256, 512, flip=False)), augment.flip_draw(seed))
        tf.config.set_visible_devices([], "GPU")
        print("RESULT " + json.dumps({"per_core": pipeline.rate(images, fn, args.seconds, 1)}),
              flush=True)
        return
    for fields in json.loads(args.cases):
        case = Case(**{**fields, "modes": tuple(fields["modes"])})
        for r in frameworks.MEASURE[args.worker](case):
            print("RESULT " + json.dumps({**dataclasses.asdict(case), **r}), flush=True)


def _run_child(argv: list[str], timeout: float) -> tuple[list[dict], str]:
    """Runs this script as a worker; returns its RESULT lines and, on failure, why.

    vgg_jax's worker gets the environment its commands restart with (huge pages,
    ``vgg_jax.compute.hugepages``); PyTorch's and Keras's run as installed.
    """
    env = hugepages.environment() if argv[:2] == ["--worker", "vgg_jax"] else dict(os.environ)
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    error = ""
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit code {proc.returncode}"
    return results, error


def available(framework: str) -> str:
    """'' if ``framework``'s package imports here, else how to get it."""
    module = {"vgg_jax": "jax", "pytorch": "torch", "keras": "keras"}[framework]
    import importlib.util
    if importlib.util.find_spec(module) is None:
        return "not installed (pip install -e \".[bench]\")"
    return ""


def measure_all(cases, timeout: float, rounds: int = 1) -> tuple[list[dict], dict[str, str]]:
    """Runs every case, grouping cases of one framework and image size into one process,
    ``rounds`` times over, the frameworks taking turns in each round; every row says its
    ``round``."""
    results, errors = [], {}
    groups: dict[tuple[str, int], list[Case]] = {}
    for case, fws in cases:
        for fw in fws:
            groups.setdefault((fw, case.size), []).append(case)
    for round_ in range(rounds):
        for (fw, size), group in groups.items():
            missing = available(fw)
            if missing:
                errors[fw] = missing
                continue
            start = time.time()
            print(f"[speed] {fw} at {size}x{size}: {len(group)} case(s)"
                  + (f", round {round_ + 1}/{rounds}" if rounds > 1 else "") + " ...", flush=True)
            rows, error = _run_child(["--worker", fw, "--cases", json.dumps(
                [dataclasses.asdict(c) for c in group])], timeout)
            for r in rows:
                r["framework"], r["round"] = fw, round_
                print(f"[speed]   {r['arch']} b{r['batch']} {r['dtype']} {r['mode']}: "
                      f"{r['images_per_s']:.2f} img/s", flush=True)
            results += rows
            if error:
                errors[f"{fw} {size}"] = error
                print(f"[speed]   failed: {error}", flush=True)
            print(f"[speed]   {time.time() - start:.0f} s", flush=True)
    return results, errors


def combine(results: list[dict]) -> tuple[list[dict], dict[tuple, list[float]]]:
    """One row per framework and case from several rounds: the median images/s and compile
    time, the highest resident peak; and, per vgg_jax case and other framework, the ratios
    of each round (each from measurements minutes apart, not hours)."""
    import statistics
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["framework"], *_key(r)), []).append(r)
    combined = []
    for rows in groups.values():
        combined.append({**rows[0],
                         "images_per_s": statistics.median(r["images_per_s"] for r in rows),
                         "first_call_s": statistics.median(r["first_call_s"] for r in rows),
                         "peak_rss_gib": max(r["peak_rss_gib"] for r in rows)})
    per_round = {(r["round"], r["framework"], *_key(r)): r["images_per_s"] for r in results}
    ratios: dict[tuple, list[float]] = {}
    for (round_, fw, *key), rate in per_round.items():
        for other in FRAMEWORKS[1:] if fw == "vgg_jax" else ():
            their = per_round.get((round_, other, *key))
            if their:
                ratios.setdefault((other, *key), []).append(rate / their)
    return combined, ratios


def machine() -> str:
    """CPU model, cores, memory and the framework versions, in one line."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name in ("jax", "flax", "torch", "tensorflow", "keras"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    flags = os.environ.get("XLA_FLAGS", "")
    tunables = hugepages.environment().get("GLIBC_TUNABLES", "")
    return (f"{results_table.cpu_description()}, {memory:.0f} GiB; Python "
            f"{platform.python_version()}; {', '.join(versions)}"
            + (f"; XLA_FLAGS={flags}" if flags else "")
            + (f"; vgg_jax's processes: GLIBC_TUNABLES={tunables} (transparent huge pages "
               f"{hugepages.thp_mode()})" if tunables else ""))


def _key(r: dict) -> tuple:
    return (r["arch"], r["size"], r["batch"], r["dtype"], r["mode"])


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def report(results: list[dict], peaks: dict, pipeline_rate: float | None,
           errors: dict, command: str, seconds: float) -> tuple[str, list[dict]]:
    """The markdown report and the joined rows (one per case and mode)."""
    import frameworks
    rounds = 1 + max((r.get("round", 0) for r in results), default=0)
    results, round_ratios = combine(results)
    by = {(r["framework"], *_key(r)): r for r in results}
    fp32_peak = max(peaks.get(k, 0.0) for k in ("float32", "pytorch_float32", "onednn_float32"))
    bf16_peak = max(peaks.get(k, 0.0) for k in ("bfloat16", "pytorch_bfloat16",
                                                  "onednn_bfloat16"))
    rows = []
    for r in results:
        if r["framework"] != "vgg_jax":
            continue
        macs = frameworks.forward_macs(r["arch"], r["size"], r["width"])
        flops = r["images_per_s"] * 2 * macs * (3 if r["mode"] == "train" else 1)
        peak = bf16_peak if r["dtype"] == "bfloat16" else fp32_peak
        row = {**r, "gflops": flops / 1e9, "utilisation": flops / peak}
        for fw in FRAMEWORKS[1:]:
            other = by.get((fw, *_key(r)))
            row[fw] = other
            row[f"{fw}_ratio"] = r["images_per_s"] / other["images_per_s"] if other else None
        rows.append(row)

    def line(row):
        def other(fw):
            o = row[fw]
            return [_fmt(o and o["images_per_s"]), _fmt(row[f"{fw}_ratio"], ".2f", "x"),
                    _fmt(o and o["peak_rss_gib"], ".1f")]
        name = LETTERS.get(row["arch"], row["arch"])
        return (f"| {name} | {row['size']} | {row['batch']} | {row['dtype']} | {row['mode']} | "
                f"{row['images_per_s']:.2f} | {row['gflops']:.0f} | "
                f"{100 * row['utilisation']:.1f}% | {row['first_call_s']:.1f} | "
                f"{row['peak_rss_gib']:.1f} | " + " | ".join(other("pytorch") + other("keras"))
                + " |")

    head = ("| config | size | batch | dtype | step | vgg_jax img/s | GFLOP/s | of peak | "
            "compile s | RSS GiB | PyTorch img/s | vgg_jax/PyTorch | PyTorch GiB | "
            "Keras img/s | vgg_jax/Keras | Keras GiB |\n" + "|---" * 16 + "|\n")
    def others(dtype):
        return "".join(f", {peaks[f'{lib}_{dtype}'] / 1e9:.0f} ({name})"
                       for lib, name in (("pytorch", "PyTorch"), ("onednn", "oneDNN"))
                       if f"{lib}_{dtype}" in peaks)
    peak_text = (f"float32 {peaks['float32'] / 1e9:.0f} GFLOP/s (XLA){others('float32')}; "
                 + (f"bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s (XLA){others('bfloat16')}"
                    if "bfloat16" in peaks else f"bfloat16 {NO_BF16}"))
    md = ["# Speed: vgg_jax, PyTorch and Keras side by side\n",
          f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} in {seconds / 60:.0f} min:\n",
          f"    {command}\n",
          f"Machine: {machine()}.\n",
          f"Measured matmul peak (best square product, 2 FLOP per multiply-accumulate): "
          f"{peak_text}. Utilisation is vgg_jax's FLOP/s (forward MACs x 2, x 3 for a "
          f"training step) over the peak of its dtype (the highest of XLA's, PyTorch's "
          f"and oneDNN's: what the machine can do). The MACs are a direct convolution's: "
          f"where vgg_jax computes a layer by Winograd F(2x2, 3x3) (float32 on CPU, blocks "
          f"2-5), which needs 2.25x fewer multiplications, utilisation can pass 100%.\n",
          "Each framework runs in its own process; images/s are the median over the timed "
          "steps after one warm-up step; compile s is XLA's compile time for vgg_jax and "
          "the first call for the others (columns only for vgg_jax); RSS is the peak resident "
          "memory of the process during the measurement. Ratios above 1 mean vgg_jax is "
          "faster."
          + (f" {rounds} rounds, the frameworks taking turns in each (``--rounds``): images/s "
             f"and compile s are medians over the rounds, RSS the highest, and the ratios "
             f"those of the medians; the ratio of each round is listed below the targets."
             if rounds > 1 else "") + "\n", head + "".join(line(r) + "\n" for r in rows)]
    md.append(targets(rows, pipeline_rate))
    if rounds > 1:
        md.append(spread(rows, round_ratios))
    if errors:
        md.append("\nNot measured: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "\n")
    return "\n".join(md), rows


def targets(rows: list[dict], pipeline_rate: float | None) -> str:
    """The issue's targets, each with its measured value and whether it is met."""
    def find(arch, mode, size=224, batch=8, dtype="float32"):
        return next((r for r in rows if (r["arch"], r["mode"], r["size"], r["batch"],
                                         r["dtype"]) == (arch, mode, size, batch, dtype)), None)
    out = ["## Targets\n", "| target | measured | met |", "|---|---|---|"]

    def check(text, value, ok):
        out.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

    for mode, ratio, util in (("train", 1.2, 0.65), ("infer", 1.5, 0.80)):
        r = find("vgg16", mode)
        if r is None:
            continue
        if r["pytorch_ratio"] is not None:
            # What the ratio asks of vgg_jax, given how close PyTorch itself runs to the peak.
            torch_util = r["utilisation"] / r["pytorch_ratio"]
            check(f"VGG-16 224 b8 {mode}: >= {ratio}x PyTorch",
                  f"{r['pytorch_ratio']:.2f}x (PyTorch runs at {100 * torch_util:.0f}% of "
                  f"the peak, so {ratio}x needs {100 * ratio * torch_util:.0f}%)",
                  r["pytorch_ratio"] >= ratio)
        check(f"VGG-16 224 b8 {mode}: >= {100 * util:.0f}% of the matmul peak",
              f"{100 * r['utilisation']:.1f}%", r["utilisation"] >= util)
    # The oneDNN issue's ratios (bfloat16: PyTorch's CPU autocast, Keras's mixed_bfloat16).
    for text, r, other, ratio in (
            ("VGG-16 224 b8 bfloat16 train: >= 1.2x PyTorch's bf16 autocast",
             find("vgg16", "train", dtype="bfloat16"), "pytorch", 1.2),
            ("VGG-16 224 b8 bfloat16 infer: >= 1.5x PyTorch's bf16 autocast",
             find("vgg16", "infer", dtype="bfloat16"), "pytorch", 1.5),
            ("VGG-16 224 b8 float32 train: >= 1.1x PyTorch", find("vgg16", "train"),
             "pytorch", 1.1),
            ("VGG-16 224 b8 float32 train: >= Keras", find("vgg16", "train"), "keras", 1.0),
            ("VGG-16 224 b8 float32 infer: >= 1.2x PyTorch", find("vgg16", "infer"),
             "pytorch", 1.2),
            ("VGG-16 32 b128 float32 train: >= 1.2x PyTorch",
             find("vgg16", "train", 32, 128), "pytorch", 1.2)):
        if r is not None and r[f"{other}_ratio"] is not None:
            check(text, f"{r[f'{other}_ratio']:.2f}x", r[f"{other}_ratio"] >= ratio)
    bf16, fp32 = find("vgg16", "train", dtype="bfloat16"), find("vgg16", "train")
    if bf16 is not None and fp32 is not None:
        gain = bf16["images_per_s"] / fp32["images_per_s"]
        check("VGG-16 224 b8 bfloat16 train: >= 2x vgg_jax's float32", f"{gain:.2f}x",
              gain >= 2)
    r = find("vgg19", "train")
    if r is not None:
        check("VGG-19 224 first training step compiles in < 30 s",
              f"{r['first_call_s']:.1f} s", r["first_call_s"] < 30)
    r = find("vgg16", "train") or (rows[0] if rows else None)
    if pipeline_rate and r is not None:
        cores = os.cpu_count()
        check(f"input pipeline ({pipeline_rate:.0f} img/s/core x {cores} cores) keeps up "
              f"with {LETTERS.get(r['arch'], r['arch'])} training at {r['size']}",
              f"{pipeline_rate * cores / r['images_per_s']:.0f}x the training img/s",
              pipeline_rate * cores >= r["images_per_s"])
    return "\n".join(out) + "\n"


def spread(rows: list[dict], round_ratios: dict[tuple, list[float]]) -> str:
    """A table of vgg_jax's ratio to each framework in every round, per case."""
    out = ["## Ratios per round\n", "| config | size | batch | dtype | step | vs | each round "
           "| lowest | highest |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for other, name in (("pytorch", "PyTorch"), ("keras", "Keras")):
            values = round_ratios.get((other, *_key(r)))
            if values:
                out.append(f"| {LETTERS.get(r['arch'], r['arch'])} | {r['size']} | "
                           f"{r['batch']} | {r['dtype']} | {r['mode']} | {name} | "
                           + ", ".join(f"{v:.2f}x" for v in values)
                           + f" | {min(values):.2f}x | {max(values):.2f}x |")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: str) -> None:
    """Bar chart: images/s of the three frameworks per configuration, train and inference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    picks = [r for r in rows if r["dtype"] == "float32"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, mode in zip(axes, ("train", "infer")):
        sel = [r for r in picks if r["mode"] == mode]
        labels = [f"{LETTERS.get(r['arch'], r['arch'])} {r['size']}/{r['batch']}" for r in sel]
        x = np.arange(len(sel))
        for i, fw in enumerate(FRAMEWORKS):
            values = [r["images_per_s"] if fw == "vgg_jax" else
                      (r[fw]["images_per_s"] if r[fw] else 0) for r in sel]
            ax.bar(x + (i - 1) * 0.27, values, 0.27, label=fw)
        ax.set_xticks(x, labels, fontsize=7, rotation=60, ha="right")
        ax.set_xlabel("config  image size / batch", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("images/s (log)")
        ax.set_title({"train": "training step", "infer": "inference"}[mode])
        ax.legend(fontsize=8)
    fig.suptitle("VGG throughput on " + machine().split(";")[0], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="VGG-16 only")
    parser.add_argument("--smoke", action="store_true", help="a tiny net: checks the suite")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every case this many times, the frameworks taking turns "
                             "(medians; on a shared machine the load drifts between processes)")
    parser.add_argument("--bfloat16", action=argparse.BooleanOptionalAction, default=None,
                        help="the bfloat16 cases (default: where the CPU has bfloat16 "
                             "arithmetic, AVX-512 BF16 or AMX)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=6.0, help=argparse.SUPPRESS)
    parser.add_argument("--peak-sizes", type=lambda s: tuple(map(int, s.split(","))),
                        default=(1024, 2048, 3072), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bfloat16 is None:
        args.bfloat16 = args.smoke or results_table.has_bfloat16_arithmetic()
    if args.worker:
        return _worker(args)
    if args.rounds < 1:
        raise SystemExit(f"error: --rounds must be at least 1, got {args.rounds}")
    start = time.time()
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__), *sys.argv[1:]])
    small = ["--peak-sizes", "256,512", "--seconds", "1"] if args.smoke else []
    if not args.bfloat16:
        print(f"[speed] bfloat16 {NO_BF16}", flush=True)
    peaks, error = _run_child(["--worker", "peak", *small,
                               "--bfloat16" if args.bfloat16 else "--no-bfloat16"], args.timeout)
    if not peaks:
        raise SystemExit(f"Measuring the matmul peak failed: {error}")
    print(f"[speed] matmul peak: {peaks[0]['float32'] / 1e9:.0f} GFLOP/s float32", flush=True)
    results, errors = measure_all(grid("smoke" if args.smoke else
                                       "quick" if args.quick else "full", args.bfloat16),
                                  args.timeout, args.rounds)
    pipe, error = _run_child(["--worker", "pipeline", *small], args.timeout)
    if error:
        errors["pipeline"] = error
    md, rows = report(results, peaks[0], pipe[0]["per_core"] if pipe else None, errors,
                      command, time.time() - start)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write(md)
    plot(rows, os.path.join(args.out, "speed.png"))
    print(md)


if __name__ == "__main__":
    main()
