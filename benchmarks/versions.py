"""Two versions of vgg_jax side by side: the speed suite's vgg_jax measurements (VGG-16, the
``--quick`` grid), each version in its own processes, taking turns round by round.

    git worktree add /tmp/before <commit>
    python benchmarks/versions.py --before /tmp/before [--rounds 3] [--out DIR]
    python benchmarks/versions.py --before . --before-env VGG_JAX_HUGE_PAGES=0  # one setting

Each round runs the before-checkout's worker, then this checkout's (in that order, then the
other way round in the next round, so that neither always runs first), each with its own
``benchmarks/speed.py --worker vgg_jax`` and its own package on ``PYTHONPATH``, with the
environment the speed suite gives vgg_jax (huge pages where they help). Writes
``versions.md``: per case, both medians, their ratio (this / before) and each round's ratio.
The frameworks' ratios come from ``speed.py`` itself; this only says whether a change made
vgg_jax faster or slower on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import results_table  # noqa: E402
import speed  # noqa: E402
from vgg_jax.compute import hugepages  # noqa: E402


def run_worker(tree: str, cases: list[dict], timeout: float,
               extra_env: dict | None = None) -> list[dict]:
    """The speed suite's vgg_jax worker of checkout ``tree`` on ``cases``: its RESULT rows."""
    env = hugepages.environment({**os.environ, **(extra_env or {})})
    env["PYTHONPATH"] = os.pathsep.join([tree, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(tree, "benchmarks", "speed.py"),
                           "--worker", "vgg_jax", "--cases", json.dumps(cases)], env=env,
                          cwd=tree, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise SystemExit(f"error: the worker of {tree} failed: "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line[7:]) for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")]


def key(row: dict) -> tuple:
    return (row["arch"], row["size"], row["batch"], row["dtype"], row["mode"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="checkout of the other version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--before-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of the before side only (e.g. a switch to compare)")
    args = parser.parse_args()
    before_env = dict(item.split("=", 1) for item in args.before_env)
    this = os.path.dirname(HERE)
    bf16 = results_table.has_bfloat16_arithmetic()
    groups: dict[int, list[dict]] = {}
    for case, _ in speed.grid("quick", bf16):
        groups.setdefault(case.size, []).append(dataclasses.asdict(case))
    rates: dict[str, dict[tuple, list[float]]] = {"before": {}, "this": {}}
    start = datetime.datetime.now()
    for r in range(args.rounds):
        order = [("before", args.before), ("this", this)]
        for name, tree in order if r % 2 == 0 else order[::-1]:
            for size, cases in groups.items():
                for row in run_worker(tree, cases, args.timeout,
                                      before_env if name == "before" else None):
                    rates[name].setdefault(key(row), []).append(row["images_per_s"])
                    print(f"[versions] round {r + 1} {name} {key(row)}: "
                          f"{row['images_per_s']:.2f} img/s", flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__), *sys.argv[1:]])
    lines = ["# vgg_jax against another version of itself", "",
             f"Run {start:%Y-%m-%d %H:%M}, {args.rounds} rounds, the versions taking turns:", "",
             f"    {command}", "", f"Machine: {speed.machine()}.", "",
             f"Before: `{args.before}` at {_commit(args.before)}"
             + (f" with {' '.join(args.before_env)}" if args.before_env else "")
             + f"; this: {_commit(this)}.", "",
             "| config | size | batch | dtype | step | before img/s | this img/s | this / before "
             "| rounds |", "|---|---|---|---|---|---|---|---|---|"]
    for k, before in rates["before"].items():
        now = rates["this"][k]
        rounds = ", ".join(f"{b:.2f}x" for b in (n / o for n, o in zip(now, before)))
        lines.append(f"| {speed.LETTERS.get(k[0], k[0])} | {k[1]} | {k[2]} | {k[3]} | {k[4]} "
                     f"| {statistics.median(before):.2f} | {statistics.median(now):.2f} "
                     f"| {statistics.median(now) / statistics.median(before):.3f}x "
                     f"| {rounds} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "versions.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _commit(tree: str) -> str:
    out = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    main()
