"""The VGG family of Simonyan & Zisserman (2015), Table 1, as one Flax module.

Every configuration is a row of ``SPECS``: five blocks of (channels, kernel size) convolutions,
each block followed by a 2x2/2 max-pool, then the head fc6, fc7 (4096 units, dropout 0.5) and
fc8 (``num_classes``). Layer names mirror the paper: ``conv3_2`` is the second convolution of
block 3, ``bn3_2`` its BatchNorm, ``pool3`` the pooling after block 3.

``python -m vgg_jax.models --arch vgg16`` prints a per-layer table with parameters and
multiply-accumulates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.models.layers import (FC6, Conv, fc_dot_general, local_response_norm,  # noqa: F401
                            max_pool_2x2)

Array = Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """One row of Table 1: per block, the (channels, kernel) of each convolution."""

    blocks: tuple[tuple[tuple[int, int], ...], ...]
    lrn: bool = False
    batch_norm: bool = False
    letter: str = ""


def _block(channels: int, n3: int, n1: int = 0, kernel: int = 3) -> tuple[tuple[int, int], ...]:
    return ((channels, kernel),) * n3 + ((channels, 1),) * n1


_A = (_block(64, 1), _block(128, 1), _block(256, 2), _block(512, 2), _block(512, 2))
_B = (_block(64, 2), _block(128, 2), _block(256, 2), _block(512, 2), _block(512, 2))
_C = (_block(64, 2), _block(128, 2), _block(256, 2, 1), _block(512, 2, 1), _block(512, 2, 1))
_D = (_block(64, 2), _block(128, 2), _block(256, 3), _block(512, 3), _block(512, 3))
_E = (_block(64, 2), _block(128, 2), _block(256, 4), _block(512, 4), _block(512, 4))
# Section 2.3's claim tested (section 4.1): each stack of 3x3 convolutions replaced by one
# convolution of the same receptive field, 5x5 for a pair and 7x7 for three.
_B5 = tuple(_block(c, 1, kernel=5) for c in (64, 128, 256, 512, 512))
_D7 = tuple(_block(c, 1, kernel=k) for c, k in ((64, 5), (128, 5), (256, 7), (512, 7), (512, 7)))
# The control: B-5x5 with a 1x1 convolution + ReLU after each 5x5, so that it has B's
# number of non-linearities (and nearly B-5x5's weights).
_B5R = tuple(_block(c, 1, 1, kernel=5) for c in (64, 128, 256, 512, 512))

SPECS: dict[str, Spec] = {
    "vgg11": Spec(_A, letter="A"),
    "vgg11_lrn": Spec(_A, lrn=True, letter="A-LRN"),
    "vgg13": Spec(_B, letter="B"),
    "vgg16_conv1": Spec(_C, letter="C"),
    "vgg16": Spec(_D, letter="D"),
    "vgg19": Spec(_E, letter="E"),
    "vgg11_bn": Spec(_A, batch_norm=True),
    "vgg13_bn": Spec(_B, batch_norm=True),
    "vgg16_bn": Spec(_D, batch_norm=True),
    "vgg19_bn": Spec(_E, batch_norm=True),
    "vgg13_5x5": Spec(_B5, letter="B-5x5"),
    "vgg13_5x5_bn": Spec(_B5, batch_norm=True),
    "vgg13_5x5_relu": Spec(_B5R, letter="B-5x5-ReLU"),
    "vgg13_5x5_relu_bn": Spec(_B5R, batch_norm=True),
    "vgg16_7x7": Spec(_D7, letter="D-7x7"),
    "vgg16_7x7_bn": Spec(_D7, batch_norm=True),
}
ALIASES = {spec.letter: name for name, spec in SPECS.items() if spec.letter}
_ALIASES_UPPER = {letter.upper(): name for letter, name in ALIASES.items()}
# The nets of the paper's Table 1 (and their BatchNorm variants), which released weights
# exist for; the large-kernel twins are this codebase's.
TABLE1 = ("vgg11", "vgg11_lrn", "vgg13", "vgg16_conv1", "vgg16", "vgg19",
          "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")


def canonical_name(arch: str) -> str:
    """Maps an architecture name or letter (``"D"``, ``"A-LRN"``, ``"B-5x5"``) to its name."""
    if arch in SPECS:
        return arch
    if arch.upper() in _ALIASES_UPPER:
        return _ALIASES_UPPER[arch.upper()]
    valid = ", ".join(list(SPECS) + list(ALIASES))
    raise ValueError(f"Unknown architecture {arch!r}; valid names: {valid}.")


def get_spec(arch: str) -> Spec:
    """The Table 1 specification of ``arch`` (a name or a letter)."""
    return SPECS[canonical_name(arch)]


def layer_names(arch: str) -> list[str]:
    """Convolution names of ``arch`` in order: ``conv1_1``, ``conv1_2``, ..."""
    spec = get_spec(arch)
    return [f"conv{b + 1}_{i + 1}" for b, block in enumerate(spec.blocks) for i in range(len(block))]


def feature_names(arch: str, include_top: bool = True) -> list[str]:
    """Names of the recorded activations in network order: conv1_1, ..., pool1, ..., fc7."""
    spec = get_spec(arch)
    names = []
    for b, block in enumerate(spec.blocks, start=1):
        names += [f"conv{b}_{i}" for i in range(1, len(block) + 1)]
        names += ["lrn1"] if spec.lrn and b == 1 else []
        names.append(f"pool{b}")
    return names + (["fc6", "fc7"] if include_top else [])


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
      fc_dtype: dtype of fc6-fc8's products (their outputs are cast to ``dtype``); None: the
        parameters' dtype. At VGG's batch sizes these layers are bound by reading their 120M
        weights, not by arithmetic, so under bf16 mixed precision multiplying the float32
        weights directly is both faster and more precise than rounding them to bf16 every step
        (on CPU the rounding passes cost 0.2 s of a 2 s VGG-16 224/8 step).
      bn_axis_name: pmap axis over which BatchNorm statistics are averaged in training.
      conv_algorithm: how the convolutions are computed (``vgg_jax.compute.conv``): 'auto' picks per
        layer (and lets oneDNN take fc6-fc8's products on CPU: ``layers.fc_dot_general``);
        'xla' keeps every one a plain ``lax.conv_general_dilated`` and fc6-fc8 XLA's dots
        (what exporters want).

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
    conv_algorithm: str = "auto"
    fc_dtype: Any = None

    def _record(self, name: str, x: Array) -> Array:
        # One sown dict, so that feature names may equal the submodules' names (conv1_1).
        # Returns x, so that an interceptor (vgg_jax.inference.explain) can stand in for the activation.
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
        for b, block in enumerate(spec.blocks, start=1):
            for i, (channels, kernel) in enumerate(block, start=1):
                name = f"{b}_{i}"
                # How each convolution is computed (oneDNN, XLA, im2col, Winograd): vgg_jax.compute.conv.
                x = Conv(max(1, round(channels * self.width)), kernel, conv_init,
                         relu=not spec.batch_norm, training=train,
                         algorithm=self.conv_algorithm, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"conv{name}")(x)
                if spec.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     dtype=self.dtype, param_dtype=self.param_dtype,
                                     axis_name=self.bn_axis_name if train else None,
                                     name=f"bn{name}")(x)
                    x = nn.relu(x)
                if mask is not None:
                    x = x * mask.astype(x.dtype)
                x = self._record(f"conv{name}", x)
            if spec.lrn and b == 1:
                x = local_response_norm(x)
                x = self._record("lrn1", x)
            x = max_pool_2x2(x, before_fc=self.include_top and b == len(spec.blocks))
            if mask is not None:  # a pooled cell is valid where all its pixels are
                mask = -max_pool_2x2(-mask)
                x = x * mask.astype(x.dtype)
            x = self._record(f"pool{b}", x)
        if not self.include_top:
            return x

        fc_width = self.fc_width or max(1, round(4096 * self.width))
        fc_dtype = self.fc_dtype or self.param_dtype
        out_dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        dense_kw = dict(kernel_init=fc_init, dtype=fc_dtype, param_dtype=self.param_dtype,
                        dot_general=fc_dot_general(self.conv_algorithm))
        x = FC6(fc_width, fc_init, fc_dtype, self.param_dtype, self.conv_algorithm,
                name="fc6")(x, dense=dense)
        x = self._hidden(x.astype(out_dtype), "fc6", train)
        x = nn.Dense(fc_width, name="fc7", **dense_kw)(x)
        x = self._hidden(x.astype(out_dtype), "fc7", train)
        x = nn.Dense(self.num_classes, name="fc8", **dense_kw)(x).astype(out_dtype)
        if dense and not return_map:
            if mask is None:
                return x.mean(axis=(1, 2))
            window = mask.shape[1] - x.shape[1] + 1  # the fc6 window on pool5
            valid = -nn.max_pool(-mask, (window, window), strides=(1, 1), padding="VALID")
            valid = valid.astype(x.dtype)
            return (x * valid).sum(axis=(1, 2)) / jnp.maximum(valid.sum(axis=(1, 2)), 1)
        return x


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


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("arch", "vgg16", f"One of {', '.join(SPECS)} or a letter A..E.")
    flags.register_validator("arch", lambda a: a in SPECS or a.upper() in _ALIASES_UPPER,
                             message=f"--arch must be one of the valid names {', '.join(SPECS)} "
                                     f"or a letter A..E.")
    flags.DEFINE_integer("image_size", 224, "Input side in pixels.", lower_bound=32)
    flags.DEFINE_integer("num_classes", 1000, "Width of fc8.", lower_bound=1)
    flags.DEFINE_float("width", 1.0, "Multiplier on every layer's channels.", lower_bound=1e-6)


def main(argv: Sequence[str]) -> None:
    """CLI: ``python -m vgg_jax.models --arch vgg16 [--image_size 224] [--num_classes 1000]``."""
    from absl import flags
    from vgg_jax import cli
    cli.no_arguments(argv)
    f = flags.FLAGS
    model = create_model(f.arch, num_classes=f.num_classes, width=f.width)
    try:
        rows = summary(model, f.image_size)
    except ValueError as e:
        from vgg_jax.errors import UserError
        raise UserError(str(e)) from None
    print(format_summary(rows, f"{model.arch} at {f.image_size}x{f.image_size}, "
                               f"{f.num_classes} classes"))


if __name__ == "__main__":
    from vgg_jax import cli
    cli.run(main, define_flags)
