"""The layers of ``models.VGG`` as the CPU computes them, with the same parameters as the
plain ones: ``CpuConv`` and ``CpuDense`` follow ``compute.conv``'s rules (oneDNN, Winograd,
tap by tap...). Which platform's layers run is decided when a program is lowered, not on
the host that traces it, by ``lax.platform_dependent``: once per layer in ``Conv`` and
``Dense`` (``fast(model)``), or once for a whole step (``per_platform``, the trainer's). A
step traced on a CPU login node and lowered for a GPU or TPU holds no CPU kernels.
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


class CpuConv(layers.Conv):
    """``models.layers.Conv`` computed by ``compute.conv.convolve_bias``: the CPU's rules
    (``training`` picks the training ones; ``algorithm`` other than "auto" forces one of
    ``conv.ALGORITHMS``). Only for programs lowered for the CPU (``cpu``); ``Conv`` is the
    same layer on any platform."""

    training: bool = False
    options: ComputeOptions = DEFAULT
    algorithm: str = "auto"

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        return conv.convolve_bias(x, kernel, bias, self.relu, self.algorithm, self.training,
                                  self.options)


class Conv(CpuConv):
    """``CpuConv`` on the CPU and XLA's convolution (``layers.conv_bias``) elsewhere, chosen
    by ``lax.platform_dependent`` when the program is lowered."""

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        return jax.lax.platform_dependent(
            x, kernel, bias, cpu=functools.partial(CpuConv.compute, self),
            default=functools.partial(layers.conv_bias, relu=self.relu))


class CpuDense(nn.Module):
    """``nn.Dense`` (same parameters, same initialisation) for fc6-fc8 as the CPU computes
    it: the product reads the parameters in their own dtype, also under bfloat16 mixed
    precision (at VGG's batch sizes these layers are bound by reading their 120M weights, so
    multiplying the float32 weights directly is faster and more precise than rounding them
    to bfloat16 every step), by oneDNN where ``conv.dense_uses_onednn``. The result is in
    ``dtype``. Only for programs lowered for the CPU; ``Dense`` is the same layer anywhere.
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
        return self.compute(x, kernel, bias)

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        dtype = self.dtype or jnp.result_type(x, kernel)
        return (conv.product(x.astype(kernel.dtype), kernel, self.options) + bias).astype(dtype)


class Dense(CpuDense):
    """``CpuDense`` on the CPU and ``nn.Dense``'s product in ``dtype`` elsewhere, chosen by
    ``lax.platform_dependent`` when the program is lowered."""

    def compute(self, x: Array, kernel: Array, bias: Array) -> Array:
        dtype = self.dtype or jnp.result_type(x, kernel)

        def other(x, kernel, bias):
            x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
            return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias

        return jax.lax.platform_dependent(
            x, kernel, bias, cpu=functools.partial(CpuDense.compute, self), default=other)


@functools.lru_cache(maxsize=None)
def modules(training: bool = False, options: ComputeOptions = DEFAULT,
            algorithm: str = "auto", cpu_only: bool = False) -> dict:
    """``{"conv": ..., "dense": ...}`` for ``models.VGG``: this wing's layers with
    ``training``, ``options`` (and ``algorithm``) bound, per platform or (``cpu_only``) the
    CPU's; the same objects for the same arguments, so that models built from them compare
    equal."""
    conv_cls, dense_cls = (CpuConv, CpuDense) if cpu_only else (Conv, Dense)
    return {"conv": functools.partial(conv_cls, training=training, options=options,
                                      algorithm=algorithm),
            "dense": functools.partial(dense_cls, options=options)}


def fast(model: nn.Module, training: bool = False, options: ComputeOptions = DEFAULT,
         algorithm: str = "auto") -> nn.Module:
    """``model`` (a ``models.VGG``) computing its layers per platform: ``Conv`` and
    ``Dense`` in place of the plain ones; parameters unchanged. For inference, and for
    gradients where speed matters less: a VGG-16 bfloat16 training step with a switch in
    every layer ran at 0.65x of one switched once (``per_platform``;
    ``benchmarks/results/versions_house_plan.md``)."""
    return model.clone(**modules(training, options, algorithm))


def cpu(model: nn.Module, training: bool = False, options: ComputeOptions = DEFAULT,
        algorithm: str = "auto") -> nn.Module:
    """``model`` with the CPU's layers (``CpuConv``, ``CpuDense``): only for programs lowered
    for the CPU."""
    return model.clone(**modules(training, options, algorithm, cpu_only=True))


def per_platform(make: Callable[[nn.Module], Callable], model: nn.Module,
                 training: bool = False, options: ComputeOptions = DEFAULT) -> Callable:
    """A function that runs ``make(cpu(model))`` on the CPU and ``make(model)`` elsewhere,
    chosen by ``lax.platform_dependent`` when its program is lowered. ``make(m)`` builds a
    step (e.g. a train step) around model ``m``; the choice is made once for the whole step,
    so its gradients are each branch's own."""
    on_cpu, elsewhere = make(cpu(model, training, options)), make(model)

    def step(*args):
        return jax.lax.platform_dependent(*args, cpu=on_cpu, default=elsewhere)

    return step
