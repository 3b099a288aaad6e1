"""From a config's ``dataset`` string to a prepared TFDS builder, with clear errors.

- ``vgg_shapes``: the built-in procedurally generated set, built on first use.
- ``imagefolder:/path/to/root``: any ``root/<split>/<class>/*.jpg`` tree.
- any other name: a TFDS data set (``imagenet2012`` reads its archives from the manual
  download directory).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import tensorflow as tf
import tensorflow_datasets as tfds

from vgg_jax.data import image_folder, shapes
from vgg_jax.errors import UserError

tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.

IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


class DatasetError(UserError):
    """A data set that is missing or malformed, with a message saying what to do."""


def _manual_dir(data_dir: Optional[str], manual_dir: Optional[str]) -> str:
    root = data_dir or tfds.core.constants.DATA_DIR
    return manual_dir or os.path.join(os.path.expanduser(root), "downloads", "manual")


def get_builder(dataset: str, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
    """The builder for ``dataset`` (not yet prepared); raises ``DatasetError`` if absent."""
    if dataset == "vgg_shapes":
        return shapes.VggShapes(data_dir=data_dir)
    if dataset.startswith("imagefolder:"):
        try:
            return image_folder.ImageFolder(dataset.split(":", 1)[1], data_dir=data_dir)
        except FileNotFoundError as e:
            raise DatasetError(str(e)) from None
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"Unknown data set {dataset!r}: use 'vgg_shapes', 'imagefolder:/path/to/root' "
            f"or a TFDS name such as 'imagenet2012'.") from None
    if builder.name == "imagenet2012" and not builder.is_prepared():
        where = _manual_dir(data_dir, manual_dir)
        missing = [f for f in IMAGENET_ARCHIVES if not os.path.exists(os.path.join(where, f))]
        if missing:
            raise DatasetError(
                f"imagenet2012 is not built and {', '.join(missing)} is missing from {where}: "
                f"download the ILSVRC2012 archives from image-net.org and place them there "
                f"(or set --config.manual_dir).")
    return builder


def known_splits(builder: tfds.core.DatasetBuilder) -> Optional[list[str]]:
    """The builder's split names if known without building it, else None."""
    if isinstance(builder, image_folder.ImageFolder):
        return list(builder._tree)  # pylint: disable=protected-access
    if isinstance(builder, shapes.VggShapes):
        return list(shapes.SPLIT_SIZES)
    if builder.is_prepared():
        return list(builder.info.splits)
    return None


def check_splits(builder: tfds.core.DatasetBuilder, splits: Sequence[str]) -> None:
    """Raises ``DatasetError`` if any split (``train``, ``train[:90%]``) is not in the data set."""
    available = known_splits(builder)
    if available is None:
        return
    for split in splits:
        base = split.split("[")[0]
        if base not in available:
            raise DatasetError(f"Split {base!r} is not in {builder.name}; it has "
                               f"{', '.join(available)} (set --config.train_split / eval_split).")


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: Optional[str] = None) -> None:
    """Builds the data set into its data directory if it is not there yet.

    With several processes, process 0 builds first and the others wait for it, so a data
    directory every host shares is built once (a host-local one is built by each host).
    """
    def build():
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))

    if jax.process_count() == 1:
        return build()
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
        build()
    multihost_utils.sync_global_devices(f"prepare {builder.name}")
    if jax.process_index() > 0:
        if builder.is_prepared():  # built by process 0 after this builder was made
            builder.info.read_from_directory(builder.data_dir)
        build()
