"""The layers of ``models.VGG`` computed per platform: ``Conv`` and ``Dense``, with the same
parameters as the plain ones, and ``fast(model)`` that swaps them in.

Each layer's computation is a ``lax.platform_dependent``: the CPU branch follows
``compute.conv``'s rules (oneDNN, Winograd, tap by tap...), every other platform runs XLA's
own convolution and product. Which branch runs is decided when the program is lowered, not
on the host that traces it: a step traced on a CPU login node and lowered for a GPU or TPU
holds no CPU kernels.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vgg_jax.compute import conv
from vgg_jax.compute.options import DEFAULT, ComputeOptions
from vgg_jax.models import layers

Array = Any


class Conv(layers.Conv):
    """``models.layers.Conv`` whose arithmetic is ``compute.conv.convolve_bias`` on the CPU
    (``training`` picks the training rules; ``algorithm`` other than "auto" forces one of
    ``conv.ALGORITHMS``) and XLA's convolution elsewhere."""

    training: bool = False
    options: ComputeOptions = DEFAULT
    algorithm: str = "auto"

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        relu, training, options, algorithm = (self.relu, self.training, self.options,
                                              self.algorithm)

        def cpu(x, kernel, bias):
            return conv.convolve_bias(x, kernel, bias, relu, algorithm, training, options)

        def other(x, kernel, bias):
            return layers.conv_bias(x, kernel, bias, relu)

        return jax.lax.platform_dependent(x, kernel, bias, cpu=cpu, default=other)


class Dense(nn.Module):
    """``nn.Dense`` (same parameters, same initialisation) for fc6-fc8.

    On the CPU the product reads the parameters in their own dtype, also under bfloat16
    mixed precision: at VGG's batch sizes these layers are bound by reading their 120M
    weights, so multiplying the float32 weights directly is faster and more precise than
    rounding them to bfloat16 every step; plain products go to oneDNN where
    ``conv.dense_uses_onednn``. Elsewhere it is ``nn.Dense``'s product in ``dtype``. The
    result is in ``dtype`` either way.
    """

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32
    options: ComputeOptions = DEFAULT

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, kernel)
        options = self.options

        def cpu(x, kernel, bias):
            return (conv.product(x.astype(kernel.dtype), kernel, options) + bias).astype(dtype)

        def other(x, kernel, bias):
            x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
            return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias

        return jax.lax.platform_dependent(x, kernel, bias, cpu=cpu, default=other)


@functools.lru_cache(maxsize=None)
def modules(training: bool = False, options: ComputeOptions = DEFAULT,
            algorithm: str = "auto") -> dict:
    """``{"conv": ..., "dense": ...}`` for ``models.VGG``: this wing's layers with
    ``training``, ``options`` (and ``algorithm``) bound; the same objects for the same
    arguments, so that models built from them compare equal."""
    return {"conv": functools.partial(Conv, training=training, options=options,
                                      algorithm=algorithm),
            "dense": functools.partial(Dense, options=options)}


def fast(model: nn.Module, training: bool = False, options: ComputeOptions = DEFAULT,
         algorithm: str = "auto") -> nn.Module:
    """``model`` (a ``models.VGG``) computing its layers per platform: ``Conv`` and
    ``Dense`` in place of the plain ones; parameters unchanged."""
    return model.clone(**modules(training, options, algorithm))
