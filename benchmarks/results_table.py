"""Appends a row to a markdown results table in benchmarks/results/, writing its header once."""

import datetime
import os
import platform
import shlex
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def figure(v: float) -> str:
    """A measured number for a table: whole above 1,000, else three significant digits, so
    a toy shape's 0.04 ms or 0.5 GFLOP/s on a slow machine does not print as 0."""
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def cpu_flags() -> list[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), or [] where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags"))
    except (OSError, StopIteration):
        return []


def has_bfloat16_arithmetic() -> bool:
    """Whether this x86 CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); elsewhere
    (not x86, or flags unreadable) True: let the frameworks find out."""
    flags = cpu_flags()
    return not flags or "avx2" not in flags or bool({"avx512_bf16", "amx_bf16"} & set(flags))


def cpu_description() -> str:
    """The CPU model, the matrix/vector extensions it reports, and the cores this process has."""
    model, isa = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines()
                     if ln.startswith("model name"))
        flags = next(ln.split(":", 1)[1].split() for ln in info.splitlines()
                     if ln.startswith("flags"))
        isa = [f for f in ISA_FLAGS if f in flags]
    except (OSError, StopIteration):
        pass
    return f"{model} ({', '.join(isa) or 'no AVX2'}), {len(os.sched_getaffinity(0))} cores"


def append_row(name: str, title: str, intro: str, columns: list[str], values: list,
               directory: str = RESULTS) -> str:
    """Writes ``<directory>/<name>.md`` (title, intro, header) if absent, then one row.

    The row starts with the date and the exact command line and ends with the machine.
    """
    path = os.path.join(directory, f"{name}.md")
    os.makedirs(directory, exist_ok=True)
    columns = ["date", "command", *columns, "machine"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(f"# {title}\n\n{intro}\n\n| {' | '.join(columns)} |\n"
                    f"|{'---|' * len(columns)}\n")
    command = " ".join(["python", os.path.relpath(sys.argv[0], os.path.dirname(RESULTS) + "/..")]
                       + [shlex.quote(a) for a in sys.argv[1:]])
    machine = cpu_description()
    row = f"| {datetime.date.today()} | `{command}` | " + \
        " | ".join(str(v) for v in values) + f" | {machine} |\n"
    with open(path, "a") as f:
        f.write(row)
    return row
