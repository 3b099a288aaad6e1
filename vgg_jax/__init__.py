"""vgg_jax: VGGNet (Simonyan & Zisserman, 2015) in JAX and Flax."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU routes every convolution through XNNPACK fusions by default, which run VGG's
# weight-gradient convolutions about 10x slower (../benchmarks); switching them off makes
# CPU training about 3x faster. Where vgg_jax's oneDNN kernels take the convolutions (x86-64,
# vgg_jax.onednn), its reductions and matrix products go to YNN ("dot,reduce"):
# XLA's own reductions wrote out the squares of fc6's gradient for the gradient norm, and
# pooled slowly (VGG-16 224/8 bfloat16 training 1.10x, A/4 at 32/128 1.22x faster); its own
# dots ran fc6-fc8 at a quarter of the matmul peak (VGG-16 32/128 float32 training 1.18x,
# 224/8 1.06x faster with YNN's). Copy insertion with region analysis keeps
# XLA:CPU from copying fc6-fc8's donated weights (400 MB) at the start of every training
# step, beside conv1_1 (VGG-16 224/8 float32 training 1.06x, bfloat16 1.04x). These only
# take effect if set before JAX starts its backend, and never override a value the user
# chose. VGG_JAX_PLAIN_XLA=1 keeps XLA's defaults.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines
_ONEDNN = (__import__("platform").machine() in ("x86_64", "AMD64")
           and _os.environ.get("VGG_JAX_NO_ONEDNN") != "1")
_FAST_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "dot,reduce" if _ONEDNN else "",
                   "xla_cpu_copy_insertion_use_region_analysis": "true"}
if _os.environ.get("VGG_JAX_PLAIN_XLA", "0") != "1":
    for _name, _value in _FAST_CPU_FLAGS.items():
        if _name not in _os.environ.get("XLA_FLAGS", ""):
            _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} --{_name}={_value}".strip()
