"""Shared fixtures: a tiny image-folder data set made by the tests, and a tiny config."""

import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package, as `python -m vgg_jax.main` does
    sys.path.insert(0, ROOT)


def _share_compilations() -> str | None:
    """One persistent XLA compilation cache for this run's processes: pytest's workers inherit
    it, and so do the trainers, CLIs and notebooks they start. The suite compiles the same
    tiny nets again and again, and on CI's 2 cores compiling was half its time (test_train +
    test_faults: 290 s -> 145 s). Set only by the process that starts the run, removed when
    it ends; a JAX_COMPILATION_CACHE_DIR of the user's own is left alone."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path = tempfile.mkdtemp(prefix="vgg_jax_xla_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    return path


_COMPILATION_CACHE = _share_compilations()


def pytest_unconfigure(config):
    if _COMPILATION_CACHE:
        shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)


CLASSES = ("red_disc", "green_bar", "blue_cross")
SPLITS = {"train": 24, "test": 10}  # per class: 72 and 30 images


def draw(label: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A noisy image whose class is visible in both colour and shape."""
    img = rng.integers(0, 80, (size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(12, size - 12, 2)
    if label == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 64
    elif label == 1:
        mask = np.abs(yy - cy) < 3
    else:
        mask = (np.abs(yy - cy) < 3) | (np.abs(xx - cx) < 3)
    img[mask] = 0
    img[mask, label] = 230
    return img.astype(np.uint8)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    """``root/{train,test}/<class>/*.jpg`` with 3 classes, 72 training and 30 test images."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in SPLITS.items():
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(n):
                size = int(rng.integers(36, 48))
                Image.fromarray(draw(label, rng, size)).save(root / split / name / f"{i}.jpg")
    return str(root)


@pytest.fixture
def tiny_config(image_folder, tmp_path):
    """A narrow VGG-11 on the image folder, a few steps, every output inside ``tmp_path``."""
    from configs import default
    c = default.get_config()
    c.arch = "vgg11"
    c.width = 1 / 16
    c.fc_width = 32
    c.dropout_rate = 0.0
    c.num_classes = 3
    c.dataset = f"imagefolder:{image_folder}"
    c.data_dir = str(tmp_path / "tfds")
    c.eval_split = "test"
    c.image_size = 32
    c.train_scale_min = c.train_scale_max = 36
    c.eval_scale = 36
    c.std_rgb = (58.0, 57.0, 57.0)
    c.batch_size = 8
    c.eval_batch_size = 8
    c.shuffle_buffer = 0
    c.cache = True
    c.learning_rate = 0.02
    c.schedule = "constant"
    c.num_train_steps = 6
    c.log_every_steps = 1
    c.eval_every_steps = 3
    c.checkpoint_every_steps = 3
    return c
