"""The built-in data set, image folders and the exact-resume property of the pipeline."""

import os

import numpy as np
import pytest
import tensorflow as tf

from vgg_jax.data import augment, pipeline, shapes, sources
from vgg_jax.data import image_folder as folder_lib


def test_shapes_are_deterministic_and_varied():
    a, b = shapes.render(3, seed=11), shapes.render(3, seed=11)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    others = [shapes.render(3, seed=s) for s in range(12, 20)]
    assert min(np.abs(a.astype(int) - o).mean() for o in others) > 10
    assert len(shapes.CLASSES) >= 10
    assert sum(shapes.SPLIT_SIZES.values()) == 12_000


def test_scan_layout(image_folder, tmp_path):
    tree = folder_lib.scan(image_folder)
    assert list(tree) == ["test", "train"]
    assert [len(v) for v in tree["train"].values()] == [24, 24, 24]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_lib.scan(str(tmp_path / "absent"))
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No images under"):
        folder_lib.scan(str(tmp_path / "empty"))
    assert folder_lib.config_name("/a/b/my-data") != folder_lib.config_name("/c/b/my-data")


@pytest.mark.slow
def test_resume_rebuilds_the_same_batches(image_folder, tmp_path):
    builder = sources.get_builder(f"imagefolder:{image_folder}", str(tmp_path / "tfds"))
    sources.prepare(builder)
    kw = dict(local_batch=16, crop=32, scale_min=32, scale_max=44, seed=3, num_devices=2,
              pca_std=0.1)
    spe, it = pipeline.train_batches(builder, "train", **kw)
    assert spe == 72 // 16
    straight = [next(it) for _ in range(7)]  # crosses an epoch boundary
    _, resumed = pipeline.train_batches(builder, "train", start_step=5, **kw)
    for want, got in zip(straight[5:], [next(resumed), next(resumed)]):
        np.testing.assert_array_equal(want["images"], got["images"])
        np.testing.assert_array_equal(want["labels"], got["labels"])
        np.testing.assert_array_equal(want["shift"], got["shift"])
    assert not np.array_equal(straight[0]["labels"], straight[spe]["labels"])  # reshuffled
    tf.random.set_seed(0)  # as keras.utils.set_random_seed does: must change nothing
    try:
        _, seeded = pipeline.train_batches(builder, "train", **kw)
        np.testing.assert_array_equal(next(seeded)["labels"], straight[0]["labels"])
    finally:
        tf.random.set_seed(None)
    assert straight[0]["images"].shape == (2, 8, 32, 32, 3)
    assert straight[0]["images"].dtype == np.uint8 and straight[0]["shift"].shape == (2, 8, 3)
    # A stream for the rest of a run ends with it, batch for batch the endless one; a closed
    # stream yields nothing more.
    with pipeline.train_batches(builder, "train", start_step=2, num_steps=4, **kw)[1] as part:
        rest = list(part)
    assert len(rest) == 4
    for want, got in zip(straight[2:6], rest):
        np.testing.assert_array_equal(want["images"], got["images"])
    _, closing = pipeline.train_batches(builder, "train", **kw)
    next(closing)
    closing.close()
    assert list(closing) == []
    _, left = pipeline.train_batches(builder, "train", **kw)
    next(left)
    left.abandon()  # what an error mid-run does: no waiting for the work in flight
    assert list(left) == [] and pipeline.abandoned()


def test_augment_crop_and_eval(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    data = tf.io.encode_jpeg(image).numpy()
    crops = [augment.train_image(tf.constant(data), tf.constant([0, i], tf.int64), 32, 36, 48)
             for i in range(4)]
    assert all(c.shape == (32, 32, 3) and c.dtype == tf.float32 for c in crops)
    png = tf.io.encode_png(image).numpy()
    e1 = augment.eval_image(tf.constant(png), 32, 40)
    e2 = augment.eval_image(tf.constant(png), 32, 40)
    np.testing.assert_array_equal(e1, e2)
    with pytest.raises(ValueError, match="smaller than the crop"):
        augment.eval_image(tf.constant(png), 32, 30)


def test_missing_imagenet_archives_are_named(tmp_path):
    with pytest.raises(sources.DatasetError, match="ILSVRC2012_img_train.tar"):
        sources.get_builder("imagenet2012", str(tmp_path / "tfds"), str(tmp_path / "manual"))
    assert not os.path.exists(tmp_path / "tfds" / "imagenet2012" / "5.1.0")


def test_pca_colour_shift_statistics():
    shifts = np.stack([augment.pca_shift(tf.constant([7, i], tf.int64), 0.1).numpy()
                       for i in range(2000)])
    assert np.abs(shifts.mean(0)).max() < 0.5
    eigvec = np.array(augment.IMAGENET_PCA_EIGVEC)
    projected = shifts @ eigvec  # coordinates along the principal components
    expected = 0.1 * 255 * np.array(augment.IMAGENET_PCA_EIGVAL)
    np.testing.assert_allclose(projected.std(0), expected, rtol=0.1)


@pytest.mark.slow
def test_flip_rate_and_inception_crop():
    half = np.zeros((40, 40, 3), np.uint8)
    half[:, :20] = 255  # bright left half: a flip makes the right half bright
    data = tf.constant(tf.io.encode_png(half).numpy())
    flips = [float(tf.reduce_mean(augment.train_image(data, tf.constant([1, i], tf.int64),
                                                      32, 40, 40)[:, :8]) < 128)
             for i in range(400)]
    assert 0.42 < np.mean(flips) < 0.58
    crop = augment.train_image(data, tf.constant([3, 4], tf.int64), 32, 40, 40,
                               crop_mode="inception")
    assert crop.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="Unknown crop_mode"):
        augment.train_image(data, tf.constant([3, 4], tf.int64), 32, 40, 40, crop_mode="x")


