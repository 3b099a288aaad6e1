"""TFDS's own imagenet2012 builder on a tiny archive in the real ILSVRC2012 format."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import fake_ilsvrc
from vgg_jax.training import train
from vgg_jax.data import sources


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    manual, data_dir = str(root / "manual"), str(root / "tfds")
    sizes = fake_ilsvrc.write(manual)
    builder = sources.get_builder("imagenet2012", data_dir, manual)
    sources.prepare(builder, manual)
    return builder, manual, data_dir, sizes


def test_builds_with_real_labels_and_rgb_images(imagenet):
    builder, _, _, sizes = imagenet
    assert {s: builder.info.splits[s].num_examples for s in sizes} == sizes
    names = builder.info.features["label"].names
    val = list(tfds.as_numpy(builder.as_dataset(split="validation")))
    expected = fake_ilsvrc.validation_labels()
    for ex in val:
        k = int(ex["file_name"].decode()[-13:-5])
        assert names[ex["label"]] == expected[k - 1]
    train_ex = {ex["file_name"].decode(): ex for ex in
                tfds.as_numpy(builder.as_dataset(split="train"))}
    for name in (fake_ilsvrc.CMYK_FILE, fake_ilsvrc.PNG_FILE, "n01440764_2.JPEG"):
        assert train_ex[name]["image"].shape[-1] == 3  # CMYK, PNG and grayscale come out RGB
    assert {names[ex["label"]] for ex in train_ex.values()} == set(fake_ilsvrc.SYNSETS)


@pytest.mark.slow
def test_trains_and_evaluates_through_train_and_evaluate(imagenet, tiny_config, tmp_path):
    _, manual, data_dir, sizes = imagenet
    c = tiny_config
    c.dataset, c.data_dir, c.manual_dir = "imagenet2012", data_dir, manual
    c.eval_split, c.num_classes = "validation", 1000
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 2, 2
    metrics = train.train_and_evaluate(c, str(tmp_path / "run"))
    assert metrics["eval_count"] == sizes["validation"] and metrics["step"] == 2
    assert np.isfinite(metrics["eval_loss"])
