"""Where the trainer's step spends its time on this CPU: XLA:CPU's thunks from a jax.profiler trace.

    python benchmarks/profile_step.py [--arch vgg16] [--size 224] [--batch 8] [--width 1]
                                      [--dtype bfloat16] [--out /tmp/profile]

Builds the trainer's own pmap-ed step (``frameworks.jax_train_setup``, as the speed suite
does), times it, traces two steps and prints: milliseconds per step by thunk kind (oneDNN
calls, XLA fusions by name), how long one, two or no thunks ran at once (two at once share
the cores), and the largest single thunks with the HLO shape they produce. This is how the
costs named in README's "On CPU" section were found. The trace (for TensorBoard or Perfetto)
and the optimized HLO stay in ``--out``.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import frameworks  # noqa: E402
import results_table  # noqa: E402

_NOT_THUNKS = ("Thunk", "Threadpool", "$", "end:", "Pjit", "Common", "Parse", "Alloc", "Handle",
               "PythonRefManager")


def thunk_events(trace_dir: str) -> list[dict]:
    """The trace's complete events that are XLA:CPU thunks (fusions, custom calls, dots)."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    return [e for e in events if e.get("ph") == "X" and e.get("dur", 0) > 0
            and not e["name"].startswith(_NOT_THUNKS)]


def concurrency(events: list[dict]) -> collections.Counter:
    """Microseconds during which 0, 1, 2... thunks ran at once (from first start to last end)."""
    points = sorted([(e["ts"], 1) for e in events] + [(e["ts"] + e["dur"], -1) for e in events])
    running, last, spent = 0, points[0][0], collections.Counter()
    for t, change in points:
        spent[running] += t - last
        running, last = running + change, t
    return spent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=2, help="steps traced")
    parser.add_argument("--out", default="/tmp/vgg_jax_profile")
    args = parser.parse_args(argv)
    import jax
    from configs import default

    print(results_table.cpu_description(), flush=True)
    config = default.get_config()
    config.arch, config.dtype, config.image_size = args.arch, args.dtype, args.size
    config.width, config.batch_size = args.width, args.batch
    p_train, _, state, batch, rng = frameworks.jax_train_setup(
        config, args.batch // jax.local_device_count(), 1000 if args.width == 1 else 10)
    step = p_train.lower(state, batch, rng).compile()
    state, _, _ = frameworks.run_steps(step, state, batch, rng, 1)
    state, _, seconds = frameworks.run_steps(step, state, batch, rng, args.steps)
    seconds /= args.steps
    print(f"step {seconds * 1e3:.0f} ms, {args.batch / seconds:.2f} img/s "
          f"({args.arch} {args.size}/{args.batch} x{args.width:g} {args.dtype})")
    jax.profiler.start_trace(args.out)
    frameworks.run_steps(step, state, batch, rng, args.steps)
    jax.profiler.stop_trace()
    hlo = step.as_text()
    with open(os.path.join(args.out, "hlo.txt"), "w") as f:
        f.write(hlo)
    shapes = dict(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", hlo, re.M))
    events = thunk_events(args.out)
    per_name = collections.Counter()
    for e in events:
        per_name[e["name"]] += e["dur"] / args.steps / 1e3
    kinds = collections.Counter()
    for name, ms in per_name.items():
        kinds["oneDNN (ffi_call)" if name.startswith("ffi_call") else name.split(".")[0]] += ms
    print("\nms per step by kind (thunks overlap, so these can sum past the step):")
    for kind, ms in kinds.most_common(12):
        print(f"  {ms:8.1f}  {kind}")
    print("\nms per step with N thunks running at once:")
    for n, us in sorted(concurrency(events).items()):
        print(f"  {us / args.steps / 1e3:8.1f}  {n}")
    print("\nlargest single thunks (ms per step, the shape they write):")
    for name, ms in per_name.most_common(15):
        print(f"  {ms:8.1f}  {name:34s} {shapes.get(name, '')[:60]}")


if __name__ == "__main__":
    main()
