"""The config schema: every field of ``configs/default.py``, its type and allowed values.

``check(config)`` runs before any data is built or code compiled (by ``vgg_jax.main``,
``train_and_evaluate``, ``evaluate`` and ``sweep``) and raises ``ConfigError`` listing every
violation, one line each, naming the field, the value and what is allowed. A field that is
not in the schema is an error too. A new config field gets a line in ``FIELDS``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Optional

import ml_collections

from vgg_jax import models
from vgg_jax.errors import UserError


class ConfigError(UserError):
    """One or more config fields out of their allowed values (``problems``, one per line)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclasses.dataclass(frozen=True)
class Field:
    """A field's type (``int``, ``float``, ``bool``, ``str``, ``tuple``) and allowed values.

    Numbers lie within ``low``/``high`` (exclusive where ``*_open``); strings and numbers may
    be limited to ``choices``; tuples have ``length`` items (0: any), each checked by
    ``item``; ``optional`` allows None; ``rule`` is a further check returning a problem;
    ``note`` says why, after the allowed values.
    """

    kind: type
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    length: int = 0
    item: Optional["Field"] = None
    optional: bool = False
    rule: Optional[Callable[[Any], Optional[str]]] = None
    note: str = ""

    def allowed(self) -> str:
        """What the field accepts, in words."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is tuple:
            count = f"{self.length} " if self.length else ""
            return f"a tuple of {count}items, each {self.item.allowed()}"
        noun = {int: "an integer", float: "a number", bool: "True or False",
                str: "a string"}[self.kind]
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            noun += f" in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            noun += f" {'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            noun += f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return noun + (" (or None)" if self.optional else "") + \
            (f" ({self.note})" if self.note else "")

    def problem(self, value: Any) -> Optional[str]:
        """None if ``value`` is allowed, else what is wrong with it."""
        if value is None:
            return None if self.optional else f"must be {self.allowed()}"
        if not self._type_ok(value):
            return f"must be {self.allowed()}"
        if self.kind is tuple:
            if self.length and len(value) != self.length:
                return f"must be {self.allowed()}"
            for v in value:
                if self.item.problem(v):
                    return f"must be {self.allowed()}"
        elif self.kind in (int, float):
            if not math.isfinite(value) or not self._in_range(value):
                return f"must be {self.allowed()}"
        if self.choices and value not in self.choices:
            return f"must be {self.allowed()}"
        return self.rule(value) if self.rule else None

    def _type_ok(self, value: Any) -> bool:
        if self.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind is tuple:
            return isinstance(value, (tuple, list))
        return isinstance(value, self.kind)

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open
                                      else value > self.high):
            return False
        return True


def _num(x: float) -> str:
    return f"{x:g}"


def Int(low=None, high=None, **kw) -> Field:  # noqa: N802  (reads as a type)
    return Field(int, low=low, high=high, **kw)


def Float(low=None, high=None, **kw) -> Field:  # noqa: N802
    return Field(float, low=low, high=high, **kw)


def Choice(*choices) -> Field:  # noqa: N802
    return Field(type(choices[0]), choices=choices)


BOOL = Field(bool)
STRING = Field(str)
NONEMPTY = Field(str, rule=lambda v: None if v.strip() else "must not be empty")
SIDE = Int(32, note="images of height and width >= 32 pass five 2x2 poolings")


def _regex(value: str) -> Optional[str]:
    try:
        re.compile(value)
    except re.error as e:
        return f"must be a regular expression ({e})"
    return None


def _arch(value: str) -> Optional[str]:
    try:
        models.canonical_name(value)
    except ValueError:
        return f"must be one of {', '.join(list(models.SPECS) + list(models.ALIASES))}"
    return None


def parse_step_range(value: str) -> Optional[tuple[int, int]]:
    """``"START:END"`` -> (START, END) with 0 <= START < END; None for ""; ValueError else."""
    if not value:
        return None
    start, sep, end = value.partition(":")
    if not (sep and start.strip().isdigit() and end.strip().isdigit()
            and int(start) < int(end)):
        raise ValueError(value)
    return int(start), int(end)


def _step_range(value: str) -> Optional[str]:
    try:
        parse_step_range(value)
    except ValueError:
        return "must be empty or 'START:END' with step numbers START < END, e.g. '10:20'"
    return None


def _ascending(value) -> Optional[str]:
    return None if list(value) == sorted(value) else "must be in ascending order"


FIELDS: dict[str, Field] = {
    # Model.
    "arch": Field(str, rule=_arch),
    "num_classes": Int(1),
    "width": Float(0, 16, low_open=True),
    "fc_width": Int(0),
    "dropout_rate": Float(0, 1, high_open=True),
    "initializer": Choice("auto", "glorot", "normal", "he"),
    "init_std": Float(0, low_open=True),
    "dtype": Choice("float32", "bfloat16", "float16"),
    # Data.
    "dataset": NONEMPTY,
    "data_dir": Field(str, optional=True),
    "manual_dir": Field(str, optional=True),
    "train_split": NONEMPTY,
    "eval_split": NONEMPTY,
    "image_size": SIDE,
    "train_scale_min": SIDE,
    "train_scale_max": SIDE,
    "eval_scale": SIDE,
    "train_crop": Choice("scale", "inception"),
    "pca_std": Float(0),
    "mean_rgb": Field(tuple, length=3, item=Float()),
    "std_rgb": Field(tuple, length=3, item=Float(0, low_open=True)),
    "shuffle_buffer": Int(0),
    "cache": BOOL,
    "data_shards": Int(0),
    # Optimisation.
    "batch_size": Int(1),
    "learning_rate": Float(0, low_open=True),
    "lr_scaling": Choice("none", "linear"),
    "momentum": Float(0, 1, high_open=True),
    "nesterov": BOOL,
    "weight_decay": Float(0),
    "schedule": Choice("plateau", "step", "cosine", "constant"),
    "warmup_epochs": Float(0),
    "lr_decay_factor": Float(0, 1, low_open=True),
    "lr_decay_epochs": Field(tuple, item=Float(0), rule=_ascending),
    "plateau_patience": Int(1),
    "plateau_min_delta": Float(0),
    "plateau_max_reductions": Int(0),
    "num_epochs": Float(0, low_open=True),
    "num_train_steps": Int(0),
    # Recipes beyond the paper.
    "optimizer": Choice("sgd", "adamw", "lars"),
    "weight_decay_on": Choice("kernels", "all"),
    "adam_b1": Float(0, 1, high_open=True),
    "adam_b2": Float(0, 1, high_open=True),
    "lars_trust_coefficient": Float(0, low_open=True),
    "grad_clip_norm": Float(0, note="0 turns clipping off"),
    "grad_accum_steps": Int(1),
    "label_smoothing": Float(0, 1, high_open=True),
    "mixup_alpha": Float(0),
    "cutmix_alpha": Float(0),
    "mix_prob": Float(0, 1),
    "mix_switch_prob": Float(0, 1),
    "randaugment_ops": Int(0, 8),
    "randaugment_magnitude": Float(0, 10),
    "ema_decay": Float(0, 1, high_open=True),
    "init_from_ema": BOOL,
    "profile_steps": Field(str, rule=_step_range),
    # Evaluation, logging, checkpoints.
    "eval_every_epochs": Float(0, low_open=True),
    "eval_every_steps": Int(0),
    "eval_batch_size": Int(0),
    "log_every_steps": Int(1),
    "checkpoint_every_epochs": Float(0, low_open=True),
    "checkpoint_every_steps": Int(0),
    "keep_checkpoints": Int(1),
    "async_checkpoints": BOOL,
    "skip_nonfinite": BOOL,
    "init_from": STRING,
    "freeze": Field(str, rule=_regex),
    "seed": Int(0),
    # Multi-process.
    "coordinator_address": STRING,
    "num_processes": Int(0),
    "process_id": Int(-1),
}


def _relations(c: ml_collections.ConfigDict) -> list[str]:
    """Rules between fields, checked once each field alone is valid."""
    out = []
    if not c.image_size <= c.train_scale_min <= c.train_scale_max:
        out.append(f"need image_size <= train_scale_min <= train_scale_max; got "
                   f"{c.image_size}, {c.train_scale_min}, {c.train_scale_max}")
    if c.batch_size % c.grad_accum_steps:
        out.append(f"batch_size {c.batch_size} is not divisible by grad_accum_steps "
                   f"{c.grad_accum_steps}: use a multiple")
    if c.eval_scale < c.image_size:
        out.append(f"eval_scale {c.eval_scale} is smaller than the crop image_size "
                   f"{c.image_size}: eval_scale must be at least {c.image_size}")
    return out


def problems(config: ml_collections.ConfigDict) -> list[str]:
    """Every violation of the schema in ``config``, one message each (empty if none)."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    out = [f"unknown config field {name!r}: the fields are listed in configs/default.py"
           for name in values if name not in FIELDS]
    missing = [name for name in FIELDS if name not in values]
    out += [f"config field {name!r} is missing: start the config from configs/default.py"
            for name in missing]
    bad = set(missing)
    for name, field in FIELDS.items():
        if name in values:
            issue = field.problem(values[name])
            if issue:
                bad.add(name)
                out.append(f"{name}={values[name]!r}: {name} {issue}")
    related = {"image_size", "train_scale_min", "train_scale_max", "eval_scale", "batch_size",
               "grad_accum_steps"}
    if not related & bad:
        out += _relations(config)
    return out


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ``ConfigError`` listing every violation of the schema in ``config``."""
    found = problems(config)
    if found:
        raise ConfigError(found)
