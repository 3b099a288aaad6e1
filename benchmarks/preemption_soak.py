"""Soak test of preemption: kill training again and again, restart it, compare with a clean run.

    python benchmarks/preemption_soak.py [--steps 300] [--kills 8] [--signal KILL|TERM]
        [--checkpoint-every 20] [--workdir /tmp/vgg_soak]

Trains a small net (configs/quickstart.py, narrowed) on the built-in data set through
``python -m vgg_jax.main``; after a random delay sends SIGKILL (or SIGTERM) and restarts the
same command, until the run finishes. Reports, per preemption, the steps lost (last step
reached minus the step resumed from; 0 expected with SIGTERM, at most the checkpoint interval
with SIGKILL and ``--sync``, plus the steps a save takes with asynchronous saves) and the restart time (process start to first new step), then checks the final
parameters against an uninterrupted run bit for bit, and appends a row to
benchmarks/results/preemption.md. Not part of the tests: it takes several minutes.
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import results_table  # noqa: E402

STEP = re.compile(r"\[(\d+)\] (?:train_loss|images_per_sec)")
RESUMED = re.compile(r"Resumed from step (\d+)")


def command(workdir: str, args) -> list[str]:
    return [sys.executable, "-m", "vgg_jax.main", "--config=configs/quickstart.py",
            f"--workdir={workdir}", "--config.width=0.125", "--config.fc_width=64",
            f"--config.num_train_steps={args.steps}", "--config.log_every_steps=1",
            f"--config.checkpoint_every_steps={args.checkpoint_every}",
            f"--config.eval_every_steps={args.steps}", "--config.batch_size=32",
            f"--config.async_checkpoints={not args.sync}"]


def run_until_killed(cmd: list[str], delay: float, sig) -> tuple[int, int, float, int]:
    """(first step of this run, last step logged, seconds to its first step, return code)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    resumed, last, first_at = 0, 0, None
    for line in proc.stderr:
        if m := RESUMED.search(line):
            resumed = int(m.group(1))
        if m := STEP.search(line):
            last = max(last, int(m.group(1)))
            if first_at is None:
                first_at = time.time() - start
                deadline = time.time() + delay
        if first_at is not None and delay >= 0 and time.time() > deadline:
            proc.send_signal(sig)
            delay = -1
    proc.wait()
    return resumed, last, first_at or float("nan"), proc.returncode


def final_params(workdir: str) -> list[np.ndarray]:
    import jax
    from vgg_jax.store import checkpoints
    store = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    return jax.tree_util.tree_leaves(store.restore_raw()["params"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--workdir", default="/tmp/vgg_soak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sync", action="store_true", help="synchronous checkpoints")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sig = getattr(signal, f"SIG{args.signal}")
    shutil.rmtree(args.workdir, ignore_errors=True)
    clean, soaked = os.path.join(args.workdir, "clean"), os.path.join(args.workdir, "soaked")
    t = time.time()
    subprocess.run(command(clean, args), cwd=ROOT, check=True, stderr=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    print(f"uninterrupted run: {time.time() - t:.0f} s")
    lost, restarts, previous_last, kills = [], [], None, 0
    while True:
        delay = rng.uniform(0.5, 3.0) if kills < args.kills else -1.0
        resumed, last, first_at, code = run_until_killed(command(soaked, args), delay, sig)
        if previous_last is not None:
            lost.append(previous_last - resumed)
            restarts.append(first_at)
            print(f"restart {len(lost)}: resumed at {resumed} after reaching {previous_last}: "
                  f"{lost[-1]} steps lost, first step after {first_at:.1f} s")
        if code == 0:
            break
        kills += 1
        previous_last = last
    equal = all(np.array_equal(a, b) for a, b in zip(final_params(clean), final_params(soaked)))
    print(f"{kills} preemptions; steps lost mean {np.mean(lost or [0]):.1f} max "
          f"{max(lost or [0])}; restart {np.mean(restarts or [0]):.1f} s; final parameters "
          f"{'equal' if equal else 'DIFFER'} to the uninterrupted run")
    row = results_table.append_row(
        "preemption", "Preemption soak test (benchmarks/preemption_soak.py)",
        "Steps lost = last step logged before the kill minus the step resumed from; restart = "
        "process start to its first new step (imports, data, compilation).",
        ["signal", "steps", "checkpoint every", "async saves", "preemptions", "steps lost (mean / max)",
         "restart s (mean)", "final params bit-equal"],
        [args.signal, args.steps, args.checkpoint_every, "no" if args.sync else "yes", kills,
         f"{np.mean(lost or [0]):.1f} / {max(lost or [0])}", f"{np.mean(restarts or [0]):.1f}",
         "yes" if equal else "NO"])
    print(row, end="")


if __name__ == "__main__":
    main()
