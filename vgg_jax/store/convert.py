"""Pretrained torchvision and Keras VGG weights as vgg_jax checkpoints: where each of
their tensors goes (``torchvision_plan``, ``keras_plan``), ``convert`` and ``write``. The
command is ``python -m vgg_jax.convert`` (``vgg_jax/convert.py``)."""

from __future__ import annotations

import math
import os
from typing import Optional

import jax
import numpy as np

from vgg_jax import models
from vgg_jax.errors import UserError
from vgg_jax.store import checkpoints, weight_files
from vgg_jax.store.record import ModelRecord

SOURCES = ("torchvision", "keras")
PREPROCESSING = {
    "torchvision": {"mean_rgb": (123.675, 116.28, 103.53), "std_rgb": (58.395, 57.12, 57.375),
                    "train_crop": "inception", "train_scale": (None, None)},
    # The original Oxford Caffe weights: S jittered in [256, 512], BGR mean subtracted.
    "keras": {"mean_rgb": (123.68, 116.779, 103.939), "std_rgb": (1.0, 1.0, 1.0),
              "train_crop": "scale", "train_scale": (256, 512)},
}
IGNORED_SUFFIXES = ("num_batches_tracked",)

# Each plan entry: (source key, (collection, layer, name), kind).
Plan = list[tuple[str, tuple[str, str, str], str]]


