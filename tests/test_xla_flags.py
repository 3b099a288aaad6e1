"""The fast XLA:CPU configuration vgg_jax sets on import computes what plain XLA computes."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import os, sys
import vgg_jax
import jax, jax.numpy as jnp, numpy as np
from vgg_jax.training import metrics
from vgg_jax import models
model = models.create_model("vgg11_bn", num_classes=10, width=0.25, fc_width=64)
x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
y = jnp.arange(4) % 10
variables = model.init(jax.random.key(0), x)

def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                            train=True, rngs={"dropout": jax.random.key(2)},
                            mutable=["batch_stats"])
    return metrics.cross_entropy(logits, y).mean()

value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
leaves = {jax.tree_util.keystr(k): np.asarray(g)
          for k, g in jax.tree_util.tree_leaves_with_path(grads)}
np.savez(sys.argv[1], loss=np.asarray(value), flags=os.environ.get("XLA_FLAGS", ""), **leaves)
"""


def _run(out: str, plain: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "VGG_JAX_PLAIN_XLA")}
    if plain:
        env["VGG_JAX_PLAIN_XLA"] = "1"
    subprocess.run([sys.executable, "-c", SCRIPT, out], env=env, check=True,
                   capture_output=True)
    return dict(np.load(out))


@pytest.mark.slow
def test_fast_cpu_path_gives_the_same_loss_and_gradients(tmp_path):
    fast = _run(str(tmp_path / "fast.npz"), plain=False)
    plain = _run(str(tmp_path / "plain.npz"), plain=True)
    assert "xla_cpu_experimental_ynn_fusion_type" in str(fast.pop("flags"))
    assert "xla_cpu_experimental_ynn_fusion_type" not in str(plain.pop("flags"))
    assert fast.keys() == plain.keys() and len(fast) > 20
    np.testing.assert_allclose(fast["loss"], plain["loss"], rtol=1e-5)
    keys = sorted(k for k in fast if k != "loss")
    a = np.concatenate([fast[k].ravel() for k in keys])
    b = np.concatenate([plain[k].ravel() for k in keys])
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4
    for key in keys:  # conv biases before BatchNorm have (near-)zero gradients: absolute there
        np.testing.assert_allclose(fast[key], plain[key], rtol=1e-3,
                                   atol=1e-4 * np.abs(b).max(), err_msg=key)


FAULTS = """
import resource
import vgg_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: (x @ w).sum())  # a 64 MiB product in XLA's temporaries
x, w = jnp.ones((1024, 1024)), jnp.ones((1024, 16384))
f(x, w).block_until_ready()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x, w).block_until_ready()
print(vgg_jax.MALLOC_TUNED, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
@pytest.mark.slow
def test_malloc_reuse_keeps_repeated_steps_from_page_faulting_their_memory():
    def faults(**env) -> tuple[str, int]:
        base = {k: v for k, v in os.environ.items() if k != "VGG_JAX_MALLOC"}
        res = subprocess.run([sys.executable, "-c", FAULTS], env={**base, **env},
                             capture_output=True, text=True, check=True)
        tuned, count = res.stdout.split()
        return tuned, int(count)
    tuned, count = faults(VGG_JAX_MALLOC="reuse")
    assert tuned == "True" and count < 1000, count  # 4 KiB pages
    tuned, count = faults()  # glibc's defaults: a fresh mmap a call
    assert tuned == "False" and count > 0.9 * 3 * 16384, count
