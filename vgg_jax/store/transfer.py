"""Starting a net from another's weights: the paper's shallow-to-deep copy, ``init_from``.

Section 3.1: deeper nets start with "the first four convolutional layers and the last three
fully-connected layers" of a trained net A, the rest freshly initialised. A's first four
convolutions are conv1_1, conv2_1, conv3_1 and conv3_2; each has a namesake of the same shape
in B, C, D and E, which is where they are copied.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
from absl import logging

from vgg_jax.store import checkpoints
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

SHALLOW_TO_DEEP_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


def copy_layers(target: Mapping[str, Any], source: Mapping[str, Any],
                layers: Sequence[str]) -> dict[str, Any]:
    """Returns ``target`` params with ``layers`` replaced by ``source``'s, shapes checked.

    Both arguments are Flax ``params`` dicts keyed by layer name. Raises ``ValueError`` naming
    the first missing layer or mismatching array.
    """
    out = dict(target)
    for name in layers:
        if name not in source or name not in target:
            side = "source" if name not in source else "target"
            raise ValueError(f"Layer {name!r} is missing from the {side} parameters.")
        src_leaves = jax.tree_util.tree_leaves_with_path(source[name])
        dst_leaves = jax.tree_util.tree_leaves_with_path(target[name])
        for (path, s), (_, d) in zip(src_leaves, dst_leaves, strict=True):
            if s.shape != d.shape:
                key = name + jax.tree_util.keystr(path)
                raise ValueError(f"Cannot copy {key}: source shape {s.shape}, "
                                 f"target shape {d.shape}.")
        out[name] = jax.tree_util.tree_map(lambda s, d: s.astype(d.dtype), source[name],
                                           target[name])
    return out


def shallow_to_deep(deep_params: Mapping[str, Any], net_a_params: Mapping[str, Any],
                    layers: Sequence[str] = SHALLOW_TO_DEEP_LAYERS) -> dict[str, Any]:
    """The paper's initialisation of a deeper net from a trained configuration A.

    ``deep_params`` are the freshly initialised params of the deeper net (B..E, same width and
    classes); the returned params hold A's conv1_1, conv2_1, conv3_1, conv3_2, fc6, fc7 and fc8
    and keep every other layer as it was.
    """
    return copy_layers(deep_params, net_a_params, layers)


def init_from_params(path: str, wanted: ModelRecord, abstract_params: dict, ema: bool = True):
    """Checks the checkpoint at ``path`` against the model; returns (loader of its params,
    its record). The loader takes the checkpoint's EMA weights where it has them and ``ema``.

    Same architecture: every layer the checkpoint has is copied (an fc8 with another number
    of classes, and the head of a headless checkpoint, start afresh). From a configuration A
    into a deeper net: the paper's shallow-to-deep copy.
    """
    store = checkpoints.open_read_only(path, "init_from")
    source, shapes = store.record(), store.param_shapes()
    if source.arch == wanted.arch:
        layers = [name for name in abstract_params if name in shapes]
        fresh = [name for name in abstract_params if name not in shapes]
        if fresh:
            logging.warning("init_from has no %s; they start from scratch.", ", ".join(fresh))
    elif source.arch == "vgg11":
        layers = list(SHALLOW_TO_DEEP_LAYERS)
    else:
        raise UserError(f"init_from {path!r} holds a {source.arch} but the config "
                        f"trains a {wanted.arch}: only a vgg11 (A) initialises another net.")
    if "fc8" in layers and shapes.get("fc8") != jax.tree_util.tree_map(
            lambda a: tuple(a.shape), dict(abstract_params["fc8"])):
        logging.warning("init_from: fc8 has another number of classes; re-initialising it.")
        layers.remove("fc8")
    for name in layers:
        for key, want in dict(abstract_params[name]).items():
            have = shapes.get(name, {}).get(key)
            if have != tuple(want.shape):
                raise UserError(f"init_from {path!r} does not fit the model: "
                                f"{name}/{key} has shape {have}, the model needs "
                                f"{tuple(want.shape)}.")

    def load(params: dict) -> tuple[dict, Optional[dict]]:
        variables = checkpoints.model_variables(store.restore_raw(), ema)
        params = copy_layers(params, variables["params"], layers)
        stats = variables.get("batch_stats") if source.arch == wanted.arch else None
        store.close()
        return params, stats or None

    return load, source
