"""Explanations: Grad-CAM finds the shapes a trained net classifies, saliency and integrated
gradients pass their standard sanity checks, every net and the CLI work."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_export import lively_net
from vgg_jax.inference import evaluate, explain
from vgg_jax import models
from vgg_jax.training import train
from vgg_jax.data import augment, shapes
from vgg_jax.errors import UserError

CROP = 64  # configs/explain.py sees the whole 64x64 images
EXAMPLES = 40  # validation images of vgg_shapes explained


@pytest.fixture(scope="module")
def shapes_net(tmp_path_factory):
    """configs/explain.py's net, trained for 4 epochs on vgg_shapes (~45 s on 2 cores)."""
    from configs import explain as explain_config
    root = tmp_path_factory.mktemp("explain")
    c = explain_config.get_config()
    c.update(dict(data_dir=str(root / "tfds"), num_epochs=4, eval_every_epochs=4,
                  checkpoint_every_epochs=4))
    train.train_and_evaluate(c, str(root / "run"))
    return evaluate.Net.load(str(root / "run"))


def validation_images():
    """The first validation images as the net sees them (rescaled to Q = 64), their boxes
    and labels."""
    images, boxes, labels = [], [], []
    for i in range(EXAMPLES):
        image, label, box = shapes.example("validation", i)
        small = augment.rescaled_image(shapes.encode_jpeg(image), CROP).numpy()
        images.append(small)
        boxes.append(np.asarray(box) * CROP / shapes.IMAGE_SIZE)
        labels.append(label)
    return np.stack(images).astype(np.float32), boxes, np.asarray(labels)


def inside_over_outside(heat: np.ndarray, box) -> float:
    """Mean of the map inside the shape's box over its mean outside."""
    yy, xx = np.mgrid[:heat.shape[0], :heat.shape[1]] + 0.5
    x0, y0, x1, y1 = box
    inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    return float(heat[inside].mean() / max(heat[~inside].mean(), 1e-12))


@pytest.mark.slow
def test_gradcam_heat_lies_on_the_shape(shapes_net):
    images, boxes, labels = validation_images()
    ex = explain.Explainer.of(shapes_net)
    accuracy = float((np.asarray(ex.predicted(images)) == labels).mean())
    assert accuracy > 0.7  # the net has learnt the shapes
    heat = np.asarray(ex.gradcam(images, labels))  # the true class of each image
    ratios = np.array([inside_over_outside(h, b) for h, b in zip(heat, boxes)])
    assert (ratios > 1).mean() >= 0.75, np.round(ratios, 2)
    assert np.median(ratios) > 1.3, np.round(ratios, 2)
    # A finer layer localises too.
    fine = np.asarray(ex.gradcam(images, labels, layer="conv4_2"))
    assert np.median([inside_over_outside(h, b) for h, b in zip(fine, boxes)]) > 1.5


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.slow
def test_saliency_depends_on_the_weights(shapes_net):
    """Adebayo et al. (2018)'s model randomisation test: re-initialised weights, other maps."""
    images, _, labels = validation_images()
    images = images[:12]
    trained = explain.Explainer.of(shapes_net)
    model = shapes_net.model
    random_vars = model.init(jax.random.key(7), jnp.zeros((1, CROP, CROP, 3)))  # BN: identity
    randomised = explain.Explainer(model, random_vars, shapes_net.record.mean_rgb,
                                   shapes_net.record.std_rgb)
    for method in ("saliency", "gradcam"):
        a = np.asarray(trained.explain(method, images, labels[:12]))
        b = np.asarray(randomised.explain(method, images, labels[:12]))
        correlations = [_rank_correlation(x, y) for x, y in zip(a, b)]
        assert np.median(correlations) < 0.5, (method, np.round(correlations, 2))
        # ... while the trained net's own maps are reproducible.
        again = np.asarray(trained.explain(method, images, labels[:12]))
        np.testing.assert_allclose(a, again, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_integrated_gradients_sum_to_the_logit_difference(shapes_net):
    images, _, labels = validation_images()
    images, labels = images[:6], labels[:6]
    ex = explain.Explainer.of(shapes_net)
    baseline = np.zeros_like(images)
    attributions = np.asarray(ex.integrated_gradients(images, labels, steps=128))
    logits = np.asarray(ex._logits(jnp.asarray(images))[0])
    base = np.asarray(ex._logits(jnp.asarray(baseline))[0])
    rise = (logits - base)[np.arange(6), labels]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), rise,
                               rtol=0.03, atol=0.03 * np.abs(rise).max())


