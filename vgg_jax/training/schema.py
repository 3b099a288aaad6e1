"""The config schema: every config field, its default, its type and allowed values.

``FIELDS`` is the one list of fields: ``defaults()`` (what ``configs/default.py`` returns)
is built from it, and ``check`` holds a config to it.

``check(config)`` runs before any data is built or code compiled (by ``vgg_jax.main``,
``train_and_evaluate``, ``evaluate`` and ``sweep``) and raises ``ConfigError`` listing every
violation, one line each, naming the field, the value and what is allowed. A field that is
not in the schema is an error too. A new config field is one line in ``FIELDS``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Optional

import ml_collections

from vgg_jax import models
from vgg_jax.errors import UserError
from vgg_jax.training import optim


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
    default: Any = None
    doc: str = ""

    def but(self, **changes) -> "Field":
        """This field with ``changes`` (e.g. its default and doc)."""
        return dataclasses.replace(self, **changes)

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


def Choice(*choices, **kw) -> Field:  # noqa: N802
    return Field(type(choices[0]), choices=choices, **kw)


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
    "arch": Field(str, rule=_arch, default="vgg16"),
    "num_classes": Int(1, default=1000),
    "width": Float(0, 16, low_open=True, default=1.0),
    "fc_width": Int(0, default=0, doc='0: round(4096 * width)'),
    "dropout_rate": Float(0, 1, high_open=True, default=0.5),
    "initializer": Choice("auto", "glorot", "normal", "he", default="auto",
                          doc="auto: he with BatchNorm, else glorot"),
    "init_std": Float(0, low_open=True, default=0.01, doc="std of the paper's normal init"),
    "dtype": Choice("float32", "bfloat16", "float16", default="float32",
                    doc='computation dtype; bfloat16 keeps float32 parameters'),
    # Data.
    "dataset": NONEMPTY.but(default="imagenet2012",
                            doc='vgg_shapes | imagefolder:/path | a TFDS name'),
    "data_dir": Field(str, optional=True, default=None),
    "manual_dir": Field(str, optional=True, default=None),
    "train_split": NONEMPTY.but(default="train"),
    "eval_split": NONEMPTY.but(default="validation"),
    "image_size": SIDE.but(default=224, doc='training crop'),
    "train_scale_min": SIDE.but(default=256,
                                doc='S: fixed when min == max, else jittered per image'),
    "train_scale_max": SIDE.but(default=256),
    "eval_scale": SIDE.but(default=256, doc='Q for the single-crop validation during training'),
    "train_crop": Choice("scale", "inception", default="scale",
                         doc="scale: the paper's; inception: random-resized crop"),
    "pca_std": Float(0, default=0.1, doc="AlexNet's PCA colour shift; 0 turns it off"),
    "mean_rgb": Field(tuple, length=3, item=Float(), default=(123.68, 116.779, 103.939)),
    "std_rgb": Field(tuple, length=3, item=Float(0, low_open=True), default=(1.0, 1.0, 1.0),
                     doc='the paper only subtracts the mean'),
    "shuffle_buffer": Int(0, default=16_384, doc='0: the whole shard'),
    "cache": BOOL.but(default=False, doc='keep encoded images in memory'),
    "data_shards": Int(0, default=0,
                       doc="0: one per process; fix it to keep the data order when the "
                           "number of processes changes"),
    # Optimisation.
    "batch_size": Int(1, default=256, doc='global, over all devices and hosts'),
    "learning_rate": Float(0, low_open=True, default=0.01),
    "lr_scaling": Choice("none", "linear", default="none",
                         doc="linear: learning_rate x batch_size / 256"),
    "momentum": Float(0, 1, high_open=True, default=0.9),
    "nesterov": BOOL.but(default=False),
    "weight_decay": Float(0, default=5e-4),
    "schedule": Choice(*optim.SCHEDULES, default="plateau"),
    "warmup_epochs": Float(0, default=0.0),
    "lr_decay_factor": Float(0, 1, low_open=True, default=0.1),
    "lr_decay_epochs": Field(tuple, item=Float(0), rule=_ascending, default=(30, 60),
                             doc='for schedule=step'),
    "plateau_patience": Int(1, default=2, doc='evaluations without improvement before dividing'),
    "plateau_min_delta": Float(0, default=1e-3),
    "plateau_max_reductions": Int(0, default=3),
    "num_epochs": Float(0, low_open=True, default=74.0),
    "num_train_steps": Int(0, default=0, doc='> 0 overrides num_epochs'),
    # Recipes beyond the paper.
    "optimizer": Choice(*optim.OPTIMIZERS, default="sgd",
                        doc="sgd: momentum, nesterov, L2 decay"),
    "weight_decay_on": Choice("kernels", "all", default="kernels",
                              doc="kernels: conv and fc weights, not biases or BatchNorm"),
    "adam_b1": Float(0, 1, high_open=True, default=0.9, doc='adamw: decay of the first moment'),
    "adam_b2": Float(0, 1, high_open=True, default=0.999, doc='adamw: decay of the second moment'),
    "lars_trust_coefficient": Float(0, low_open=True, default=0.001,
                                    doc="lars: the layer-wise trust ratio's coefficient"),
    "grad_clip_norm": Float(0, note="0 turns clipping off", default=0.0,
                            doc="> 0: clip the gradients' global norm"),
    "grad_accum_steps": Int(1, default=1,
                            doc='the batch as k micro-batches (same update, 1/k the memory)'),
    "label_smoothing": Float(0, 1, high_open=True, default=0.0),
    "mixup_alpha": Float(0, default=0.0, doc='> 0: mixup with lam ~ Beta(alpha, alpha)'),
    "cutmix_alpha": Float(0, default=0.0, doc='> 0: CutMix with lam ~ Beta(alpha, alpha)'),
    "mix_prob": Float(0, 1, default=1.0, doc='probability that a batch is mixed'),
    "mix_switch_prob": Float(0, 1, default=0.5, doc='CutMix rather than mixup when both are on'),
    "randaugment_ops": Int(0, 8, default=0,
                           doc="RandAugment's N (0: off), in the training input pipeline"),
    "randaugment_magnitude": Float(0, 10, default=9.0, doc="RandAugment's M, out of 10"),
    "ema_decay": Float(0, 1, high_open=True, default=0.0,
                       doc='> 0: keep (and evaluate) a moving average of the weights'),
    "init_from_ema": BOOL.but(default=True,
                              doc="init_from takes a checkpoint's EMA weights when it has them"),
    "profile_steps": Field(str, rule=_step_range, default="",
                           doc='"START:END": trace those steps into workdir (TensorBoard)'),
    # Evaluation, logging, checkpoints.
    "eval_every_epochs": Float(0, low_open=True, default=1.0),
    "eval_every_steps": Int(0, default=0),
    "eval_batch_size": Int(0, default=0, doc='0: batch_size'),
    "log_every_steps": Int(1, default=100),
    "checkpoint_every_epochs": Float(0, low_open=True, default=1.0),
    "checkpoint_every_steps": Int(0, default=0),
    "keep_checkpoints": Int(1, default=3),
    "transfer_guard": Choice("allow", "log", "disallow", default="allow",
                             doc="jax.transfer_guard_device_to_host on the steps that neither "
                                 "log, evaluate nor save; 'disallow' makes any device-to-host "
                                 "copy there an error (GPU and TPU)"),
    "async_checkpoints": BOOL.but(default=True,
                                  doc="write while training goes on; False: a kill loses "
                                      "at most checkpoint_every_* steps"),
    "skip_nonfinite": BOOL.but(default=False,
                               doc='skip steps with NaN/inf loss or gradients instead of stopping'),
    "init_from": STRING.but(default="",
                            doc='a workdir, checkpoints folder or convert --out to start from'),
    "freeze": Field(str, rule=_regex, default="",
                    doc="regex of layers kept fixed, e.g. 'conv.*|bn.*' (the features)"),
    "seed": Int(0, default=0),
    # Multi-process.
    "coordinator_address": STRING.but(default="", doc='host:port of process 0'),
    "num_processes": Int(0, default=0),
    "process_id": Int(-1, default=-1),
}


def defaults() -> ml_collections.ConfigDict:
    """A config holding every field of ``FIELDS`` at its default: the paper's recipe."""
    c = ml_collections.ConfigDict()
    for name, field in FIELDS.items():
        if field.default is None:  # typed, so that --config.x=... can set it
            c[name] = ml_collections.FieldReference(None, field_type=field.kind)
        else:
            c[name] = field.default
    return c


def describe() -> str:
    """Every field with its default, what it accepts and what it is for, one per line."""
    return "\n".join(f"{name} = {field.default!r}: {field.allowed()}"
                     + (f" ({field.doc})" if field.doc else "") for name, field in FIELDS.items())


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
