"""The process set-up XLA:CPU needs before it starts: its CPU flags, and optionally glibc's
malloc kept from returning memory (``VGG_JAX_MALLOC=reuse``).

``import vgg_jax`` calls ``configure()``: XLA reads ``XLA_FLAGS`` once, when its CPU backend
starts, and that may be the user's first JAX call right after the import, so this is the
one place that writes to ``os.environ`` at import. It never overrides a value the user set.
What each flag buys is measured in ``docs/compute.md``.
"""

from __future__ import annotations

import ctypes
import os
import platform

# XNNPACK's fusions off for convolutions (XLA:CPU's default ran VGG's weight-gradient
# convolutions about 10x slower); with oneDNN's kernels, reductions and single matrix
# products by YNN; copy insertion with region analysis, so that the donated fc weights are
# not copied at the start of every training step.
ONEDNN_BUILT_FOR = ("x86_64", "AMD64")


def cpu_flags(environ=None) -> dict[str, str]:
    """The XLA:CPU flags vgg_jax sets: {flag: value}."""
    environ = os.environ if environ is None else environ
    onednn = (platform.machine() in ONEDNN_BUILT_FOR
              and environ.get("VGG_JAX_NO_ONEDNN") != "1")
    return {"xla_cpu_experimental_ynn_fusion_type": "individual_dot,reduce" if onednn else "",
            "xla_cpu_copy_insertion_use_region_analysis": "true"}


def configure() -> bool:
    """Adds ``cpu_flags()`` to ``XLA_FLAGS`` (unless ``VGG_JAX_PLAIN_XLA=1``, or the user set
    a flag already) and TensorFlow's C++ log level (INFO lines off), then applies
    ``VGG_JAX_MALLOC``; returns whether malloc keeps freed memory. Must run before JAX's
    backend starts; ``import vgg_jax`` does it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if os.environ.get("VGG_JAX_PLAIN_XLA", "0") != "1":
        for name, value in cpu_flags().items():
            if name not in os.environ.get("XLA_FLAGS", ""):
                flags = os.environ.get("XLA_FLAGS", "")
                os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()
    return os.environ.get("VGG_JAX_MALLOC") == "reuse" and _keep_freed_memory()


def _keep_freed_memory() -> bool:
    """glibc's malloc keeps freed memory for reuse instead of returning it to the kernel
    (one arena, no mmap, no trimming): fewer page faults per step, a higher resident peak,
    and slower tf.data threads. Takes effect only before other threads allocate."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    return all(mallopt(option, value) == 1 for option, value in
               ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1)))