@pytest.mark.slow
def test_smoothgrad_and_scoremap(shapes_net):
    images, boxes, labels = validation_images()
    ex = explain.Explainer.of(shapes_net)
    smooth = np.asarray(ex.smoothgrad(images[:4], labels[:4], samples=8))
    plain = np.asarray(ex.saliency(images[:4], labels[:4]))
    assert smooth.shape == plain.shape == (4, CROP, CROP) and (smooth >= 0).all()
    assert not np.allclose(smooth, plain)
    # At the crop size the score map has one position: the single-crop posterior.
    maps = np.asarray(ex.scoremap(images[:4], labels[:4]))
    record = shapes_net.record
    normalised = (images[:4] - np.float32(record.mean_rgb)) / np.float32(record.std_rgb)
    posteriors = shapes_net.posteriors(normalised)[np.arange(4), labels[:4]]
    np.testing.assert_allclose(maps, np.broadcast_to(posteriors[:, None, None], maps.shape),
                               rtol=1e-4, atol=1e-6)
    # Larger images: one position per 32 pixels, spread over the whole image.
    big = np.asarray(ex.scoremap(np.tile(images[:2], (1, 3, 2, 1))))
    assert big.shape == (2, 192, 128) and ((0 <= big) & (big <= 1)).all()
    with pytest.raises(UserError, match="at least 64x64"):
        ex.scoremap(np.zeros((1, 48, 80, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(models.SPECS))
def test_every_architecture_gets_each_map(arch):
    """Every net, with and without BatchNorm, LRN, 1x1 and large kernels; batched equals
    one image at a time."""
    record, variables = lively_net(arch)
    ex = explain.Explainer(record.build(), variables, record.mean_rgb, record.std_rgb)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    cam = np.asarray(ex.gradcam(images))
    assert cam.shape == (2, 32, 32) and (cam >= 0).all() and cam.max() > 0
    one = np.asarray(ex.gradcam(images[1:]))
    np.testing.assert_allclose(one[0], cam[1], rtol=1e-4, atol=1e-6 * cam.max())
    if arch in ("vgg11_bn", "vgg11_lrn"):
        for method in explain.METHODS:
            assert np.isfinite(np.asarray(ex.explain(method, images))).all()
    with pytest.raises(UserError, match=f"no layer 'fc6' in {arch} to explain with"):
        ex.gradcam(images, layer="fc6")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vgg_jax.explain", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def checkpoint_and_photos(tmp_path_factory):
    from vgg_jax.store import convert
    root = tmp_path_factory.mktemp("explain_cli")
    record, variables = lively_net("vgg11_bn")
    convert.write(variables, record, str(root / "net"))
    paths = []
    for i in range(2):
        image, _, _ = shapes.example("validation", i)
        Image.fromarray(np.tile(image, (1, 2, 1))).save(root / f"photo{i}.jpg")  # 64x128
        paths.append(str(root / f"photo{i}.jpg"))
    return str(root / "net"), paths


@pytest.mark.slow
def test_cli_writes_a_picture_and_the_map_per_image_and_method(checkpoint_and_photos, tmp_path):
    net, photos = checkpoint_and_photos
    res = _cli(f"--checkpoint={net}", "--method=gradcam,scoremap,saliency", "--class=2",
               f"--out={tmp_path}", *photos)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "explaining 'cross'" in res.stdout
    for i in range(2):
        for method in ("gradcam", "saliency"):  # the centre crop at Q = 36: 32x32
            assert np.load(tmp_path / f"photo{i}_{method}.npy").shape == (32, 32)
            assert Image.open(tmp_path / f"photo{i}_{method}.png").size == (32 + 4 + 32, 32)
        assert np.load(tmp_path / f"photo{i}_scoremap.npy").shape == (36, 72)  # whole image


@pytest.mark.parametrize("args, message", [
    (["--method=lime"], "unknown --method lime"),
    (["--layer=conv9_9"], "no layer 'conv9_9' in vgg11_bn"),
    (["--class=5"], "--class 5 is not a class of this net (0..4)"),
])
@pytest.mark.slow
def test_cli_bad_input(checkpoint_and_photos, tmp_path, args, message):
    net, photos = checkpoint_and_photos
    res = _cli(f"--checkpoint={net}", f"--out={tmp_path / 'out'}", *args, photos[0])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and message in errors[0], res.stderr[-1500:]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_cli_reports_an_unreadable_image_and_explains_the_rest(checkpoint_and_photos, tmp_path):
    net, photos = checkpoint_and_photos
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    res = _cli(f"--checkpoint={net}", f"--out={tmp_path / 'out'}", str(bad), photos[0])
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}: not a readable image" in errors[0], res.stderr[-1500:]
    assert os.path.exists(tmp_path / "out" / "photo0_gradcam.png")
