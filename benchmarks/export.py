"""Exported nets side by side: export time, artefact size, agreement with ``model.apply``
and inference images/s of each runtime, in one run on this machine.

    python benchmarks/export.py [--arch vgg16] [--image_size 224] [--batch 8] [--rounds 3]

A net of ``--arch`` with random weights (BatchNorm statistics randomised too, so that every
layer passes signal) is exported in every format of ``vgg_jax.inference.export`` with a fixed batch,
then each artefact is run by its own runtime (jax.export, TensorFlow, the TFLite
interpreter, onnxruntime) on the same uint8 images as vgg_jax's own jit-compiled
``model.apply``. Images/s are medians over ``--rounds`` rounds, runtimes alternating. Appends
a row per format to benchmarks/results/export.md.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_table  # noqa: E402
from vgg_jax.inference import export  # noqa: E402
from vgg_jax.store.record import ModelRecord  # noqa: E402

RUNTIMES = {"jax": "vgg_jax model.apply (jit)", "stablehlo": "jax.export",
            "savedmodel": "TensorFlow", "tflite": "TFLite interpreter (XNNPACK)",
            "onnx": "onnxruntime (CPU)"}


def random_net(arch: str, image_size: int, seed: int = 0) -> tuple[ModelRecord, dict]:
    """``arch`` at full width with random weights and lively BatchNorm statistics."""
    record = ModelRecord(arch=arch, image_size=image_size, eval_scale=image_size * 256 // 224)
    variables = jax.jit(record.build().init)(jax.random.key(seed),
                                             jnp.zeros((1, image_size, image_size, 3)))
    rng = np.random.default_rng(seed)
    out = {"params": jax.tree_util.tree_map(np.asarray, variables["params"])}
    if "batch_stats" in variables:
        out["batch_stats"] = {k: {"mean": rng.normal(0, 0.1, v["mean"].shape).astype(np.float32),
                                  "var": rng.uniform(0.5, 2, v["var"].shape).astype(np.float32)}
                              for k, v in variables["batch_stats"].items()}
    return record, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default=",".join(export.FORMATS))
    parser.add_argument("--out", default=results_table.RESULTS, help="Folder of export.md.")
    args = parser.parse_args(argv)
    print(results_table.cpu_description(), flush=True)
    record, variables = random_net(args.arch, args.image_size)
    images = np.random.default_rng(1).integers(
        0, 256, (args.batch, args.image_size, args.image_size, 3), dtype=np.uint8)
    root = tempfile.mkdtemp(prefix="vgg_jax_export_bench_")
    runs, info = {}, {}
    try:
        reference = None
        for fmt in args.formats.split(","):
            iface = export.interface_for(record, fmt, batch=args.batch)
            if reference is None:
                reference = export.reference(record, variables, iface, images)
                model = record.build()
                mean, std = np.float32(record.mean_rgb), np.float32(record.std_rgb)
                apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, (x - mean) / std)))
                runs["jax"] = lambda: np.asarray(apply(variables, images.astype(np.float32)))
            start = time.time()
            out = export.export(record, variables, iface, os.path.join(root, fmt))
            seconds = time.time() - start
            run = export.load(out)
            got = run(images)  # warm-up: compilation, allocation
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out)
                       for f in fs)
            info[fmt] = dict(export_s=seconds, mb=size / 1e6,
                             diff=float(np.abs(got - reference).max()))
            runs[fmt] = lambda run=run: run(images)
            print(f"{fmt}: exported in {seconds:.1f} s, {size / 1e6:.0f} MB, max |difference| "
                  f"{info[fmt]['diff']:.1e}", flush=True)
        runs["jax"]()
        times = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            print(f"round {r + 1}: " + ", ".join(f"{n} {args.batch / t[-1]:.1f}"
                                                 for n, t in times.items()) + " img/s",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rate = {name: args.batch / np.median(t) for name, t in times.items()}
    for name in runs:
        i = info.get(name, {})
        row = results_table.append_row(
            "export", "Exported nets: each runtime against vgg_jax's own model.apply",
            "One net with random weights, exported with a fixed batch, run by each format's "
            "own runtime on the same uint8 images as vgg_jax's jit-compiled `model.apply` "
            "(the `jax` row); images/s are medians over rounds, runtimes alternating, in one "
            "run; 'vs jax' is that runtime's images/s over model.apply's.",
            ["net", "batch", "runtime", "export s", "MB", "max abs diff", "img/s", "vs jax"],
            [f"{args.arch} {args.image_size}", args.batch, RUNTIMES[name],
             f"{i['export_s']:.1f}" if i else "-", f"{i['mb']:.0f}" if i else "-",
             f"{i['diff']:.1e}" if i else "-", f"{rate[name]:.2f}",
             f"{rate[name] / rate['jax']:.2f}x"], directory=args.out)
        print(row, end="")


if __name__ == "__main__":
    main()
