"""Parameter surgery between VGG nets: the paper's shallow-to-deep initialisation, head swaps.

Section 3.1: deeper nets start with "the first four convolutional layers and the last three
fully-connected layers" of a trained net A, the rest freshly initialised. A's first four
convolutions are conv1_1, conv2_1, conv3_1 and conv3_2; each has a namesake of the same shape
in B, C, D and E, which is where they are copied.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax

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
