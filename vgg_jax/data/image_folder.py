"""``image_folder``: any ``root/<split>/<class>/<image>`` tree as a TFDS data set.

The files' bytes are stored unchanged (JPEG, PNG, ...) in TFDS record files, once, in the
TFDS data directory, under a config named after the folder and a hash of its path; the
training pipeline then reads them like any other TFDS data set. Class names are the
sub-folders of the first split in sorted order; every split must use the same classes.
Files that cannot be read as images are logged by name and left out.
"""

from __future__ import annotations

import hashlib
import os
import re

import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def scan(root: str) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [files]}} of an image folder; raises ``FileNotFoundError`` if empty."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder {root!r} does not exist: lay images out as "
            f"{root}/<split>/<class>/<image>.jpg (e.g. train/ and test/).")
    tree = {}
    for split in sorted(os.listdir(root)):
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        classes = {c: sorted(os.path.join(split_dir, c, f)
                             for f in os.listdir(os.path.join(split_dir, c))
                             if f.lower().endswith(IMAGE_EXTENSIONS))
                   for c in sorted(os.listdir(split_dir))
                   if os.path.isdir(os.path.join(split_dir, c))}
        if any(classes.values()):
            tree[split] = classes
    if not tree:
        raise FileNotFoundError(
            f"No images under {root!r}: expected {root}/<split>/<class>/<image>.jpg.")
    return tree


def config_name(root: str) -> str:
    """A TFDS config name unique to the absolute path of ``root``."""
    path = os.path.abspath(root)
    stem = re.sub(r"[^a-zA-Z0-9_]", "_", os.path.basename(path.rstrip("/")))[:40] or "root"
    return f"{stem}_{hashlib.sha1(path.encode()).hexdigest()[:10]}"


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """Images in ``root/<split>/<class>/`` folders, stored as their original bytes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, root: str, **kwargs):
        self._root = os.path.abspath(root)
        self._tree = scan(self._root)
        config = tfds.core.BuilderConfig(name=config_name(self._root),
                                         description=f"Images under {self._root}")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        classes = list(next(iter(self._tree.values())))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Image folder {self._root}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format=None),
                "label": tfds.features.ClassLabel(names=classes),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        names = self.info.features["label"].names
        for split, classes in self._tree.items():
            if list(classes) != names:
                raise ValueError(f"Split {split!r} of {self._root} has classes {list(classes)}, "
                                 f"but the first split has {names}.")
        return {split: self._generate_examples(classes) for split, classes in self._tree.items()}

    def _generate_examples(self, classes: dict[str, list[str]]):
        for label, (_, files) in enumerate(classes.items()):
            for path in files:
                key = os.path.relpath(path, self._root)
                try:  # an unreadable file is reported and left out, never fatal
                    with Image.open(path) as image:
                        image.verify()
                except Exception as e:  # pylint: disable=broad-except
                    logging.warning("Skipping unreadable image %s: %s", path, e)
                    continue
                with open(path, "rb") as f:
                    yield key, {"image": f.read(), "label": label, "file_name": key}
