"""Training recipes beyond the paper: label smoothing, mixup/CutMix, RandAugment, EMA,
gradient accumulation, clipping, AdamW/LARS, profiling; each against what it promises."""

import glob
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from configs import default
from vgg_jax.store import checkpoints, transfer
from vgg_jax.inference import evaluate
from vgg_jax.training import mixing, optim, steps, train
from vgg_jax import models
from vgg_jax.training.metrics import soft_cross_entropy
from vgg_jax.store.record import ModelRecord
from vgg_jax.data import augment, pipeline, randaugment, sources

from test_train import assert_trees, scalars


def _config(**kw):
    c = default.get_config()
    c.update(kw)
    return c


# Label smoothing, mixup, CutMix.

def test_label_smoothing_loss_is_the_hand_computed_value():
    logits = jnp.array([[2.0, 1.0, 0.0]])
    targets = mixing.smooth(jnp.array([0]), 3, 0.1)
    np.testing.assert_allclose(targets, [[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]], rtol=1e-6)
    log_z = math.log(math.exp(2) + math.exp(1) + 1)
    want = -((0.9 + 0.1 / 3) * (2 - log_z) + 0.1 / 3 * (1 - log_z) + 0.1 / 3 * (0 - log_z))
    got = float(soft_cross_entropy(logits, targets)[0])
    assert got == pytest.approx(want, rel=1e-6) and want == pytest.approx(0.5076, abs=1e-4)


def _batch(n=8, side=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(n, side, side, 3)), jnp.float32)
    labels = jnp.asarray(rng.permutation(classes)[:n])
    return images, labels


@pytest.mark.slow
def test_mixup_mixes_two_images_and_their_labels_in_the_drawn_proportion():
    images, labels = _batch()
    spec = mixing.Mixing(mixup_alpha=0.4, label_smoothing=0.1)
    lams = []
    for seed in range(6):
        out, targets, dominant = mixing.mix(jax.random.key(seed), images, labels, 10, spec)
        smooth = mixing.smooth(labels, 10, 0.1)
        # The proportion is read off the targets, and the images agree with it.
        lam = float((targets[0, labels[0]] - smooth[::-1][0, labels[0]])
                    / (smooth[0, labels[0]] - smooth[::-1][0, labels[0]]))
        np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], atol=1e-5)
        np.testing.assert_allclose(targets, lam * smooth + (1 - lam) * smooth[::-1], atol=1e-6)
        np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
        assert (np.asarray(dominant) == np.asarray(labels if lam >= 0.5 else labels[::-1])).all()
        lams.append(lam)
    assert len(set(np.round(lams, 6))) == 6 and all(0 <= lam <= 1 for lam in lams)


def test_cutmix_box_has_the_drawn_area_and_targets_follow_it():
    for seed, lam in enumerate([0.1, 0.36, 0.5, 0.75, 0.9]):
        box = np.asarray(mixing.cutmix_box(jax.random.key(seed), jnp.float32(lam), 40, 40))
        rows, cols = np.nonzero(box.any(1))[0], np.nonzero(box.any(0))[0]
        assert box.sum() == len(rows) * len(cols)  # one rectangle
        side = round(40 * math.sqrt(1 - lam))
        clipped = rows[0] == 0 or rows[-1] == 39 or cols[0] == 0 or cols[-1] == 39
        if not clipped:
            assert (len(rows), len(cols)) == (side, side)
        assert len(rows) <= side and len(cols) <= side
    images, labels = _batch(side=32)
    spec = mixing.Mixing(cutmix_alpha=1.0)
    seen_box = 0
    for seed in range(8):
        out, targets, _ = mixing.mix(jax.random.key(seed), images, labels, 10, spec)
        pasted = np.asarray(jnp.any(out != images, axis=(0, 3)))
        area = pasted.mean()
        np.testing.assert_allclose(out, np.where(pasted[None, :, :, None], images[::-1], images))
        lam = 1 - area
        np.testing.assert_allclose(targets, lam * jax.nn.one_hot(labels, 10)
                                   + (1 - lam) * jax.nn.one_hot(labels[::-1], 10), atol=1e-6)
        seen_box += area > 0
    assert seen_box >= 6


def test_mix_prob_and_switch():
    images, labels = _batch()
    never = mixing.Mixing(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.0)
    out, targets, _ = mixing.mix(jax.random.key(0), images, labels, 10, never)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(targets, jax.nn.one_hot(labels, 10))
    kinds = set()
    both = mixing.Mixing(mixup_alpha=1.0, cutmix_alpha=1.0, mix_switch_prob=0.5)
    for seed in range(12):
        lam, box = mixing.mix_draws(jax.random.key(seed), both, 16, 16)
        kinds.add("cutmix" if box.any() else "mixup")
    assert kinds == {"cutmix", "mixup"}


