"""vgg_jax's commands restart once with glibc's huge-page tunable (vgg_jax.compute.hugepages)."""

import os
import subprocess
import sys

import pytest

from vgg_jax.compute import hugepages

HELPS = hugepages.thp_mode() == "madvise" and hugepages._glibc_has_tunable()  # noqa: SLF001
needs_thp = pytest.mark.skipif(not HELPS, reason="needs THP in madvise mode and glibc >= 2.35")

# Restarts like a command's __main__ does (run as ``python -m faults``), then counts the page
# faults of writing 256 MiB from glibc's malloc, as XLA:CPU's buffers come (numpy asks for
# huge pages by itself).
FAULTS = """
from vgg_jax.compute import hugepages
hugepages.restart("faults")
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 1 << 28
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = libc.malloc(size)
ctypes.memset(buffer, 1, size)
print(hugepages.active(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, tmp_path, **env: str) -> list[str]:
    """Runs ``code`` as ``python -m faults`` (a command started from the shell)."""
    (tmp_path / "faults.py").write_text(code)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "VGG_JAX_HUGE_PAGES")}
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "faults"], env={**environ, **env},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


@needs_thp
def test_restart_gives_large_buffers_huge_pages(tmp_path):
    on, faults = _run(FAULTS, tmp_path)
    off, faults_off = _run(FAULTS, tmp_path, VGG_JAX_HUGE_PAGES="0")
    assert (on, off) == ("True", "False")
    assert int(faults_off) > 60_000  # 256 MiB in 4 KiB pages
    assert int(faults) < int(faults_off) // 5


@needs_thp
def test_environment_adds_the_tunable_once_and_keeps_the_users():
    assert hugepages.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    other = hugepages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert other["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert hugepages.environment(other) == other
    users = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hugepages.environment(users) == users
    assert "GLIBC_TUNABLES" not in hugepages.environment({"VGG_JAX_HUGE_PAGES": "0"})


def test_restart_leaves_a_process_alone_where_it_cannot_help(tmp_path):
    """Opted out, or with the user's own value, the process is not restarted."""
    assert _run(FAULTS, tmp_path, VGG_JAX_HUGE_PAGES="0")[0] == "False"
    assert _run(FAULTS, tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")[0] == "False"


@pytest.mark.slow
@needs_thp
def test_a_command_run_inside_another_program_never_restarts_it(tmp_path):
    """A command run in-process (Jupyter's ``%run -m``, ``runpy``) or a plain import leaves
    the host process as it is: nothing before it runs twice, nothing is re-executed."""
    host = ("import runpy, sys\n"
            "print('host started', flush=True)\n"
            "sys.argv = ['vgg_jax.compute.hugepages']\n"
            "runpy.run_module('vgg_jax.compute.hugepages', run_name='__main__')\n"
            "from vgg_jax import main\n"
            "print('host ended')\n")
    out = _run(host, tmp_path)
    assert out.count("started") == 1 and out[-2:] == ["host", "ended"]
    assert "off" in out  # the command ran, without the tunable it would have restarted for
