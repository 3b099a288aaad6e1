"""Schedules, the reduce-on-plateau rule and the optimiser's weight decay."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from vgg_jax.training import optim


def _config(**kw):
    c = default.get_config()
    c.update(kw)
    return c


def test_plateau_divides_by_ten_at_most_three_times():
    c = _config(schedule="plateau", plateau_patience=2, plateau_min_delta=0.0)
    state = optim.plateau_init()
    scales = []
    for metric in [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]:
        state = optim.plateau_update(state, metric, c)
        scales.append(float(state["scale"]))
    np.testing.assert_allclose(scales, [1, 1, 1, .1, .1, .1, .01, .01, .001, .001, .001, .001,
                                        .001, .001], rtol=1e-6)
    assert int(state["reductions"]) == 3


def test_plateau_is_inert_for_other_schedules():
    state = optim.plateau_init()
    for _ in range(5):
        state = optim.plateau_update(state, 0.5, _config(schedule="cosine"))
    assert float(state["scale"]) == 1.0


def test_step_cosine_warmup_and_linear_scaling():
    step = optim.create_schedule(_config(schedule="step", lr_decay_epochs=(2, 4)), 10, 60)
    assert [float(step(s)) for s in (0, 19, 20, 39, 40)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001])
    cos = optim.create_schedule(_config(schedule="cosine", warmup_epochs=1.0), 10, 110)
    assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.005)
    assert float(cos(10)) == pytest.approx(0.01) and float(cos(110)) == pytest.approx(0.0)
    assert float(cos(60)) == pytest.approx(0.005, rel=1e-4)
    c = _config(lr_scaling="linear", batch_size=1024)
    assert optim.base_learning_rate(c) == pytest.approx(0.04)
    with pytest.raises(ValueError, match="Unknown schedule"):
        optim.create_schedule(_config(schedule="exp"), 10, 10)


def test_weight_decay_applies_to_kernels_only():
    c = _config(momentum=0.0, weight_decay=0.5)
    tx = optim.create_optimizer(c, optax.constant_schedule(1.0))
    params = {"conv1_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    zeros = {"conv1_1": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}}
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["conv1_1"]["kernel"], -0.5)
    np.testing.assert_allclose(updates["conv1_1"]["bias"], 0.0)