# RandAugment.

def test_randaugment_ops_agree_with_pil():
    rng = np.random.default_rng(0)
    image = rng.integers(20, 200, (24, 24, 3)).astype(np.uint8)
    pil = Image.fromarray(image)
    expected = {
        "AutoContrast": ImageOps.autocontrast(pil), "Equalize": ImageOps.equalize(pil),
        "Invert": ImageOps.invert(pil),
        "Posterize": ImageOps.posterize(pil, 5),            # M = 9 keeps 8 - 3 bits
        "Solarize": ImageOps.solarize(pil, 256 * (1 - 0.9)),
    }
    for name, want in expected.items():
        got = randaugment.apply_op(name, image, 9).numpy()
        np.testing.assert_allclose(got, np.asarray(want, np.float32), atol=1.01, err_msg=name)


def test_every_randaugment_op_keeps_shape_and_range_and_changes_the_image():
    image = tf.constant(np.random.default_rng(1).uniform(0, 255, (20, 28, 3)), tf.float32)
    for name in randaugment.OPS:
        out = randaugment.apply_op(name, image, 9, -1.0).numpy()
        assert out.shape == (20, 28, 3) and out.min() >= 0 and out.max() <= 255, name
        assert np.abs(out - image.numpy()).mean() > 0.01, name


def test_randaugment_is_deterministic_per_example_and_differs_across_examples():
    image = tf.constant(np.random.default_rng(2).uniform(0, 255, (32, 32, 3)), tf.float32)
    outs = [augment.randaugment(image, tf.constant([7, i], tf.int64), 2, 9).numpy()
            for i in range(10)]
    again = augment.randaugment(image, tf.constant([7, 3], tf.int64), 2, 9).numpy()
    np.testing.assert_array_equal(outs[3], again)
    distinct = {o.tobytes() for o in outs}
    assert len(distinct) >= 7


@pytest.mark.slow
def test_pipeline_with_randaugment_repeats_and_resumes(tiny_config):
    builder = sources.get_builder(tiny_config.dataset, tiny_config.data_dir)
    sources.prepare(builder, None)
    kw = dict(local_batch=8, crop=32, scale_min=36, scale_max=36, seed=0, num_steps=4,
              num_devices=1)
    for mode in ("scale", "inception"):
        def images(start=0, randaug=(2, 9.0)):
            _, it = pipeline.train_batches(builder, "train", randaugment=randaug,
                                           crop_mode=mode, start_step=start, **kw)
            with it:
                return [b["images"] for b in it]
        first, second = images(), images()
        assert all((a == b).all() for a, b in zip(first, second))
        assert all((a == b).all() for a, b in zip(first[2:], images(start=2)))
        plain = images(randaug=(0, 9.0))
        assert not all((a == b).all() for a, b in zip(first, plain))


# EMA, accumulation, clipping, optimisers: the train step on a tiny net.

def _net(arch="vgg11", **kw):
    return models.VGG(arch=arch, num_classes=10, width=1 / 16, fc_width=16, dropout_rate=0.0,
                      bn_axis_name=steps.AXIS, **kw)


def _step_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 255, (1, n, 32, 32, 3)).astype(np.uint8),
            "labels": rng.integers(0, 10, (1, n))}


def _run_steps(model, config, batches, options=steps.StepOptions()):
    schedule = optim.create_schedule(config, 10, 100)
    tx = optim.create_optimizer(config, schedule)
    state, rng = steps.initial_state(model, tx, 32, 0, ema=options.ema_decay > 0)
    p_train, _ = steps.pmap_steps(model, tx, schedule, (120.0,) * 3, (60.0,) * 3, options)
    states, losses = [jax.device_get(state)], []
    for batch in batches:
        state, metrics = p_train(state, batch, rng)
        states.append(jax.device_get(state))
        losses.append(float(metrics["loss"]))
    return states, losses


