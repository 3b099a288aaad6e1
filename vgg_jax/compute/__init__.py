"""How the layers are computed on each platform; the model itself holds none of this.

- ``modules``: ``Conv`` and ``Dense`` (``models.VGG``'s layers, the same parameters) whose
  arithmetic is chosen per platform when the program is lowered, and ``fast(model)``.
- ``conv``: the CPU's rules (oneDNN, Winograd, tap by tap, im2col, XLA), ``xla``: the
  XLA-only algorithms, ``onednn`` / ``winograd`` / ``kernels``: the C++ kernels.
- ``options``: ``ComputeOptions``, every switch and threshold of those rules in one object.
- ``process``: the process set-up (XLA's CPU flags, huge pages).
``python -m vgg_jax.compute`` builds the kernels and prints how VGG-16's layers run here.
The measurements behind each rule: ``docs/compute.md``.
"""
