"""Durations in steps or epochs, through one helper (as big_vision's ``steps``): a config
gives each duration as ``*_steps`` where that is > 0, else as ``*_epochs``, and this turns
either into a number of steps."""

from __future__ import annotations

import math

import ml_collections


def to_steps(epochs: float, steps_per_epoch: int, up: bool = False) -> int:
    """``epochs`` as steps: rounded to the nearest step, or ``up`` to the next one."""
    steps = epochs * steps_per_epoch
    return int(math.ceil(steps)) if up else int(round(steps))


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The run's length: ``num_train_steps``, else ``num_epochs`` (its last epoch whole)."""
    return config.num_train_steps or to_steps(config.num_epochs, steps_per_epoch, up=True)


def every(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """The period of ``name`` ("eval", "checkpoint"): ``{name}_every_steps`` where > 0, else
    ``{name}_every_epochs`` in steps; at least 1."""
    steps = config.get(f"{name}_every_steps", 0)
    if steps > 0:
        return steps
    return max(1, to_steps(config[f"{name}_every_epochs"], steps_per_epoch))
