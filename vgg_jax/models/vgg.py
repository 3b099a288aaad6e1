"""The VGG family of Simonyan & Zisserman (2015), Table 1, as one Flax module.

Every configuration is a row of ``SPECS``: five blocks of (channels, kernel size) convolutions,
each block followed by a 2x2/2 max-pool, then the head fc6, fc7 (4096 units, dropout 0.5) and
fc8 (``num_classes``). Layer names mirror the paper: ``conv3_2`` is the second convolution of
block 3, ``bn3_2`` its BatchNorm, ``pool3`` the pooling after block 3.

``python -m vgg_jax.models --arch vgg16`` (``__main__.py``) prints a per-layer table with parameters and
multiply-accumulates.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.models import layers
from vgg_jax.models.layers import fc6_windows, local_response_norm, max_pool_2x2
from vgg_jax.models.spec import canonical_name, feature_names, get_spec, layer_names

Array = Any
ModuleDef = Any


def _initializers(init: str, init_std: float) -> tuple[Callable, Callable]:
    """(conv kernel init, fc kernel init) for ``init`` in glorot | normal | he."""
    if init == "glorot":
        glorot = nn.initializers.glorot_uniform()
        return glorot, glorot
    if init == "normal":
        normal = nn.initializers.normal(stddev=init_std)
        return normal, normal
    if init == "he":
        # Kaiming fan-out convs as torchvision; Kaiming fan-in FC layers where torchvision uses
        # N(0, 0.01), which only suits 4096-wide layers and stalls narrow nets.
        return (nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                nn.initializers.variance_scaling(2.0, "fan_in", "normal"))
    raise ValueError(f"Unknown init {init!r}; use 'glorot', 'normal' or 'he'.")


class VGG(nn.Module):
    """A VGG network of Table 1.

    Attributes:
      arch: a name of ``SPECS`` (``vgg16``, ``vgg11_lrn``, ``vgg19_bn``...) or a letter A..E.
      num_classes: width of fc8.
      width: multiplier on every convolution's channels (1.0 is the paper's net).
      fc_width: units of fc6 and fc7; defaults to ``round(4096 * width)``.
      dropout_rate: dropout after fc6 and fc7 in training.
      include_top: False gives the headless backbone, returning the pool5 feature map.
      initializer: 'glorot' (Glorot uniform), 'normal' (the paper's N(0, init_std)), 'he' (Kaiming:
        fan-out convs as torchvision, fan-in FC layers) or 'auto' (He with BatchNorm, Glorot without).
      dtype / param_dtype: computation and parameter dtypes (bf16 / float32 mixed precision).
      bn_axis_name: pmap axis over which BatchNorm statistics are averaged in training.
      conv: the convolution module (``layers.Conv``'s signature: features, kernel_size,
        kernel_init, relu, dtype, param_dtype). ``layers.Conv`` is XLA's; the trainer, the
        evaluation and the benchmarks pass ``vgg_jax.compute.Conv``, which computes the same
        layer per platform. Parameter names and values do not depend on it.
      dense: the fully connected module of fc6, fc7 and fc8 (``nn.Dense``'s signature).

    Calling ``model.apply(variables, images, train=..., dense=...)`` with NHWC images returns
    logits (N, num_classes); with ``dense=True`` the class score map is averaged spatially
    (``return_map=True`` returns the map itself). Post-ReLU activations and pooled maps are
    sown into the ``intermediates`` collection under their layer names (see ``extract_features``).
    """

    arch: str = "vgg16"
    num_classes: int = 1000
    width: float = 1.0
    fc_width: Optional[int] = None
    dropout_rate: float = 0.5
    include_top: bool = True
    initializer: str = "auto"
    init_std: float = 0.01
    dtype: Any = None
    param_dtype: Any = jnp.float32
    bn_axis_name: Optional[str] = None
    conv: ModuleDef = layers.Conv
    dense: ModuleDef = nn.Dense

    def _record(self, name: str, x: Array) -> Array:
        # One sown dict, so that feature names may equal the submodules' names (conv1_1).
        # Returns x, so that an interceptor (vgg_jax.inference.explain) can stand in for the
        # activation.
        self.sow("intermediates", "layers", x, init_fn=dict, reduce_fn=lambda d, v: {**d, name: v})
        return x

    def _hidden(self, x: Array, name: str, train: bool) -> Array:
        x = self._record(name, nn.relu(x))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)

    @nn.compact
    def __call__(self, x: Array, train: bool = False, dense: bool = False,
                 return_map: bool = False, mask: Optional[Array] = None) -> Array:
        """Logits (N, classes); see the class docstring.

        ``mask`` (N, H, W, 1), 1 on real pixels and 0 on padding, makes dense evaluation of
        a padded batch exact: activations are zeroed outside the image after every layer, as
        "same" padding would see them, and only score-map positions whose fc6 window lies
        inside the image are averaged.
        """
        spec = get_spec(self.arch)
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] < 32 or x.shape[2] < 32:
            raise ValueError(
                f"{canonical_name(self.arch)} expects images of shape (batch, height, width, 3) "
                f"with height and width >= 32 (five 2x2 poolings); got {tuple(x.shape)}.")
        init = self.initializer if self.initializer != "auto" else ("he" if spec.batch_norm else "glorot")
        conv_init, fc_init = _initializers(init, self.init_std)
        if mask is not None:
            mask = mask.astype(x.dtype)
            x = x * mask
        for layer in spec.layers():
            if layer.kind == "conv":
                x = self.conv(features=max(1, round(layer.channels * self.width)),
                              kernel_size=layer.kernel, kernel_init=conv_init,
                              relu=not spec.batch_norm, dtype=self.dtype,
                              param_dtype=self.param_dtype, name=layer.name)(x)
                if spec.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     dtype=self.dtype, param_dtype=self.param_dtype,
                                     axis_name=self.bn_axis_name if train else None,
                                     name=layer.norm)(x)
                    x = nn.relu(x)
            elif layer.kind == "lrn":
                x = local_response_norm(x)
            else:
                x = max_pool_2x2(x)
                if mask is not None:  # a pooled cell is valid where all its pixels are
                    mask = -max_pool_2x2(-mask)
            if mask is not None and layer.kind != "lrn":
                x = x * mask.astype(x.dtype)
            x = self._record(layer.name, x)
        if not self.include_top:
            return x

        fc_width = self.fc_width or max(1, round(4096 * self.width))
        out_dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        fc = functools.partial(self.dense, kernel_init=fc_init, dtype=self.dtype,
                               param_dtype=self.param_dtype)
        x = fc(fc_width, name="fc6")(self._fc6_input(x, dense))
        x = self._hidden(x.astype(out_dtype), "fc6", train)
        x = fc(fc_width, name="fc7")(x)
        x = self._hidden(x.astype(out_dtype), "fc7", train)
        x = fc(self.num_classes, name="fc8")(x).astype(out_dtype)
        if dense and not return_map:
            if mask is None:
                return x.mean(axis=(1, 2))
            window = mask.shape[1] - x.shape[1] + 1  # the fc6 window on pool5
            valid = -nn.max_pool(-mask, (window, window), strides=(1, 1), padding="VALID")
            valid = valid.astype(x.dtype)
            return (x * valid).sum(axis=(1, 2)) / jnp.maximum(valid.sum(axis=(1, 2)), 1)
        return x

    def _fc6_input(self, x: Array, dense: bool) -> Array:
        """pool5 as fc6 reads it: flattened, or (``dense``) every fc6 window of it.

        fc6's window is its kernel's inputs over pool5's channels (7x7 at 224 pixels), read
        from the parameters where they exist; a fresh net is built for this map.
        """
        n, h, w, c = x.shape
        fc6 = self.variables.get("params", {}).get("fc6")
        fan_in = fc6["kernel"].shape[0] if fc6 is not None else h * w * c
        window = math.isqrt(fan_in // c)
        if window * window * c != fan_in:
            raise ValueError(f"fc6 kernel with {fan_in} inputs does not fit {c} channels.")
        if dense:
            if h < window or w < window:
                raise ValueError(
                    f"Dense evaluation needs a final feature map of at least {window}x{window} "
                    f"(input at least {32 * window}x{32 * window}); got {h}x{w}.")
            return fc6_windows(x, window)
        if h * w * c != fan_in:
            raise ValueError(
                f"fc6 was built for a {window}x{window}x{c} feature map "
                f"(input {32 * window}x{32 * window}) but got {h}x{w}x{c}: resize the images "
                f"to {32 * window}x{32 * window} or use dense=True.")
        return x.reshape(n, -1)


def fc6_window(arch: str, params: Mapping) -> int:
    """The side of the pool5 window that ``params``' fc6 was built for (7 at 224 pixels):
    its kernel's inputs over the last convolution's channels."""
    last = layer_names(arch)[-1]
    return math.isqrt(params["fc6"]["kernel"].shape[0] // params[last]["kernel"].shape[-1])


def create_model(arch: str, **kwargs) -> VGG:
    """Builds ``VGG(arch=canonical_name(arch), **kwargs)``; raises on unknown names."""
    return VGG(arch=canonical_name(arch), **kwargs)


def abstract_variables(model: VGG, image_size: int | tuple[int, int] = 224) -> Mapping:
    """The model's variables as ``jax.ShapeDtypeStruct`` leaves, allocating nothing."""
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    images = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def count_params(tree: Mapping) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def extract_features(model: VGG, variables: Mapping, images: Array,
                     names: Optional[Sequence[str]] = None, **kwargs) -> dict[str, Array]:
    """Named intermediate activations (``conv1_1`` ... ``pool5``, ``fc6``, ``fc7``).

    Activations are post-ReLU, as used for perceptual losses; ``names`` selects a subset.
    """
    _, state = model.apply(variables, images, mutable=["intermediates"], **kwargs)
    feats = state["intermediates"]["layers"]
    if names is None:
        names = [n for n in feature_names(model.arch, model.include_top) if n in feats]
    missing = [n for n in names if n not in feats]
    if missing:
        raise ValueError(f"No layers {missing} in {model.arch}; available: {list(feats)}.")
    return {n: feats[n] for n in names}


def summary(model: VGG, image_size: int = 224) -> list[dict]:
    """Per-layer rows (name, output shape, parameters, multiply-accumulates) from shapes alone.

    A convolution's MACs are its kernel size times its output positions; a dense layer's its
    kernel size. BatchNorm, LRN, ReLU and pooling count parameters but no MACs.
    """
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    out, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, mutable=True), images)
    params = variables["params"]
    rows = []
    acts = variables["intermediates"]["layers"]
    for name in feature_names(model.arch, model.include_top):
        act = acts[name]
        owners = (name, name.replace("conv", "bn")) if name.startswith("conv") else (name,)
        layer = {k: v for k, v in params.items() if k in owners}
        macs = 0
        if name in params:
            kernel = params[name]["kernel"]
            positions = act.shape[1] * act.shape[2] if name.startswith("conv") else 1
            macs = int(np.prod(kernel.shape)) * positions
        rows.append(dict(name=name, shape=tuple(act.shape[1:]), params=count_params(layer),
                         macs=macs))
    if "fc8" in params:
        rows.append(dict(name="fc8", shape=tuple(out.shape[1:]),
                         params=count_params(params["fc8"]),
                         macs=int(np.prod(params["fc8"]["kernel"].shape))))
    return rows


def format_summary(rows: list[dict], title: str = "") -> str:
    """The rows of ``summary`` as an aligned text table with totals."""
    lines = [title] if title else []
    lines.append(f"{'layer':<10}{'output':>18}{'params':>16}{'MACs':>18}")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['name']:<10}{shape:>18}{r['params']:>16,}{r['macs']:>18,}")
    total_p = sum(r["params"] for r in rows)
    total_m = sum(r["macs"] for r in rows)
    lines.append(f"{'total':<10}{'':>18}{total_p:>16,}{total_m:>18,}")
    return "\n".join(lines)
