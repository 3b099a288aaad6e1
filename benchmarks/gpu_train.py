"""Training throughput of VGG-16 and VGG-19 on an accelerator (the prepared GPU run).

    python benchmarks/gpu_train.py [--archs vgg16,vgg19] [--per-device-batch 192]
        [--dtype bfloat16] [--steps 30] [--peak-tflops 989]
    python benchmarks/gpu_train.py --smoke    # a tiny net on any machine: checks the script

Times vgg_jax's own train step (``steps.train_step`` under ``jax.pmap`` over all local
devices: SGD with momentum and L2, dropout, bf16 compute with float32 parameters, the state
donated) on synthetic uint8 batches already on the devices, so that it measures the step,
not the input pipeline (``benchmarks/pipeline.py`` measures that). Per architecture:
compile seconds (first step), images/s, TFLOP/s counted as 3 x 2 x the forward
multiply-accumulates, utilisation of ``--peak-tflops`` per device (989: H100/H200 dense
bf16), and peak device memory. Appends rows to benchmarks/results/gpu.md.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import vgg_jax  # noqa: E402,F401  (XLA flags before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402

import frameworks  # noqa: E402
import results_table  # noqa: E402
from configs import default  # noqa: E402


def measure(arch: str, args) -> dict:
    """Compile time, images/s, TFLOP/s, utilisation and peak memory of one configuration."""
    config = default.get_config()
    config.arch, config.dtype, config.image_size = arch, args.dtype, args.image_size
    config.width = args.width
    devices = jax.local_device_count()
    batch = args.per_device_batch * devices
    config.batch_size = batch
    step, _, state, data, rng = frameworks.jax_train_setup(config, args.per_device_batch)
    state, _, compile_s = frameworks.run_steps(step, state, data, rng, 1)
    if args.warmup:
        state, _, _ = frameworks.run_steps(step, state, data, rng, args.warmup)
    state, metrics, seconds = frameworks.run_steps(step, state, data, rng, args.steps)
    images_per_s = args.steps * batch / seconds
    macs = frameworks.forward_macs(arch, args.image_size, args.width)
    tflops = images_per_s * 3 * 2 * macs / 1e12
    stats = jax.local_devices()[0].memory_stats() or {}
    return {"arch": arch, "batch": f"{args.per_device_batch} x {devices}",
            "compile_s": compile_s, "images_per_s": images_per_s, "tflops": tflops,
            "utilisation": tflops / (args.peak_tflops * devices),
            "peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
            "loss": float(np.asarray(metrics["loss"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="vgg16,vgg19")
    parser.add_argument("--per-device-batch", type=int, default=192)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="dense peak per device for --dtype (989: H100/H200 bf16)")
    parser.add_argument("--smoke", action="store_true",
                        help="vgg11 at width 1/8, 32x32, batch 4, 2 steps: checks the script")
    args = parser.parse_args()
    if args.smoke:
        args.archs, args.width, args.image_size = "vgg11", 0.125, 32
        args.per_device_batch, args.steps, args.warmup = 4, 2, 1
    device = f"{jax.local_device_count()} x {jax.local_devices()[0].device_kind}"
    for arch in args.archs.split(","):
        r = measure(arch, args)
        print(f"{arch}: {r['images_per_s']:.1f} img/s, {r['tflops']:.1f} TFLOP/s, "
              f"{100 * r['utilisation']:.1f}% of peak, compile {r['compile_s']:.1f} s, "
              f"peak memory {r['peak_gib']:.1f} GiB, loss {r['loss']:.3f}")
        if not args.smoke:
            results_table.append_row(
                "gpu", "VGG training step on accelerators (benchmarks/gpu_train.py)",
                "Synthetic batches on the devices; TFLOP/s = images/s x 3 x 2 x forward MACs; "
                "utilisation against --peak-tflops per device.",
                ["device", "arch", "dtype", "batch", "compile s", "img/s", "TFLOP/s",
                 "utilisation", "peak GiB"],
                [device, arch, args.dtype, r["batch"], f"{r['compile_s']:.1f}",
                 f"{r['images_per_s']:.0f}", f"{r['tflops']:.0f}",
                 f"{100 * r['utilisation']:.1f}%", f"{r['peak_gib']:.1f}"])


if __name__ == "__main__":
    main()
