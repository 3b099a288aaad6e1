"""Writes a tiny ILSVRC2012 in the real archive format, for TFDS's own imagenet2012 builder.

``ILSVRC2012_img_train.tar`` holds one tar per synset of ``<synset>_<n>.JPEG`` files;
``ILSVRC2012_img_val.tar`` holds ``ILSVRC2012_val_%08d.JPEG`` files whose labels TFDS reads
from its shipped validation_labels.txt (line k labels the k-th name in sorted order).
Images come in several sizes and in the awkward modes real ImageNet has: grayscale JPEG,
the CMYK JPEG and the PNG-disguised-as-JPEG that TFDS's builder converts by file name.
"""

import io
import os
import tarfile

import numpy as np
from PIL import Image

CMYK_FILE = "n01739381_1309.JPEG"  # listed in TFDS's CMYK_IMAGES
PNG_FILE = "n02105855_2933.JPEG"   # listed in TFDS's PNG_IMAGES
SYNSETS = ("n01440764", "n01443537", "n01739381", "n02105855")


def validation_labels() -> list[str]:
    import tensorflow_datasets as tfds
    path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
    return path.read_text().split()


def _encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _photo(rng: np.random.Generator, label: int, mode: str = "RGB") -> Image.Image:
    h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
    pixels = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4, label % 3] = 220
    return Image.fromarray(pixels).convert(mode)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write(manual_dir: str, per_class: int = 6, num_val: int = 10, seed: int = 0) -> dict:
    """Writes both archives into ``manual_dir``; returns {split: number of images}."""
    rng = np.random.default_rng(seed)
    os.makedirs(manual_dir, exist_ok=True)
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
        for label, synset in enumerate(SYNSETS):
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w") as inner:
                for i in range(per_class):
                    name = f"{synset}_{i + 1}.JPEG"
                    mode = "L" if i == 1 else "RGB"
                    data = _encode(_photo(rng, label, mode))
                    _add(inner, name, data)
                if synset == CMYK_FILE.split("_")[0]:
                    _add(inner, CMYK_FILE, _encode(_photo(rng, label, "CMYK")))
                if synset == PNG_FILE.split("_")[0]:
                    _add(inner, PNG_FILE, _encode(_photo(rng, label), "PNG"))
            _add(outer, f"{synset}.tar", inner_buf.getvalue())
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
        for k in range(1, num_val + 1):
            _add(val, f"ILSVRC2012_val_{k:08d}.JPEG", _encode(_photo(rng, k)))
    return {"train": per_class * len(SYNSETS) + 2, "validation": num_val}
