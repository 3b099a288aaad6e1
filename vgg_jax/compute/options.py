"""``ComputeOptions``: every choice of how vgg_jax computes a layer on CPU, in one object.

The defaults are the rules measured in ``docs/compute.md``. Pass another instance to
``vgg_jax.compute.Conv`` / ``Dense`` (or ``compute.fast(model, options=...)``, or the
trainer's ``steps.pmap_steps(..., compute=...)``) to change them for one model, e.g.
``ComputeOptions(onednn=False)`` for the rules without oneDNN's kernels. Options only change
how the CPU computes a layer, never its result beyond float rounding; accelerators always
run XLA's own convolutions and products.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ComputeOptions:
    """How the CPU computes VGG's convolutions and fc6-fc8's products (``compute.conv``).

    oneDNN (where its kernels are built: ``compute.onednn``):
      onednn: whether convolutions may go to oneDNN at all.
      onednn_fc: whether fc6-fc8's products may go to oneDNN too (needs ``onednn``).
      onednn_min_macs: the fewest multiply-accumulates of a call that oneDNN takes; below it
        the fixed cost of a call outweighs its faster kernels.
      kernel_gradient / input_gradient: who computes those gradients of a oneDNN
        convolution: "auto" (``onednn.gradient_by_xla``), "onednn" or "xla".
      xla_input_gradient_map: under "auto", XLA takes the input gradient of maps this small
        where oneDNN's kernel is its AVX2 one.
      kernel_gradient_layout: how oneDNN's kernel gradient reads the activations: "auto"
        (``onednn.blocked_kernel_gradient``), "blocked" or "nhwc"; under "auto", blocked for
        3x3 float32 kernels on maps of >= ``blocked_min_pixels`` pixels with >=
        ``blocked_min_channels`` channels in or out.
    Tap by tap (``conv.taps``; where oneDNN's kernels are AVX-512 ones):
      taps: whether float32 maps of at most ``taps_map`` pixels a side with at least
        ``taps_min_channels`` channels in and out are computed as one product per kernel tap.
    Winograd F(2x2, 3x3) with C++ transforms (``compute.winograd``; float32 3x3, even maps):
      winograd: whether it may be picked; with at least ``winograd_min_channels`` channels
        in and out, on maps of at least ``winograd_min_training_map`` pixels a side in
        training and ``winograd_min_inference_map`` in inference.
    Without oneDNN's kernels (every step XLA's):
      small_map / large_kernel_map: maps this small (the second for kernels larger than
        3x3) are one matrix product over the gathered taps (im2col).
      xla_winograd_maps / xla_winograd_min_channels: the map sides (smallest, largest) and
        fewest input channels of 3x3 layers that XLA's Winograd takes in inference.
    """

    onednn: bool = True
    onednn_fc: bool = True
    onednn_min_macs: int = 1 << 20
    kernel_gradient: str = "auto"
    input_gradient: str = "auto"
    xla_input_gradient_map: int = 4
    kernel_gradient_layout: str = "auto"
    blocked_min_pixels: int = 48 * 48
    blocked_min_channels: int = 128
    taps: bool = True
    taps_map: int = 4
    taps_min_channels: int = 256
    winograd: bool = True
    winograd_min_channels: int = 128
    winograd_min_training_map: int = 8
    winograd_min_inference_map: int = 28
    small_map: int = 2
    large_kernel_map: int = 4
    xla_winograd_maps: tuple[int, int] = (28, 56)
    xla_winograd_min_channels: int = 256

    def __post_init__(self):
        for name in ("kernel_gradient", "input_gradient"):
            if getattr(self, name) not in ("auto", "onednn", "xla"):
                raise ValueError(f"{name} must be 'auto', 'onednn' or 'xla', "
                                 f"not {getattr(self, name)!r}.")
        if self.kernel_gradient_layout not in ("auto", "blocked", "nhwc"):
            raise ValueError(f"kernel_gradient_layout must be 'auto', 'blocked' or 'nhwc', "
                             f"not {self.kernel_gradient_layout!r}.")


DEFAULT = ComputeOptions()