def test_fused_decode_crop_equals_rescale_then_crop():
    yy, xx = np.mgrid[:375, :500]
    smooth = np.stack([yy * 0.6, xx * 0.5, (yy + xx) * 0.3], -1) % 255  # a photo-like ramp
    data = tf.constant(tf.io.encode_jpeg(smooth.astype(np.uint8), quality=95).numpy())
    for i in range(6):
        seed = tf.constant([5, i], tf.int64)
        fused = augment.train_image(data, seed, 224, 256, 512, flip=False)
        plain = augment.reference_train_crop(data, seed, 224, 256, 512)
        assert plain.shape == fused.shape == (224, 224, 3)
        assert float(tf.reduce_mean(tf.abs(fused - plain))) < 3.0  # of 255: resize rounding


def test_scale_jitter_spans_its_bounds():
    draws = [augment.draw_scale_and_offset(tf.constant([9, i], tf.int64), 256, 512)
             for i in range(400)]
    sizes = np.array([int(d[0]) for d in draws])
    offsets = np.array([d[1].numpy() for d in draws])
    assert sizes.min() >= 256 and sizes.max() <= 512
    assert sizes.min() < 270 and sizes.max() > 500 and 365 < sizes.mean() < 405
    assert offsets.min() >= 0 and offsets.max() <= 1 and 0.45 < offsets.mean() < 0.55
    fixed = {int(augment.draw_scale_and_offset(tf.constant([1, i], tf.int64), 384, 384)[0])
             for i in range(20)}
    assert fixed == {384}


def test_process_shards_are_disjoint_and_cover(image_folder, tmp_path):
    import tensorflow_datasets as tfds
    builder = sources.get_builder(f"imagefolder:{image_folder}", str(tmp_path / "tfds"))
    sources.prepare(builder)
    names = [[ex["file_name"] for ex in tfds.as_numpy(builder.as_dataset(
        split=pipeline.process_split("train", i, 2)))] for i in range(2)]
    assert not set(names[0]) & set(names[1])
    assert len(names[0]) + len(names[1]) == 72 and abs(len(names[0]) - len(names[1])) <= 1


def test_crop_windows_stay_inside_the_image():
    for i, (h, w) in enumerate([(40, 300), (333, 41), (256, 256), (500, 375)]):
        shape = tf.constant([h, w])
        for scale in (224, 256, 384, 512):
            for offset in ([0.0, 0.0], [1.0, 1.0], [0.3, 0.9]):
                y, x, ch, cw = augment._window(shape, tf.constant(scale), 224,
                                               tf.constant(offset)).numpy()
                assert y >= 0 and x >= 0 and y + ch <= h and x + cw <= w and ch == cw > 0


def test_unreadable_files_are_reported_and_skipped(image_folder, tmp_path, caplog):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(image_folder, root)
    (root / "train" / "red_disc" / "broken.jpg").write_bytes(b"not an image at all")
    builder = sources.get_builder(f"imagefolder:{root}", str(tmp_path / "tfds"))
    sources.prepare(builder)
    assert builder.info.splits["train"].num_examples == 72
    assert "broken.jpg" in caplog.text


@pytest.mark.slow
def test_rgb_stats_command(image_folder, tmp_path):
    import glob
    import subprocess
    import sys
    pixels = np.concatenate([tf.io.decode_jpeg(open(f, "rb").read(), 3).numpy().reshape(-1, 3)
                             for f in glob.glob(f"{image_folder}/test/*/*.jpg")]).astype(float)
    res = subprocess.run([sys.executable, "-m", "vgg_jax.data.stats",
                          f"--dataset=imagefolder:{image_folder}", "--split=test",
                          f"--data_dir={tmp_path / 'tfds'}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-1500:]
    line = res.stdout.strip().splitlines()[-1]
    mean = [float(v) for v in line.split("mean_rgb='(")[1].split(")")[0].split(",")]
    std = [float(v) for v in line.split("std_rgb='(")[1].split(")")[0].split(",")]
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-3)


def test_dense_eval_keeps_the_whole_rescaled_image_and_mean_is_subtracted():
    from vgg_jax.training import steps
    image = np.full((60, 90, 3), 100, np.uint8)
    data = tf.constant(tf.io.encode_png(image).numpy())
    full = augment.rescaled_image(data, 40)
    assert full.shape == (40, 60, 3)
    batch = {"images": augment.to_uint8(full).numpy()[None],
             "shift": np.array([[1.0, 2.0, 3.0]], np.float32)}
    normal = np.asarray(steps.normalize(batch, (100.0, 90.0, 80.0), (1.0, 2.0, 4.0)))
    np.testing.assert_allclose(normal[0, 0, 0], [1.0, 6.0, 5.75], atol=1e-4)


def test_pipeline_flip_bit_applied_on_device_equals_flipping_the_crop():
    from vgg_jax.training import steps
    data = tf.io.encode_jpeg(np.random.default_rng(3).integers(0, 255, (60, 80, 3), np.uint8))
    for i in range(6):
        seed = tf.constant([5, i], tf.int64)
        flipped = augment.to_uint8(augment.train_image(data, seed, 32, 36, 48)).numpy()
        crop = augment.to_uint8(augment.train_image(data, seed, 32, 36, 48, flip=False)).numpy()
        batch = {"images": crop[None], "flip": np.array([bool(augment.flip_draw(seed))])}
        np.testing.assert_array_equal(np.asarray(steps.normalize(batch, (0, 0, 0), (1, 1, 1)))[0],
                                      flipped.astype(np.float32))
