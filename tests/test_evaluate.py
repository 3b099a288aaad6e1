"""The paper's evaluation protocols: dense, multi-crop, flips, padding, ensembles, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from vgg_jax.inference import evaluate
from vgg_jax import models
from vgg_jax.training import train
from vgg_jax.errors import UserError
from vgg_jax.store.record import ModelRecord

RECORD = ModelRecord(arch="vgg11_bn", num_classes=5, width=1 / 16, fc_width=16, image_size=32,
                     mean_rgb=(0, 0, 0), std_rgb=(1, 1, 1), eval_scale=32, train_scale=(32, 32))


def _net(image_size=32, arch="vgg11_bn", seed=0):
    model = models.create_model(arch, num_classes=5, width=1 / 16, fc_width=16)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3)))
    # Non-trivial running statistics, so that eval-mode BatchNorm is not the identity.
    stats = jax.tree_util.tree_map(lambda v: v + 0.3, variables["batch_stats"])
    return evaluate.Net(model, {"params": variables["params"], "batch_stats": stats},
                        dataclasses.replace(RECORD, arch=arch, image_size=image_size))


@pytest.mark.slow
def test_dense_equals_single_crop_at_the_crop_size():
    net = _net(image_size=224)  # Q = 224 on 224x224 images: fc6 is a 7x7 convolution
    images = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    masks = np.ones((2, 224, 224, 1), np.float32)
    np.testing.assert_allclose(net.dense_posteriors(images, masks), net.posteriors(images),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_padding_does_not_change_dense_scores():
    net = _net(image_size=64)  # fc6 is a 2x2 window: padding must stay out of it exactly
    rng = np.random.default_rng(1)
    for h, w in ((64, 64), (72, 100), (99, 70)):
        image = rng.normal(size=(h, w, 3)).astype(np.float32)
        plain = net.dense_posteriors(image[None], np.ones((1, h, w, 1), np.float32))
        padded, mask = evaluate._pad(image, 64)  # pylint: disable=protected-access
        assert padded.shape[0] % 64 == 0 and padded.shape[0] >= h
        np.testing.assert_allclose(net.dense_posteriors(padded[None], mask[None]), plain,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_flip_averaging_changes_nothing_on_a_symmetric_image():
    net = _net()
    half = np.random.default_rng(2).normal(size=(40, 24, 3)).astype(np.float32)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)  # 40x48, mirror-symmetric
    ev = evaluate.Evaluator([net], ["dense"], [40], 32, [0, 0, 0], [1, 1, 1], num_images=1)
    ev.add(0, {40: symmetric})
    padded, mask = evaluate._pad(symmetric, 64)  # pylint: disable=protected-access
    np.testing.assert_allclose(ev.results()["dense"][0],
                               net.dense_posteriors(padded[None], mask[None])[0], rtol=1e-5)


def test_ensemble_of_identical_nets_equals_one_and_scales_average():
    net = _net()
    images = {q: np.random.default_rng(q).uniform(0, 255, (q, q + 12, 3)) for q in (32, 48)}
    out = {}
    for nets in ([net], [net, net]):
        ev = evaluate.Evaluator(nets, list(evaluate.PROTOCOLS), [32, 48], 32, [100] * 3,
                                [50] * 3, num_images=1, batch_size=8)
        ev.add(0, images)
        out[len(nets)] = ev.results()
    for protocol in evaluate.PROTOCOLS:
        np.testing.assert_allclose(out[2][protocol], out[1][protocol], rtol=1e-6)
        assert out[1][protocol].sum() == pytest.approx(1.0, rel=1e-5)


def test_multicrop_positions():
    positions = evaluate.multicrop_positions(256, 341, 224)
    assert len(positions) == 25 and len(set(positions)) == 25
    corners = {(0, 0), (0, 117), (32, 0), (32, 117)}
    assert corners <= set(positions)
    assert (16, 58) in positions or (16, 59) in positions  # the centre
    assert all(0 <= y <= 32 and 0 <= x <= 117 for y, x in positions)
    with pytest.raises(UserError, match="smaller than the 224 crop"):
        evaluate.multicrop_positions(200, 300, 224)


def test_topk_errors_with_ties():
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.1, 0.0, 0.0],   # label 0: right
                      [0.3, 0.3, 0.1, 0.1, 0.1, 0.1, 0.0],   # label 1, tied with class 0: 2nd
                      [0.1, 0.2, 0.2, 0.2, 0.2, 0.1, 0.0],   # label 5: 4 above + tied class 0
                      [0.1, 0.2, 0.2, 0.2, 0.2, 0.1, 0.0]])  # label 0: 4 above, tie is after
    err1, err5 = evaluate.topk_errors(probs, np.array([0, 1, 5, 0]))
    assert (err1, err5) == (0.75, 0.25)
    assert int(np.argmax(probs[1])) == 0  # the convention argmax follows


def test_bad_protocols_and_scales():
    net = _net()
    with pytest.raises(UserError, match="Test scales \\[24\\] are smaller than the crop 32"):
        evaluate.Evaluator([net], ["dense"], [24, 48], 32, [0] * 3, [1] * 3, num_images=1)
    with pytest.raises(UserError, match="Unknown protocols \\['tencrop'\\]"):
        evaluate.Evaluator([net], ["tencrop"], [32], 32, [0] * 3, [1] * 3, num_images=1)


@pytest.fixture(scope="module")
def trained(image_folder, tmp_path_factory):
    """A few steps of a tiny BN net on the image folder, as a checkpoint."""
    from configs import default
    root = tmp_path_factory.mktemp("eval")
    c = default.get_config()
    c.update(dict(arch="vgg11_bn", width=1 / 16, fc_width=32, num_classes=3, dropout_rate=0.0,
                  dataset=f"imagefolder:{image_folder}", data_dir=str(root / "tfds"),
                  eval_split="test", image_size=32, train_scale_min=36, train_scale_max=36,
                  eval_scale=36, mean_rgb=(60.0,) * 3, std_rgb=(60.0,) * 3, batch_size=8,
                  num_train_steps=20, eval_every_steps=20, checkpoint_every_steps=20,
                  learning_rate=0.02, schedule="constant", shuffle_buffer=0))
    train.train_and_evaluate(c, str(root / "run"))
    return c, str(root / "run")


@pytest.mark.slow
def test_ensemble_of_two_identical_checkpoints_and_single_crop_matches_training(trained):
    config, workdir = trained
    one = evaluate.evaluate(config, [workdir], protocols=["single", "dense"])
    two = evaluate.evaluate(config, [workdir, workdir], protocols=["single", "dense"])
    for a, b in zip(one, two):
        assert a["top1_error"] == pytest.approx(b["top1_error"])
        assert a["images"] == 30 and b["nets"] == 2
    final = json.load(open(os.path.join(workdir, "config.json")))
    assert final["eval_scale"] == 36  # single-crop at Q=36 is what training evaluated


@pytest.mark.slow
def test_cli_end_to_end_table(trained, tmp_path):
    config, workdir = trained
    out = tmp_path / "results"
    res = subprocess.run(
        [sys.executable, "-m", "vgg_jax.evaluate", f"--checkpoint={workdir}",
         "--config=configs/quickstart.py", f"--config.dataset={config.dataset}",
         f"--config.data_dir={config.data_dir}", "--config.eval_split=test",
         "--config.arch=vgg11_bn", "--config.width=0.0625", "--config.fc_width=32",
         "--config.num_classes=3", "--scales=36,44", f"--out={out}", "--batch_size=16"],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.load(open(out / "results.json"))
    assert [r["protocol"] for r in rows] == list(evaluate.PROTOCOLS)
    assert all(r["images"] == 30 and r["test_scales"] == "36,44" and r["train_scale"] == "36"
               for r in rows)
    assert all(0 <= r["top5_error"] <= r["top1_error"] <= 100 for r in rows)
    assert "| dense+multicrop | 1 | 36 | 36,44 |" in res.stdout
    assert (out / "results.csv").read_text().startswith("protocol,nets,train_scale")


@pytest.mark.slow
def test_cli_bad_input(trained, tmp_path):
    config, workdir = trained
    common = [sys.executable, "-m", "vgg_jax.evaluate", f"--checkpoint={workdir}",
              "--config=configs/quickstart.py", f"--config.dataset={config.dataset}",
              f"--config.data_dir={config.data_dir}", "--config.eval_split=test",
              "--config.width=0.0625", "--config.fc_width=32", "--config.num_classes=3"]
    res = subprocess.run(common + ["--config.arch=vgg13"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 2 and "holds a 'vgg11_bn' arch but the config asks for 'vgg13'" \
        in res.stderr.strip().splitlines()[-1]
    res = subprocess.run(common + ["--config.arch=vgg11_bn", "--scales=16"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "smaller than the crop 32" in res.stderr
    res = subprocess.run(common + ["--config.arch=vgg11_bn", "--split=train[:0]"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "is empty" in res.stderr.strip().splitlines()[-1]


_DEVICES_SCRIPT = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
sys.path.insert(0, {tests!r})
import numpy as np
import test_evaluate
from vgg_jax.inference import evaluate
net = test_evaluate._net()
images = {{q: np.random.default_rng(q).uniform(0, 255, (q, q + 20, 3)) for q in (32, 40)}}
ev = evaluate.Evaluator([net], list(evaluate.PROTOCOLS), [32, 40], 32, [100] * 3, [50] * 3,
                        num_images=2, batch_size=16)
ev.add(0, images)
ev.add(1, {{q: im[:, ::-1] for q, im in images.items()}})
np.savez(sys.argv[2], **ev.results())
"""


@pytest.mark.slow
def test_evaluation_uses_all_local_devices_with_the_same_result(tmp_path):
    script = _DEVICES_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    for devices in (1, 8):
        res = subprocess.run([sys.executable, "-c", script, str(devices),
                              str(tmp_path / f"{devices}.npz")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
    one, eight = np.load(tmp_path / "1.npz"), np.load(tmp_path / "8.npz")
    for protocol in evaluate.PROTOCOLS:
        np.testing.assert_allclose(eight[protocol], one[protocol], rtol=1e-5, atol=1e-7)