def _to_flax(kind: str, a: np.ndarray, channels: int = 512) -> np.ndarray:
    if kind == "oihw":
        return a.transpose(2, 3, 1, 0)
    if kind == "linear":
        return a.T
    if kind == "fc6_nchw":  # (out, C*k*k) over an NCHW flatten -> (k*k*C, out) over NHWC
        out, fan_in = a.shape
        k = math.isqrt(fan_in // channels)
        return a.reshape(out, channels, k, k).transpose(2, 3, 1, 0).reshape(fan_in, out)
    if kind == "hwio_bgr":
        return a[:, :, ::-1, :]
    return a


def _source_shape(kind: str, flax_shape: tuple) -> tuple:
    if kind == "oihw":
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if kind in ("linear", "fc6_nchw"):
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def torchvision_plan(arch: str, include_top: bool = True) -> Plan:
    """Where each tensor of torchvision's ``models.<arch>().state_dict()`` goes."""
    spec = models.get_spec(arch)
    plan, index = [], 0  # torchvision's ``features`` Sequential: conv, [bn], relu ..., pool
    for layer in spec.layers():
        if layer.kind == "lrn":
            continue  # torchvision has no A-LRN
        if layer.kind == "conv":
            plan += [(f"features.{index}.weight", ("params", layer.name, "kernel"), "oihw"),
                     (f"features.{index}.bias", ("params", layer.name, "bias"), "")]
            index += 1
            if spec.batch_norm:
                bn = layer.norm
                plan += [(f"features.{index}.weight", ("params", bn, "scale"), ""),
                         (f"features.{index}.bias", ("params", bn, "bias"), ""),
                         (f"features.{index}.running_mean", ("batch_stats", bn, "mean"), ""),
                         (f"features.{index}.running_var", ("batch_stats", bn, "var"), "")]
                index += 1
        index += 1  # the ReLU after a convolution, or the MaxPool
    if include_top:
        for key, layer, kind in (("classifier.0", "fc6", "fc6_nchw"),
                                 ("classifier.3", "fc7", "linear"),
                                 ("classifier.6", "fc8", "linear")):
            plan += [(f"{key}.weight", ("params", layer, "kernel"), kind),
                     (f"{key}.bias", ("params", layer, "bias"), "")]
    return plan


def keras_plan(arch: str, layers: dict[str, list], include_top: bool = True) -> Plan:
    """Where each weight of a Keras VGG file goes, matching its layers by position.

    Source keys are ``<layer>/<0|1>`` (kernel, bias) of the file's layers in network order.
    """
    convs = [n for n, w in layers.items() if np.ndim(w[0]) == 4]
    denses = [n for n, w in layers.items() if np.ndim(w[0]) == 2]
    targets = models.layer_names(arch) + (["fc6", "fc7", "fc8"] if include_top else [])
    sources = convs + denses
    plan = []
    for position, target in enumerate(targets):
        name = sources[position] if position < len(sources) else f"<no layer for {target}>"
        kind = "hwio_bgr" if position == 0 else ""
        plan += [(f"{name}/0", ("params", target, "kernel"), kind),
                 (f"{name}/1", ("params", target, "bias"), "")]
    return plan


def _keras_arrays(layers: dict[str, list]) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": w for name, ws in layers.items() for i, w in enumerate(ws)}


def _check(plan: Plan, arrays: dict[str, np.ndarray], expected: dict, arch: str) -> None:
    """Raises ``UserError`` at the first key whose presence or shape differs from ``arch``'s."""
    for key, (collection, layer, name), kind in plan:
        want = _source_shape(kind, tuple(expected[collection][layer][name].shape))
        if key not in arrays:
            raise UserError(f"The weights do not fit {arch}: {key} is missing (shape {want}).")
        if tuple(arrays[key].shape) != want:
            raise UserError(f"The weights do not fit {arch}: {key} has shape "
                            f"{tuple(arrays[key].shape)}, {arch} needs {want}.")
    covered = {target for _, target, _ in plan}
    for collection, tree in expected.items():
        for layer, leaves in tree.items():
            for name in leaves:
                if (collection, layer, name) not in covered:
                    raise UserError(f"The weights do not fit {arch}: it needs {layer}/{name}, "
                                    f"which the file does not have.")
    used = {key for key, _, _ in plan}
    extra = [k for k in arrays if k not in used and not k.endswith(IGNORED_SUFFIXES)]
    if extra:
        raise UserError(f"The weights do not fit {arch}: the file has {extra[0]} (shape "
                        f"{tuple(arrays[extra[0]].shape)}), which {arch} does not.")


def _head_info(source: str, arrays: dict, layers: Optional[dict]) -> tuple[bool, int, int]:
    """(include_top, num_classes, image_size) as the file's head says."""
    if source == "torchvision":
        if "classifier.6.weight" not in arrays:
            return False, 1000, 224
        return True, int(arrays["classifier.6.weight"].shape[0]), 224  # adaptive pool: 7x7
    denses = [w for w in layers.values() if np.ndim(w[0]) == 2]
    if not denses:
        return False, 1000, 224
    window = math.isqrt(max(1, denses[0][0].shape[0] // 512))
    return True, int(denses[-1][0].shape[-1]), 32 * window


def convert(source: str, arch: str, path: str) -> tuple[dict, ModelRecord]:
    """Reads ``path`` and returns (variables, record) for a vgg_jax checkpoint of ``arch``."""
    if source not in SOURCES:
        raise UserError(f"Unknown source {source!r}; use one of {', '.join(SOURCES)}.")
    try:
        arch = models.canonical_name(arch)
    except ValueError as e:
        raise UserError(str(e)) from None
    if arch not in models.TABLE1:
        raise UserError(f"No released weights exist for {arch}: it is one of vgg_jax's "
                        f"large-kernel twins of the Table 1 nets; train it with "
                        f"python -m vgg_jax.main --config.arch={arch}.")
    spec = models.get_spec(arch)
    if source == "keras" and (spec.batch_norm or spec.lrn):
        raise UserError(f"Keras ships no {arch}; convert vgg16 or vgg19 from Keras.")
    if (source == "keras") != path.endswith(".h5"):
        wanted = "a Keras .h5 file" if source == "keras" else "a .pth or .safetensors file"
        raise UserError(f"--from {source} expects {wanted}; got {os.path.basename(path)}.")
    loaded = weight_files.read(path)
    layers = loaded if source == "keras" else None
    arrays = _keras_arrays(loaded) if source == "keras" else loaded
    include_top, num_classes, image_size = _head_info(source, arrays, layers)

    def check(name: str) -> Plan:
        model = models.create_model(name, num_classes=num_classes, include_top=include_top)
        plan = (torchvision_plan(name, include_top) if source == "torchvision"
                else keras_plan(name, layers, include_top))
        _check(plan, arrays, models.abstract_variables(model, image_size), name)
        return plan

    try:
        plan = check(arch)
    except UserError as e:
        for other in models.TABLE1:
            try:
                check(other)
            except (UserError, ValueError):
                continue
            raise UserError(f"{e} The file holds {other} weights: pass --arch {other}.") from None
        raise
    variables: dict = {}
    for key, (collection, layer, name), kind in plan:
        value = _to_flax(kind, np.asarray(arrays[key], np.float32))
        variables.setdefault(collection, {}).setdefault(layer, {})[name] = \
            np.ascontiguousarray(value)
    record = ModelRecord(arch=arch, num_classes=num_classes, include_top=include_top,
                         image_size=image_size, eval_scale=image_size * 256 // 224,
                         **PREPROCESSING[source], source=f"{source}:{os.path.basename(path)}")
    return variables, record


def write(variables: dict, record: ModelRecord, out: str) -> str:
    """Saves a converted net as ``out/checkpoints/0``; never overwrites a checkpoint."""
    directory = os.path.join(out, "checkpoints")
    if os.path.isdir(directory) and os.listdir(directory):
        raise UserError(f"{directory} already holds checkpoints: choose another --out.")
    store = checkpoints.Checkpoints(directory, keep=1)
    state = {"params": jax.tree_util.tree_map(np.asarray, variables["params"])}
    if variables.get("batch_stats"):
        state["batch_stats"] = variables["batch_stats"]
    store.save(0, state, record)
    store.wait()
    store.close()
    return directory
