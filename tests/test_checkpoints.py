"""Which checkpoints are kept, and what can be read without restoring."""

import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax import checkpoints
from vgg_jax.errors import UserError


def test_keeps_last_k_and_the_best(tmp_path):
    store = checkpoints.Checkpoints(str(tmp_path), keep=2)
    state = {"params": {"fc8": {"kernel": jnp.ones((2, 3))}}, "step": jnp.int32(0)}
    top1 = {2: 0.9, 4: 0.5, 6: 0.6}
    for step in range(1, 8):
        metrics = {checkpoints.BEST_METRIC: top1[step]} if step in top1 else None
        store.save(step, dict(state, step=jnp.int32(step)), {"arch": "vgg11"}, metrics=metrics)
    store.wait()
    assert store.all_steps() == [2, 6, 7]
    assert store.param_shapes() == {"fc8": {"kernel": (2, 3)}}
    assert int(store.restore_raw(2)["step"]) == 2
    restored = store.restore(dict(state, step=jnp.int32(0)))
    assert int(restored["step"]) == 7
    np.testing.assert_array_equal(restored["params"]["fc8"]["kernel"], 1.0)
    store.close()


def test_model_mismatch_is_a_user_error():
    meta = {"arch": "vgg11", "width": 1.0, "fc_width": 0, "num_classes": 10}
    checkpoints.check_same_model(meta, dict(meta), "here")
    with pytest.raises(UserError, match="holds a 10 num_classes but the config asks for 5"):
        checkpoints.check_same_model(meta, dict(meta, num_classes=5), "here")