@pytest.mark.slow
def test_ema_after_n_steps_is_the_closed_form():
    d, n = 0.8, 5
    states, _ = _run_steps(_net(), _config(schedule="constant", learning_rate=0.05),
                           [_step_batch(seed=i) for i in range(n)],
                           steps.StepOptions(ema_decay=d))
    params = [s.params for s in states]  # p_0 ... p_n
    closed = jax.tree_util.tree_map(
        lambda *p: d ** n * p[0] + sum((1 - d) * d ** (n - i) * p[i] for i in range(1, n + 1)),
        *params)
    assert_trees(states[-1].ema["params"], closed, rtol=1e-5, atol=1e-7)
    assert not np.allclose(states[-1].ema["params"]["fc8"]["kernel"],
                           states[-1].params["fc8"]["kernel"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scan", "unroll"])
def test_gradient_accumulation_equals_the_big_batch(how):
    config = _config(schedule="constant", learning_rate=0.05)
    batches = [_step_batch(16, seed=i) for i in range(3)]
    big, big_losses = _run_steps(_net(), config, batches)
    acc, acc_losses = _run_steps(_net(), config, batches, steps.StepOptions(grad_accum_steps=4,
                                                                           accumulation=how))
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)
    assert_trees(acc[-1].params, big[-1].params, rtol=2e-4, atol=1e-6)
    # With BatchNorm each micro-batch normalises itself: it trains, but is not the big batch.
    bn, _ = _run_steps(_net("vgg11_bn"), config, batches[:1], steps.StepOptions(grad_accum_steps=4))
    assert np.isfinite(bn[-1].batch_stats["bn1_1"]["mean"]).all()


@pytest.mark.slow
def test_clipping_bounds_the_update():
    config = _config(schedule="constant", learning_rate=1.0, momentum=0.0, weight_decay=0.0,
                     grad_clip_norm=1e-3)
    states, _ = _run_steps(_net(), config, [_step_batch()])
    change = optax.global_norm(jax.tree_util.tree_map(jnp.subtract, states[1].params,
                                                      states[0].params))
    assert float(change) == pytest.approx(1e-3, rel=1e-3)
    config.grad_clip_norm = 0.0
    states, _ = _run_steps(_net(), config, [_step_batch()])
    change = optax.global_norm(jax.tree_util.tree_map(jnp.subtract, states[1].params,
                                                      states[0].params))
    assert float(change) > 0.01  # the gradient's own norm: clipping did bound it


@pytest.mark.slow
@pytest.mark.parametrize("name,lr", [("sgd", 0.2), ("adamw", 1e-3), ("lars", 1.0)])
def test_each_optimizer_decreases_the_loss(name, lr):
    config = _config(optimizer=name, learning_rate=lr, schedule="constant", weight_decay=1e-4)
    batch = _step_batch(16)
    _, losses = _run_steps(_net(), config, [batch] * 12)
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < min(losses[:3]), losses


def test_decay_on_all_parameters_or_kernels():
    params = {"conv1_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "bn1_1": {"scale": jnp.ones(2)}}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for which, want in [("kernels", {"kernel": -0.5, "bias": 0.0, "scale": 0.0}),
                        ("all", {"kernel": -0.5, "bias": -0.5, "scale": -0.5})]:
        tx = optim.create_optimizer(_config(momentum=0.0, weight_decay=0.5,
                                            weight_decay_on=which), optax.constant_schedule(1.0))
        updates, _ = tx.update(zeros, tx.init(params), params)
        got = {k: float(v.ravel()[0]) for layer in updates.values() for k, v in layer.items()}
        assert got == pytest.approx(want), which
    adamw = optim.create_optimizer(_config(optimizer="adamw", weight_decay=0.5),
                                   optax.constant_schedule(0.1))
    updates, _ = adamw.update(zeros, adamw.init(params), params)
    # Decoupled: lr * wd * w on kernels alone, with zero gradients.
    assert float(updates["conv1_1"]["kernel"][0, 0]) == pytest.approx(-0.05)
    assert float(updates["conv1_1"]["bias"][0]) == 0.0


# End to end: every recipe on, EMA evaluated and used, the profile written.

@pytest.mark.slow
def test_all_recipes_train_evaluate_ema_and_profile(tiny_config, tmp_path):
    c = tiny_config
    c.update(dict(ema_decay=0.9, mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1,
                  randaugment_ops=2, grad_accum_steps=2, grad_clip_norm=5.0,
                  profile_steps="2:4"))
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(c, workdir)
    assert {"eval_top1", "eval_ema_top1", "eval_ema_loss", "eval_ema_top5"} <= set(metrics)
    assert scalars(workdir, "eval_ema_top1")
    assert glob.glob(os.path.join(workdir, "plugins", "profile", "*", "*.xplane.pb"))
    raw = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"),
                                  read_only=True).restore_raw()
    ema_net, plain_net = evaluate.Net.load(workdir), evaluate.Net.load(workdir, ema=False)
    assert_trees(ema_net.variables["params"], raw["ema"]["params"])
    assert_trees(plain_net.variables["params"], raw["params"])
    # Fine-tuning from the run starts from its EMA weights unless told otherwise.
    wanted = ModelRecord.from_config(c)
    abstract = models.abstract_variables(wanted.build(), c.image_size)["params"]
    fresh = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    for ema, want in ((True, raw["ema"]["params"]), (False, raw["params"])):
        load, _ = transfer.init_from_params(workdir, wanted, abstract, ema)
        assert_trees(load(fresh)[0], want)
