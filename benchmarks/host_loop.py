"""Host-loop time per training step with 2 processes on loopback: per-step collective vs none.

    python benchmarks/host_loop.py [--steps 300] [--devices 1]

Starts two processes joined by ``jax.distributed`` on 127.0.0.1, each running vgg_jax's own
pmap-ed train step (``steps.pmap_steps``) on a tiny VGG-11 (width 1/16, 32x32, batch 8 per
device), and times, side by side in the same processes, two ways of asking "stop now?"
after every step:
- ``allgather``: what ``preemption.Watcher`` did before (a SIGTERM flag gathered from every
  process with ``multihost_utils.process_allgather``: a device collective and a transfer to
  the host, so the host waits for each step before dispatching the next);
- ``sync point``: what it does now (``multihost_utils.reached_preemption_sync_point``, which
  asks JAX's coordination service and touches no device).
Reported per step: the host loop's time (dispatch until the loop ends, before waiting for the
devices) and the wall time including the final wait. Appends rows to
benchmarks/results/host_loop.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import results_table  # noqa: E402

MODES = ("allgather", "sync point")


def worker(index: int, port: int, steps: int) -> None:
    import vgg_jax  # noqa: F401
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from configs import default
    from vgg_jax.parallel import distributed
    import frameworks

    config = default.get_config()
    config.update(arch="vgg11", width=1 / 16, fc_width=32, num_classes=10, image_size=32,
                  train_scale_min=32, train_scale_max=32, eval_scale=32, dropout_rate=0.0,
                  batch_size=16,
                  coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index)
    distributed.initialize(config)
    p_train, _, state, batch, rng = frameworks.jax_train_setup(config, 8, num_classes=10)

    def ask(mode: str, step: int) -> bool:
        if mode == "allgather":
            return bool(np.max(multihost_utils.process_allgather(np.int32(0))))
        return multihost_utils.reached_preemption_sync_point(step)

    results, step = {}, 0
    for _ in range(2):  # the second round is the one reported (the first compiles, warms up)
        for mode in MODES:
            multihost_utils.sync_global_devices(f"start {mode}")
            start = time.perf_counter()
            for _ in range(steps):
                step += 1
                state, metrics = p_train(state, batch, rng)
                ask(mode, step)
            host = time.perf_counter() - start
            jax.block_until_ready((state, metrics))
            wall = time.perf_counter() - start
            results[mode] = {"host_ms": 1e3 * host / steps, "wall_ms": 1e3 * wall / steps}
    print("RESULT " + json.dumps(results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--devices", type=int, default=1, help="CPU devices per process")
    parser.add_argument("--worker", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker >= 0:
        return worker(args.worker, args.port, args.steps)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(i),
                               "--port", str(port), "--steps", str(args.steps)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=1200) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode:
            sys.exit(f"worker failed:\n{err[-3000:]}")
    results = [json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
               for out, _ in outputs]
    machine = results_table.cpu_description()
    print(f"{machine}; 2 processes x {args.devices} CPU device(s), {args.steps} steps per mode")
    for mode in MODES:
        host = max(r[mode]["host_ms"] for r in results)
        wall = max(r[mode]["wall_ms"] for r in results)
        print(f"{mode:>10}: host loop {host:7.3f} ms/step, wall {wall:7.3f} ms/step")
        results_table.append_row(
            "host_loop", "Host-loop time per step, 2 processes on loopback",
            "A tiny VGG-11 (width 1/16, 32x32, batch 8 per device) trained by vgg_jax's own "
            "pmap-ed step in two processes joined by jax.distributed on 127.0.0.1. "
            "`allgather`: the stop check before issue 16 (a SIGTERM flag gathered from every "
            "process after each step); `sync point`: JAX's preemption sync manager, asked "
            "after each step. Host loop: dispatch time per step before waiting for the "
            "devices (the slower process); wall: including the final wait. Both modes run "
            "in the same processes, one after the other, after a warm-up round.",
            ["mode", "steps", "devices/process", "host loop ms/step", "wall ms/step",
             "host loop vs allgather"],
            [mode, args.steps, args.devices, f"{host:.3f}", f"{wall:.3f}",
             f"{host / max(r['allgather']['host_ms'] for r in results):.3f}x"])


if __name__ == "__main__":
    main()
