"""The model zoo against Table 1 and Table 2 of the paper, and its dense/feature/BN behaviour."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax import models
from vgg_jax.compute import modules as compute
from vgg_jax.store import transfer

PARAMS = {  # Table 2 exact counts, 1000 classes at 224x224 (../shared/reference/vgg_facts.md)
    "vgg11": 132_863_336, "vgg11_lrn": 132_863_336, "vgg13": 133_047_848,
    "vgg16_conv1": 133_638_952, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}
MACS = {"A": 7_609_090_048, "B": 11_308_466_176, "C": 11_770_888_192, "D": 15_470_264_320,
        "E": 19_632_062_464}
# The large-kernel twins of B and D (issue text; B-5x5 and D-7x7 by hand: each stack of
# 3x3 convolutions one k x k, k = 5 for a pair, 7 for three), the ReLU control (a 1x1
# convolution + ReLU after each 5x5: + sum of c^2 + c weights and c^2 * side^2 MACs) and
# their BatchNorm variants (+ 2 c per convolution).
TWINS = {  # name: (parameters, MACs, convolutions with a ReLU)
    "vgg13_5x5": (134_503_528, 9_356_017_664, 5),
    "vgg13_5x5_bn": (134_506_472, 9_356_017_664, 5),
    "vgg13_5x5_relu": (135_115_304, 10_229_481_472, 10),
    "vgg13_5x5_relu_bn": (135_121_192, 10_229_481_472, 10),
    "vgg16_7x7": (144_727_144, 15_521_644_544, 5),
    "vgg16_7x7_bn": (144_730_088, 15_521_644_544, 5),
}


@pytest.mark.parametrize("arch", list(PARAMS))
def test_parameter_counts_match_table_2(arch):
    variables = models.abstract_variables(models.create_model(arch), 224)
    assert models.count_params(variables["params"]) == PARAMS[arch]


@pytest.mark.parametrize("letter", list(MACS))
def test_summary_macs(letter):
    rows = models.summary(models.create_model(letter), 224)
    assert sum(r["macs"] for r in rows) == MACS[letter]
    assert sum(r["params"] for r in rows) == PARAMS[models.canonical_name(letter)]


def test_summary_cli_prints_totals():
    out = subprocess.run([sys.executable, "-m", "vgg_jax.models", "--arch", "E"],
                         capture_output=True, text=True, check=True).stdout
    assert "conv5_4" in out and "143,667,240" in out and "19,632,062,464" in out


def test_letters_and_names():
    assert models.canonical_name("D") == "vgg16"
    assert models.canonical_name("a-lrn") == "vgg11_lrn"
    assert models.layer_names("C")[-1] == "conv5_3"
    assert len(models.layer_names("E")) == 16


def test_input_size_follows_and_num_classes():
    model = models.create_model("vgg13", num_classes=10, width=0.125)
    params = models.abstract_variables(model, 64)["params"]
    assert params["fc6"]["kernel"].shape == (2 * 2 * 64, 512)
    assert params["fc8"]["kernel"].shape == (512, 10)


def _tiny(arch="vgg11", **kw):
    kw = dict(dict(width=1 / 16, fc_width=64, num_classes=7), **kw)
    return models.create_model(arch, **kw)


@pytest.mark.slow
def test_dense_equals_classifier_and_map_sizes():
    model = _tiny()
    x = jax.random.uniform(jax.random.key(1), (2, 224, 224, 3))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x)
    dense = model.apply(variables, x, dense=True)
    np.testing.assert_allclose(dense, logits, rtol=1e-5, atol=1e-5)
    for size, side in ((256, 2), (384, 6)):
        y = jnp.ones((1, size, size, 3))
        score_map = model.apply(variables, y, dense=True, return_map=True)
        assert score_map.shape == (1, side, side, 7)
        np.testing.assert_allclose(model.apply(variables, y, dense=True),
                                   score_map.mean(axis=(1, 2)), rtol=1e-6)


def test_lrn_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 9)).astype(np.float32) * 30
    n, k, alpha, beta = 5, 2.0, 1e-4, 0.75
    expected = np.empty_like(x)
    for c in range(x.shape[-1]):
        lo, hi = max(0, c - n // 2), min(x.shape[-1], c + n // 2 + 1)
        s = (x[..., lo:hi] ** 2).sum(-1)
        expected[..., c] = x[..., c] / (k + alpha / n * s) ** beta
    np.testing.assert_allclose(models.local_response_norm(jnp.asarray(x)), expected, rtol=1e-6)


def test_lrn_sits_after_conv1_1():
    model = _tiny("vgg11_lrn")
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    feats = models.extract_features(model, variables, x)
    np.testing.assert_allclose(feats["lrn1"], models.local_response_norm(feats["conv1_1"]))
    assert list(feats)[:3] == ["conv1_1", "lrn1", "pool1"]


@pytest.mark.slow
def test_features_and_headless_backbone():
    model = _tiny("vgg19")
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(jax.random.key(0), x)
    feats = models.extract_features(model, variables, x, ["conv3_4", "pool5", "fc7"])
    assert feats["conv3_4"].shape == (2, 16, 16, 16)
    assert feats["fc7"].shape == (2, 64) and float(feats["fc7"].min()) >= 0
    backbone = _tiny("vgg19", include_top=False)
    trunk = {"params": {k: v for k, v in variables["params"].items() if k.startswith("conv")}}
    np.testing.assert_allclose(backbone.apply(trunk, x), feats["pool5"], rtol=1e-6)
    with pytest.raises(ValueError, match="No layers"):
        models.extract_features(model, variables, x, ["conv6_1"])


@pytest.mark.slow
def test_pooling_matches_reduce_window():
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    import flax.linen as nn
    np.testing.assert_array_equal(models.max_pool_2x2(x),
                                  nn.max_pool(x, (2, 2), strides=(2, 2)))
    odd = jax.random.normal(jax.random.key(0), (1, 7, 7, 2))
    assert models.max_pool_2x2(odd).shape == (1, 3, 3, 2)
    # The gradient: reduce_window's (one pixel per window, the first maximum), ties included.
    ties = jnp.round(jax.random.normal(jax.random.key(1), (2, 8, 6, 3)))  # many equal maxima
    g = jax.random.normal(jax.random.key(2), (2, 4, 3, 3))
    grad = lambda pool: jax.grad(lambda x: (pool(x) * g).sum())(ties)  # noqa: E731
    want = grad(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))
    np.testing.assert_array_equal(grad(models.max_pool_2x2), want)
    assert int((want != 0).sum()) == g.size


def test_initialisers():
    x = jnp.zeros((1, 32, 32, 3))
    normal = _tiny(initializer="normal", init_std=0.02).init(jax.random.key(0), x)["params"]
    assert abs(float(normal["conv3_1"]["kernel"].std()) - 0.02) < 2e-3
    assert float(jnp.abs(normal["conv3_1"]["bias"]).max()) == 0.0
    he = _tiny("vgg11_bn").init(jax.random.key(0), x)["params"]["conv3_1"]["kernel"]
    fan_out = 3 * 3 * he.shape[-1]
    assert abs(float(he.std()) - np.sqrt(2 / fan_out)) < 0.1 * np.sqrt(2 / fan_out)
    glorot = _tiny().init(jax.random.key(0), x)["params"]["conv3_1"]["kernel"]
    limit = np.sqrt(6 / (9 * glorot.shape[2] + 9 * glorot.shape[3]))
    assert float(jnp.abs(glorot).max()) <= limit and float(jnp.abs(glorot).max()) > 0.9 * limit


@pytest.mark.slow
def test_bf16_compute_with_float32_params():
    model = _tiny(dtype=jnp.bfloat16)
    x = jnp.ones((1, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    assert model.apply(variables, x).dtype == jnp.bfloat16


def _fc_product_dtypes(model, variables, x, platform: str) -> list[str]:
    """The result dtypes of the matrix products with fc6-fc8's kernels, in order, in the
    program lowered for ``platform``."""
    text = jax.jit(lambda v: model.apply(v, x)).trace(variables).lower(
        lowering_platforms=(platform,)).as_text()
    widths = [variables["params"][f"fc{i}"]["kernel"].shape[1] for i in (6, 7, 8)]
    products = re.findall(r"stablehlo.dot_general.*-> tensor<2x(\d+)x(\w+)>", text)
    return [dtype for width, dtype in products if int(width) in widths]


@pytest.mark.slow
def test_bf16_fc_layers_multiply_the_float32_weights_on_cpu():
    """Memory-bound at VGG's batch sizes: on the CPU, ``compute``'s fc6-fc8 read their
    float32 kernels directly under bf16 mixed precision; on accelerators, and in the plain
    model, they multiply in bf16. The logits are bf16 either way."""
    x = jnp.ones((2, 32, 32, 3))
    model = _tiny(dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), x)
    fast = compute.fast(model)
    assert _fc_product_dtypes(fast, variables, x, "cpu") == ["f32"] * 3
    assert _fc_product_dtypes(fast, variables, x, "cuda") == ["bf16"] * 3
    assert _fc_product_dtypes(model, variables, x, "cpu") == ["bf16"] * 3
    a, b = fast.apply(variables, x), model.apply(variables, x)
    assert a.dtype == b.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=0.05, atol=0.05)


def test_shallow_to_deep_copies_exactly_the_named_layers():
    x = jnp.zeros((1, 32, 32, 3))
    net_a = _tiny("A").init(jax.random.key(1), x)["params"]
    fresh = _tiny("E").init(jax.random.key(2), x)["params"]
    deep = transfer.shallow_to_deep(fresh, net_a)
    for name in fresh:
        copied = name in transfer.SHALLOW_TO_DEEP_LAYERS
        for leaf, a_leaf, f_leaf in zip(jax.tree_util.tree_leaves(deep[name]),
                                        jax.tree_util.tree_leaves(net_a.get(name, fresh[name])),
                                        jax.tree_util.tree_leaves(fresh[name])):
            np.testing.assert_array_equal(leaf, a_leaf if copied else f_leaf)
    assert not np.array_equal(fresh["conv1_1"]["kernel"], net_a["conv1_1"]["kernel"])
    wrong = _tiny("E", fc_width=32).init(jax.random.key(2), x)["params"]
    with pytest.raises(ValueError, match=r"Cannot copy fc6\['bias'\]: source shape \(64,\), target shape \(32,\)"):
        transfer.shallow_to_deep(wrong, net_a)


@pytest.mark.slow
def test_batchnorm_train_uses_batch_stats_eval_uses_running_averages():
    model = _tiny("vgg11_bn", dropout_rate=0.0)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    feats, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    bn_out = feats  # logits unused; check the normalised pre-activation via running stats.
    pre = jax.lax.conv_general_dilated(
        x, variables["params"]["conv1_1"]["kernel"], (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + variables["params"]["conv1_1"]["bias"]
    mean, var = pre.mean(axis=(0, 1, 2)), pre.var(axis=(0, 1, 2))
    new_stats = state["batch_stats"]["bn1_1"]
    np.testing.assert_allclose(new_stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_stats["var"], 0.9 + 0.1 * var, rtol=1e-4)
    relu = state["intermediates"]["layers"]["conv1_1"]
    np.testing.assert_allclose(relu, jnp.maximum((pre - mean) / jnp.sqrt(var + 1e-5), 0),
                               rtol=1e-3, atol=1e-3)
    # Evaluation normalises with the stored running averages (initially mean 0, var 1).
    _, ev = model.apply(variables, x, mutable=["intermediates"])
    np.testing.assert_allclose(ev["intermediates"]["layers"]["conv1_1"],
                               jnp.maximum(pre / jnp.sqrt(1 + 1e-5), 0), rtol=1e-4, atol=1e-4)
    assert bn_out.shape == (8, 7)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="Unknown architecture 'vgg17'; valid names: vgg11"):
        models.create_model("vgg17")
    model = _tiny()
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, height, width, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="got \\(1, 32, 32, 1\\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="fc6 was built for a 1x1x32 feature map"):
        model.apply(variables, jnp.zeros((1, 64, 64, 3)))
    res = subprocess.run([sys.executable, "-m", "vgg_jax.models", "--arch", "vgg17"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "valid names" in res.stderr


@pytest.mark.parametrize("arch", list(TWINS))
def test_large_kernel_twins_counts(arch):
    params, macs, relus = TWINS[arch]
    rows = models.summary(models.create_model(arch), 224)
    assert sum(r["params"] for r in rows) == params
    assert sum(r["macs"] for r in rows) == macs
    assert len([r for r in rows if r["name"].startswith("conv")]) == relus
    assert models.count_params(
        models.abstract_variables(models.create_model(arch), 224)["params"]) == params


def test_large_kernel_twins_layers_and_letters():
    assert models.canonical_name("B-5x5") == "vgg13_5x5"
    assert models.canonical_name("d-7x7") == "vgg16_7x7"
    assert models.canonical_name("B-5x5-ReLU") == "vgg13_5x5_relu"
    params = models.abstract_variables(models.create_model("D-7x7"), 224)["params"]
    assert [params[f"conv{b}_1"]["kernel"].shape[:2] for b in range(1, 6)] == \
        [(5, 5), (5, 5), (7, 7), (7, 7), (7, 7)]
    assert models.layer_names("B-5x5") == [f"conv{b}_1" for b in range(1, 6)]
    control = models.abstract_variables(models.create_model("vgg13_5x5_relu"), 224)["params"]
    assert control["conv3_1"]["kernel"].shape == (5, 5, 128, 256)
    assert control["conv3_2"]["kernel"].shape == (1, 1, 256, 256)
    assert "vgg13_5x5" not in models.TABLE1 and "vgg16_bn" in models.TABLE1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg13_5x5", "vgg13_5x5_relu_bn", "vgg16_7x7"])
def test_large_kernel_twins_dense_equals_classifier(arch):
    model = _tiny(arch)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(jax.random.key(0), x)
    np.testing.assert_allclose(model.apply(variables, x, dense=True), model.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    score_map = model.apply(variables, jnp.ones((1, 128, 128, 3)), dense=True, return_map=True)
    assert score_map.shape == (1, 3, 3, 7)


def test_receptive_fields_geometric_and_effective():
    from vgg_jax.models import receptive
    assert receptive.fields("vgg16")["pool5"] == 212
    assert receptive.fields("vgg16")["conv3_3"] == 40
    b, b5 = receptive.block_table("B"), receptive.block_table("B-5x5")
    assert [r["field"] for r in b] == [r["field"] for r in b5] == [5, 14, 32, 68, 140]
    assert [r["relus"] for r in b] == [2] * 5 and [r["relus"] for r in b5] == [1] * 5
    assert sum(r["params"] for r in b5) == 134_503_528 - 123_642_856  # all but fc6-fc8
    model = _tiny("vgg13_5x5", include_top=False)
    images = jax.random.uniform(jax.random.key(0), (3, 64, 64, 3))
    variables = model.init(jax.random.key(1), images[:1])
    erf = receptive.effective_field(model, variables, images, "conv2_1")
    assert erf.shape == (64, 64) and abs(erf.sum() - 1) < 1e-6
    field = receptive.fields("vgg13_5x5")["conv2_1"]  # 14: nothing outside it
    rows = np.nonzero(erf.sum(1))[0]
    assert rows.max() - rows.min() + 1 <= field
    assert 0 < receptive.spread(erf) < field
