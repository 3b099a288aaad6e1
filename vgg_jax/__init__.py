"""vgg_jax: VGGNet (Simonyan & Zisserman, 2015) in JAX and Flax."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU routes every convolution through XNNPACK fusions by default, which run VGG's
# weight-gradient convolutions about 10x slower (../benchmarks); switching them off makes
# CPU training about 3x faster. Where vgg_jax's oneDNN kernels take the convolutions (x86-64,
# vgg_jax.compute.onednn), its reductions and its single matrix products go to YNN
# ("individual_dot,reduce"): XLA's own reductions wrote out the squares of fc6's gradient for
# the gradient norm, and pooled slowly (VGG-16 224/8 bfloat16 training 1.10x, A/4 at 32/128
# 1.22x faster); its own dots ran fc6-fc8 at a quarter of the matmul peak (VGG-16 32/128
# float32 training 1.19x faster with YNN's). "dot" instead, which also fuses their neighbours,
# put pool5 and fc6-fc8 into one YNN graph: VGG-16 224/8 inference 2.1x slower. Copy
# insertion with region analysis keeps XLA:CPU from copying fc6-fc8's donated weights
# (400 MB) at the start of every training step, beside conv1_1 (VGG-16 224/8 float32
# training 1.06x, bfloat16 1.04x). These only take effect if set before JAX starts its
# backend, and never override a value the user chose. VGG_JAX_PLAIN_XLA=1 keeps XLA's
# defaults.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines
_ONEDNN = (__import__("platform").machine() in ("x86_64", "AMD64")
           and _os.environ.get("VGG_JAX_NO_ONEDNN") != "1")
_YNN_TYPES = "individual_dot,reduce" if _ONEDNN else ""
_FAST_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": _YNN_TYPES,
                   "xla_cpu_copy_insertion_use_region_analysis": "true"}
if _os.environ.get("VGG_JAX_PLAIN_XLA", "0") != "1":
    for _name, _value in _FAST_CPU_FLAGS.items():
        if _name not in _os.environ.get("XLA_FLAGS", ""):
            _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} --{_name}={_value}".strip()


def _keep_freed_memory() -> bool:
    """With ``VGG_JAX_MALLOC=reuse``: glibc's malloc keeps freed memory for reuse instead of
    returning it to the kernel (one arena, no mmap, no trimming).

    XLA:CPU allocates a step's temporaries afresh at every step (857 MiB for VGG-16 224/8
    training) and glibc serves each from a new mmap, so the step page-faults through all of
    it again (221k faults). Reusing it, that step took 2.21 s against 2.36 s (medians of 3
    runs side by side, 2-core AMD EPYC VM), with a higher resident peak (+0.8-1.6 GiB). Not
    the default: with one arena, tf.data's threads contend for malloc and the quickstart took
    2 min 16 s against 1 min 32 s. Takes effect only before other threads allocate: here.
    """
    import ctypes
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    return all(mallopt(option, value) == 1 for option, value in
               ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1)))


MALLOC_TUNED = _os.environ.get("VGG_JAX_MALLOC") == "reuse" and _keep_freed_memory()
