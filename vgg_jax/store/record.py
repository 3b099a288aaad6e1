"""The model record: what a checkpoint says about the net it holds.

A ``ModelRecord`` is made from a config (``from_config``) or read from a checkpoint's JSON
``meta`` (``from_meta``), builds the Flax module (``build``), writes the ``meta``
(``to_meta``) and says whether a checkpoint fits what a config asks for (``check_fits``).
It is frozen: what a run adopts from a checkpoint (its preprocessing) is a new record
(``with_preprocessing_of``), never a change to the config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax.numpy as jnp
import ml_collections
from absl import logging

from vgg_jax import models
from vgg_jax.errors import UserError

# The fields that decide whether weights fit a net; the rest describe how it was trained.
ARCHITECTURE_FIELDS = ("arch", "width", "fc_width", "num_classes")


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """A net's architecture, its preprocessing and its classes (the checkpoint ``meta``).

    ``fc_width`` 0 means ``round(4096 * width)``; ``train_scale`` is (S_min, S_max), or
    (None, None) where unknown (converted weights); ``class_names`` may be empty.
    """

    arch: str
    num_classes: int = 1000
    width: float = 1.0
    fc_width: int = 0
    include_top: bool = True
    image_size: int = 224
    mean_rgb: tuple[float, float, float] = (123.68, 116.779, 103.939)
    std_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    eval_scale: int = 256
    train_crop: str = "scale"
    train_scale: tuple[Optional[int], Optional[int]] = (256, 256)
    class_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        try:
            object.__setattr__(self, "arch", models.canonical_name(self.arch))
        except ValueError as e:
            raise UserError(str(e)) from None
        for name in ("mean_rgb", "std_rgb", "train_scale", "class_names"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    class_names: Optional[Sequence[str]] = None) -> "ModelRecord":
        """The net a training config describes; ``class_names`` kept if one per class."""
        return cls(arch=config.arch, num_classes=config.num_classes, width=config.width,
                   fc_width=config.fc_width, image_size=config.image_size,
                   mean_rgb=tuple(config.mean_rgb), std_rgb=tuple(config.std_rgb),
                   eval_scale=config.eval_scale, train_crop=config.train_crop,
                   train_scale=(config.train_scale_min, config.train_scale_max)
                   ).with_class_names(class_names)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "ModelRecord":
        """Reads a checkpoint's ``meta`` (any written by vgg_jax; missing keys take defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known})

    def to_meta(self) -> dict:
        """The JSON ``meta`` saved with every checkpoint."""
        meta = dataclasses.asdict(self)
        for name in ("mean_rgb", "std_rgb", "train_scale"):
            meta[name] = list(meta[name])
        meta["class_names"] = list(self.class_names)
        if not self.class_names:
            del meta["class_names"]
        if not self.source:
            del meta["source"]
        return meta

    def build(self, **kwargs) -> models.VGG:
        """The Flax ``VGG`` module; ``kwargs`` are its other attributes (dropout, dtype...)."""
        return models.VGG(arch=self.arch, num_classes=self.num_classes, width=self.width,
                          fc_width=self.fc_width or None, include_top=self.include_top,
                          **kwargs)

    def with_class_names(self, names: Optional[Sequence[str]]) -> "ModelRecord":
        """This record naming its classes (kept only if there is one name per class)."""
        names = tuple(names or ())
        return dataclasses.replace(self, class_names=names if len(names) == self.num_classes
                                   else ())

    def check_fits(self, wanted: "ModelRecord", where: str) -> None:
        """Raises ``UserError`` if this (stored) net differs from ``wanted`` in architecture."""
        for key in ARCHITECTURE_FIELDS:
            have, want = getattr(self, key), getattr(wanted, key)
            if have != want:
                raise UserError(
                    f"{where} holds a {have!r} {key} but the config asks for {want!r}: use "
                    f"another workdir or change the config.")

    def with_preprocessing_of(self, other: "ModelRecord", where: str) -> "ModelRecord":
        """This record normalising inputs as ``other``'s weights expect (logged if it changes)."""
        changed = {k: getattr(other, k) for k in ("mean_rgb", "std_rgb")
                   if getattr(other, k) != getattr(self, k)}
        for key, value in changed.items():
            logging.info("Using %s %s of %s instead of the config's %s.", key, value, where,
                         getattr(self, key))
        return dataclasses.replace(self, **changed)


def module_options(config: ml_collections.ConfigDict) -> dict:
    """The ``VGG`` attributes a training config sets beyond the record (not saved with it)."""
    return dict(dropout_rate=config.dropout_rate, initializer=config.initializer,
                init_std=config.init_std, dtype=jnp.dtype(config.dtype))
