"""Transparent huge pages for XLA:CPU's buffers: vgg_jax's commands restart themselves once
with glibc's ``glibc.malloc.hugetlb=1`` tunable.

XLA:CPU allocates a step's buffers afresh every step (VGG-16 224/8 training: ~860 MiB, fc6's
411 MB weight gradient among them) and glibc maps each large one anew, so every step
page-faults through all of it in 4 KiB pages: 220k faults a step. With the tunable, glibc
asks the kernel for 2 MiB pages on those mappings (``madvise(MADV_HUGEPAGE)``, which the
kernel's usual "madvise" THP mode honours): 900 faults a step. VGG-16 224/8 float32 on a
2-core AMD EPYC Zen 4 (2026-12-03), the speed suite's vgg_jax measurement in 8 processes
each way taking turns: training 1.74 -> 1.80 img/s (medians; faster in 7 of the 8 pairs),
inference unchanged (6.35 / 6.30). TensorFlow's training step faults 5k times (it reuses
its buffers), PyTorch's 855k (README, "On CPU").

glibc reads its tunables only when a process starts, hence the restart: ``restart()`` runs
first in each command (``python -m vgg_jax.main`` etc.), before anything heavy is imported,
and re-executes the same command line with the tunable added to ``GLIBC_TUNABLES``. It does
nothing where it cannot help (not Linux with glibc >= 2.35, THP "never" or already
"always"), where ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb`` (the user's value
stands), or with ``VGG_JAX_HUGE_PAGES=0``. For a notebook or your own script, start the
interpreter with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` yourself.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode() -> str:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), or ""."""
    try:
        with open(THP_MODE) as f:
            text = f.read()
    except OSError:
        return ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


def _glibc_has_tunable() -> bool:
    name, version = platform.libc_ver()
    if name != "glibc":
        return False
    major, minor = (int(v) for v in version.split(".")[:2])
    return (major, minor) >= (2, 35)


def active() -> bool:
    """Whether this process's large allocations get huge pages."""
    mode = thp_mode()
    return mode == "always" or (mode == "madvise"
                                and f"{TUNABLE}=1" in os.environ.get("GLIBC_TUNABLES", ""))


def environment(env: dict | None = None) -> dict:
    """``env`` (default: this process's) with the tunable added where it would help and
    nothing has set it: for starting a vgg_jax process from another (benchmarks)."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if (env.get("VGG_JAX_HUGE_PAGES") == "0" or TUNABLE in tunables or platform.system() != "Linux"
            or thp_mode() != "madvise" or not _glibc_has_tunable()):
        return env
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
    return env


def restart() -> None:
    """Re-executes this command with the tunable set, if ``environment`` adds it (once: the
    restarted process finds it set). Call it first in a command's ``__main__``."""
    env = environment()
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES") or not sys.orig_argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


if __name__ == "__main__":
    restart()
    print(f"huge pages: {'on' if active() else 'off'} (THP mode {thp_mode() or 'unknown'}; "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')})")
