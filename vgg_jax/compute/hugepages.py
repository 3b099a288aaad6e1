"""Transparent huge pages for XLA:CPU's buffers: a command started from the shell
(``python -m vgg_jax.main`` ...) restarts itself once with glibc's ``glibc.malloc.hugetlb=1``
tunable.

XLA:CPU allocates a step's buffers afresh every step and glibc maps each large one anew, so
every step page-faults through all of it in 4 KiB pages; with the tunable glibc asks for
2 MiB pages on those mappings (``madvise(MADV_HUGEPAGE)``, which the kernel's usual
"madvise" THP mode honours). What it buys: ``docs/compute.md``.

glibc reads its tunables only when a process starts, hence the restart: ``restart()`` runs
first in each command, before anything heavy is imported, and re-executes the same command
line with the tunable added to ``GLIBC_TUNABLES``. Only a process that the shell started as
that very command restarts: never one that imported the module or runs the command inside
another program (Jupyter's ``%run -m``, ``runpy``). It does nothing where it cannot help
(not Linux with glibc >= 2.35, THP "never" or already "always"), where ``GLIBC_TUNABLES``
already sets ``glibc.malloc.hugetlb`` (the user's value stands), or with
``VGG_JAX_HUGE_PAGES=0``. For a notebook or your own script, start the interpreter with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` yourself.
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


def started_as(module: str) -> bool:
    """Whether the interpreter was started as ``python [options] -m module ...``."""
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1] == module


def restart(module: str) -> None:
    """Re-executes this command with the tunable set, if ``environment`` adds it (once: the
    restarted process finds it set) and the process was started as ``python -m module``.
    Call it first in a command's ``__main__`` block, with the command's module name."""
    env = environment()
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES") or not started_as(module):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


if __name__ == "__main__":
    restart("vgg_jax.compute.hugepages")
    print(f"huge pages: {'on' if active() else 'off'} (THP mode {thp_mode() or 'unknown'}; "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')})")
