"""oneDNN's convolutions: XLA's values and gradients, the same training, pmap, the fallback."""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT
from vgg_jax import models
from vgg_jax.compute import conv, onednn
from vgg_jax.compute.modules import fast
from vgg_jax.compute.options import DEFAULT, ComputeOptions
from vgg_jax.compute.kernels import build as build_lib

pytestmark = pytest.mark.skipif(not onednn.available(),
                                reason="oneDNN kernels not buildable here (see the log)")


def _skip_without_kernels(dtype):
    if not onednn.has_kernels(dtype):
        pytest.skip(f"oneDNN has no {dtype} kernels on this CPU (bfloat16 needs AVX-512 BF16 "
                    f"or AMX); test_cpus_without_bfloat16_kernels_keep_xla covers it")


def _vgg(algorithm: str = "auto", training: bool = False, options=DEFAULT,
         **kw) -> models.VGG:
    """A VGG computed by the plain model's layers ("xla") or ``compute``'s, with every
    convolution by ``algorithm`` ("auto": the rules)."""
    model = models.VGG(**kw)
    return model if algorithm == "xla" else fast(model, training, options, algorithm)


def _xla(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_kernels_are_built_and_pick_a_cpu_kernel():
    assert os.path.exists(onednn.library_path())
    impl = onednn.implementation((2, 14, 14, 64), (3, 3, 64, 64))
    assert impl and "ref" not in impl, impl  # a JIT kernel for this ISA, not the reference
    assert conv.choose((2, 14, 14, 64), (3, 3, 64, 64)) == "onednn"
    # Too little work per call for oneDNN's fixed cost: the rules without it.
    assert conv.choose((8, 2, 2, 16), (3, 3, 16, 16)) == "im2col"


def test_small_float32_maps_go_tap_by_tap_on_avx512(monkeypatch):
    """Blocks 4-5 of a 32x32 image (4x4 and 2x2 maps) are convolved tap by tap, in one
    oneDNN call each way and no oneDNN convolution, where oneDNN's convolutions are its
    AVX-512 ones; bfloat16, larger maps, AVX2 and ``ComputeOptions(taps=False)`` keep
    oneDNN's."""
    block5, kernel = (128, 2, 2, 512), (3, 3, 512, 512)
    if "avx512" not in onednn.implementation(block5, kernel):
        pytest.skip("tap by tap only where oneDNN's convolutions are AVX-512 ones")
    assert conv.choose(block5, kernel, training=True) == "taps"
    assert conv.choose((128, 4, 4, 256), (3, 3, 256, 512)) == "taps"
    assert conv.choose((128, 8, 8, 256), (3, 3, 256, 256)) == "onednn"
    assert conv.choose((128, 2, 2, 128), (3, 3, 128, 128), training=True) == "onednn"
    if onednn.has_kernels(jnp.bfloat16):
        assert conv.choose(block5, kernel, dtype=jnp.bfloat16) == "onednn"
    x = jnp.ones((16, 2, 2, 256))
    loss = lambda x, k, b: conv.convolve_bias(x, k, b, relu=True).sum()  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, (0, 1, 2)))(x, jnp.ones((3, 3, 256, 256)),
                                                           jnp.ones(256)))
    assert "vgg_onednn_taps_forward" in jaxpr and "vgg_onednn_taps_backward" in jaxpr
    assert "vgg_onednn_conv" not in jaxpr
    assert conv.choose(block5, kernel, training=True,
                       options=ComputeOptions(taps=False)) == "onednn"
    real = onednn.implementation
    monkeypatch.setattr(onednn, "implementation", lambda *a: real(*a).replace(
        "avx512_core", "avx2"))
    assert conv.choose(block5, kernel, training=True) == "onednn"


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["ref:any", ""])
def test_cpus_without_bfloat16_kernels_keep_xla(impl, monkeypatch):
    """Where oneDNN has only its reference code for bfloat16 ("ref:any") or none at all
    ("": an AVX2 CPU), bfloat16 convolutions and fc products stay XLA's, and a direct call
    is refused at trace time with a clear error, not a runtime failure of the compiled step."""
    real = onednn.implementation
    monkeypatch.setattr(onednn, "implementation", lambda shape, kshape, dtype=jnp.float32, *a:
                        impl if jnp.dtype(dtype) == jnp.bfloat16 else real(shape, kshape, dtype, *a))
    bf16 = dict(dtype=jnp.bfloat16)
    assert conv.choose((2, 14, 14, 64), (3, 3, 64, 64), **bf16) == "xla"
    assert conv.choose((2, 14, 14, 64), (3, 3, 64, 64)) == "onednn"
    assert not conv.dense_uses_onednn((8, 4096), (4096, 4096), jnp.bfloat16)
    assert conv.dense_uses_onednn((8, 4096), (4096, 4096), jnp.float32)
    x = jnp.ones((2, 14, 14, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="no bfloat16 kernels on this CPU"):
        jax.jit(onednn.conv).lower(x, jnp.ones((3, 3, 64, 64), jnp.bfloat16))
    images = jnp.ones((4, 64, 64, 3), jnp.float32)

    def jaxpr(dtype):
        model = fast(models.VGG(arch="vgg11", num_classes=10, width=1 / 8, fc_width=1024,
                                dtype=dtype))
        variables = model.init(jax.random.key(0), images)
        return str(jax.make_jaxpr(lambda v: model.apply(v, images))(variables))

    assert "vgg_onednn_conv" in jaxpr(jnp.float32) and "vgg_onednn_matmul" in jaxpr(jnp.float32)
    # fc6-fc8 multiply the float32 weights under bfloat16 too (by oneDNN's float32 matmul).
    assert "vgg_onednn_conv" not in jaxpr(jnp.bfloat16)
    assert "conv_general_dilated" in jaxpr(jnp.bfloat16)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [
    (2, 56, 56, 64, 3, 64),    # VGG block 1-2 shapes (small batch)
    (2, 28, 28, 128, 3, 256),
    (4, 7, 7, 512, 3, 512),
    (2, 9, 7, 5, 3, 6),        # odd sizes and channel counts
    (2, 32, 32, 3, 3, 16),     # conv1_1: three input channels
    (3, 8, 8, 16, 1, 8),       # C's 1x1 convolutions
    (3, 8, 8, 16, 5, 8),       # the 5x5 and 7x7 twins
    (2, 6, 6, 8, 7, 4),
    (16, 2, 2, 32, 3, 32),     # block 5 of a 32x32 image
])
def test_values_and_gradients_match_xla(shape, dtype):
    _skip_without_kernels(dtype)
    n, h, w, c, k, o = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w, c)), dtype)
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)) / np.sqrt(k * k * c), dtype)
    dy = jnp.asarray(rng.normal(size=(n, h, w, o)), jnp.float32)
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    y, vjp = jax.vjp(onednn.conv, x, kernel)
    want, want_vjp = jax.vjp(_xla, f32(x), f32(kernel))
    assert y.dtype == x.dtype
    got = (y, *vjp(dy.astype(x.dtype)))
    tol = 1e-5 if dtype == "float32" else 2e-2  # relative to the largest value
    for a, b in zip(got, (want, *want_vjp(dy))):
        assert a.shape == b.shape
        scale = float(jnp.abs(b).max())
        assert float(jnp.abs(f32(a) - b).max()) <= tol * scale


@pytest.mark.parametrize("by_xla", ["", "kernel", "input", "input+kernel"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [
    (2, 28, 28, 64, 3, 128),
    (2, 9, 7, 5, 3, 6),
    (3, 8, 8, 16, 1, 8),
    (2, 6, 6, 8, 7, 4),
    (4, 2, 2, 32, 3, 16),  # XLA's input gradient here is im2col's
])
def test_fused_bias_and_relu_match_xla(shape, relu, dtype, by_xla):
    """conv_bias: the convolution, bias and ReLU of one oneDNN pass, and their gradients
    (the ReLU mask from the output, the bias gradient from the kernel-gradient primitive,
    or both by XLA where it computes the kernel gradient; the input gradient by either)."""
    _skip_without_kernels(dtype)
    options = ComputeOptions(kernel_gradient="xla" if "kernel" in by_xla else "onednn",
                             input_gradient="xla" if "input" in by_xla else "onednn")
    n, h, w, c, k, o = shape
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(n, h, w, c)), dtype)
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)) / np.sqrt(k * k * c), dtype)
    bias = jnp.asarray(rng.normal(size=(o,)), dtype)
    dy = jnp.asarray(rng.normal(size=(n, h, w, o)), jnp.float32)
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731

    def want_fn(x, kernel, bias):
        y = _xla(x, kernel) + bias
        return jax.nn.relu(y) if relu else y

    y, vjp = jax.vjp(lambda *a: onednn.conv_bias(*a, relu, options), x, kernel, bias)
    want, want_vjp = jax.vjp(want_fn, f32(x), f32(kernel), f32(bias))
    if relu:
        assert float(y.min()) == 0.0
    tol = 1e-5 if dtype == "float32" else 2e-2
    for a, b in zip((y, *vjp(dy.astype(x.dtype))), (want, *want_vjp(dy))):
        assert a.shape == b.shape and a.dtype == x.dtype
        assert float(jnp.abs(f32(a) - b).max()) <= tol * float(jnp.abs(b).max())


def test_gradients_by_xla_where_onednn_has_only_its_avx2_kernels(monkeypatch):
    """"auto" leaves to XLA the kernel gradient wherever oneDNN's is ``...:avx2`` or its
    GEMM fallback, and the input gradient where that is AVX2 too and the map is 4x4 or
    smaller; the other gradients stay oneDNN's, and the values are the same either way."""
    impl = {}
    monkeypatch.setattr(onednn, "implementation", lambda *a: impl[a[3]])
    by_xla = lambda op, side: onednn.gradient_by_xla(  # noqa: E731
        op, (128, side, side, 512), (3, 3, 512, 512), jnp.float32)
    impl.update(backward_weights="jit:avx2", backward_data="brg_fwd:avx2+brgconv:avx2")
    assert by_xla("backward_weights", 56) and by_xla("backward_weights", 4)
    assert by_xla("backward_data", 4) and by_xla("backward_data", 2)
    assert not by_xla("backward_data", 8)
    impl.update(backward_weights="brgconv_bwd_w:avx512_core", backward_data="brgconv:avx512_core")
    assert not by_xla("backward_weights", 56) and not by_xla("backward_data", 4)
    impl.update(backward_weights="x64:gemm:jit")  # oneDNN's fallback: on any CPU
    assert by_xla("backward_weights", 2)
    monkeypatch.undo()
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 12, 12, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 8)) * 0.1, jnp.float32)
    grads = {}
    for who in ("onednn", "xla"):
        options = ComputeOptions(kernel_gradient=who, input_gradient=who)
        loss = lambda x, k: (onednn.conv(x, k, options) ** 2).sum()  # noqa: E731
        jaxpr = str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, kernel))
        assert ("vgg_onednn_conv_backward_weights" in jaxpr) == (who == "onednn")
        assert ("vgg_onednn_conv_backward_data" in jaxpr) == (who == "onednn")
        grads[who] = jax.jit(jax.grad(loss, (0, 1)))(x, kernel)
    for a, b in zip(grads["onednn"], grads["xla"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def test_kernel_gradients_of_large_maps_read_onednns_blocked_layout(monkeypatch):
    """"auto" has oneDNN's kernel gradient read large 3x3 float32 maps with >= 128 channels
    in its blocked layout where its kernel is ``jit:avx512_core`` (faster there); NHWC
    elsewhere. The attribute reaches the call, and both layouts give the same gradients."""
    impl = {"float32": "jit:avx512_core", "bfloat16": "jit_bf16:avx512_core_bf16"}
    monkeypatch.setattr(onednn, "implementation",
                        lambda x, k, dtype, op: impl[jnp.dtype(dtype).name])

    def blocked(n, side, c, o, k=3, dtype=jnp.float32, layout="auto"):
        return onednn.blocked_kernel_gradient((n, side, side, c), (k, k, c, o), dtype,
                                              ComputeOptions(kernel_gradient_layout=layout))

    assert blocked(8, 112, 128, 128) and blocked(8, 56, 256, 256) and blocked(8, 112, 64, 128)
    assert blocked(2, 48, 128, 128)
    assert not blocked(8, 28, 512, 512) and not blocked(8, 224, 64, 64)
    assert not blocked(128, 32, 128, 128) and not blocked(8, 40, 256, 256)
    assert not blocked(8, 56, 256, 256, k=1) and not blocked(8, 56, 256, 256, k=5)
    assert not blocked(8, 56, 256, 256, dtype=jnp.bfloat16)
    impl["float32"] = "jit:avx2"
    assert not blocked(8, 56, 256, 256)
    assert blocked(2, 4, 8, 8, k=1, layout="blocked")
    assert not blocked(8, 56, 256, 256, layout="nhwc")
    monkeypatch.undo()
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 12, 12, 32)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 32, 48)) * 0.1, jnp.float32)
    bias = jnp.asarray(rng.normal(size=(48,)), jnp.float32)
    grads = {}
    for layout in ("nhwc", "blocked"):
        options = ComputeOptions(kernel_gradient_layout=layout)
        losses = (lambda x, k, b: (onednn.conv_bias(x, k, b, True, options) ** 2).sum(),
                  lambda x, k, b: (onednn.conv(x, k, options) ** 2).sum())
        for i, loss in enumerate(losses):
            jaxpr = str(jax.make_jaxpr(jax.grad(loss, (0, 1, 2)))(x, kernel, bias))
            assert f"('blocked', {layout == 'blocked'})" in jaxpr
            grads[layout, i] = jax.jit(jax.grad(loss, (0, 1, 2)))(x, kernel, bias)
    for i in range(len(losses)):
        for a, b in zip(grads["blocked", i], grads["nhwc", i]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(8, 3136, 256), (3, 5, 7), (128, 512, 512)])
def test_fully_connected_products_and_gradients_match_xla(shape, dtype):
    """onednn.dense (fc6-fc8): the product and both gradients, which read the kernel and
    the input transposed in place."""
    _skip_without_kernels(dtype)
    n, k, m = shape
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(n, k)), dtype)
    kernel = jnp.asarray(rng.normal(size=(k, m)) / np.sqrt(k), dtype)
    dy = jnp.asarray(rng.normal(size=(n, m)), jnp.float32)
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    y, vjp = jax.vjp(onednn.dense, x, kernel)
    want, want_vjp = jax.vjp(jnp.dot, f32(x), f32(kernel))
    tol = 1e-5 if dtype == "float32" else 2e-2
    for a, b in zip((y, *vjp(dy.astype(x.dtype))), (want, *want_vjp(dy))):
        assert a.shape == b.shape and a.dtype == x.dtype
        assert float(jnp.abs(f32(a) - b).max()) <= tol * float(jnp.abs(b).max())
    np.testing.assert_allclose(onednn.matmul(x.T, kernel.T, True, True), f32(x) @ f32(kernel),
                               rtol=tol, atol=tol * float(jnp.abs(want).max()))


@pytest.mark.slow
def test_fc_layers_use_onednn_where_asked():
    """fc6-fc8 take oneDNN's product in ``compute``'s layers, give XLA's values, and stay
    XLA's dots in the plain model (what exporters use) and in dense (score map) evaluation."""
    kw = dict(arch="vgg11", num_classes=256, width=1 / 8, fc_width=512)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(8, 64, 64, 3)), jnp.float32)
    variables = models.VGG(**kw).init(jax.random.key(0), x[:1])

    def calls(algorithm, **apply_kw):
        jaxpr = jax.make_jaxpr(lambda v: _vgg(algorithm, **kw).apply(
            v, x, **apply_kw))(variables)
        return str(jaxpr).count("vgg_onednn_matmul")

    assert calls("auto") == 3 and calls("xla") == 0  # fc6 (8x256x512), fc7, fc8 (8x512x256)
    assert calls("auto", dense=True) == 0
    def loss(algorithm):
        model = _vgg(algorithm, training=True, **kw)
        return lambda v: (model.apply(v, x) ** 2).mean()

    ours, want = jax.grad(loss("auto"))(variables), jax.grad(loss("xla"))(variables)
    for layer in ("fc6", "fc7", "fc8"):
        for name in ("kernel", "bias"):
            expected = want["params"][layer][name]
            np.testing.assert_allclose(ours["params"][layer][name], expected, rtol=1e-4,
                                       atol=1e-6 * float(jnp.abs(expected).max()))


def test_vmap_gives_each_examples_gradient():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 1, 6, 6, 4)), jnp.float32)
    k = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 4, 5)), jnp.float32)
    loss = lambda conv_fn: lambda x: (conv_fn(x, k) ** 2).sum()  # noqa: E731
    for ours in (onednn.conv, onednn.taps):
        np.testing.assert_allclose(jax.vmap(jax.grad(loss(ours)))(x),
                                   jax.vmap(jax.grad(loss(_xla)))(x), rtol=1e-5, atol=1e-5)


def _train(algorithm: str, dtype=jnp.float32, steps: int = 8, arch: str = "vgg11_bn",
           options: ComputeOptions = DEFAULT) -> list[float]:
    model = _vgg(algorithm, training=True, options=options, arch=arch, num_classes=5, width=1 / 8, fc_width=32,
                 dropout_rate=0.0, dtype=dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(np.arange(16) % 5)
    variables = model.init(jax.random.key(0), x[:1])
    tx = optax.sgd(0.05, 0.9)
    params, stats = variables["params"], variables.get("batch_stats", {})
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt):
        def loss(p):
            logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y).mean(), new.get("batch_stats", {})
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt, value

    losses = []
    for _ in range(steps):
        params, stats, opt, value = step(params, stats, opt)
        losses.append(float(value))
    return losses


@pytest.mark.slow
def test_training_without_batch_norm_gives_xlas_loss_curve():
    """VGG-11 itself: every convolution with its bias and ReLU fused."""
    xla, ours = _train("xla", arch="vgg11"), _train("onednn", arch="vgg11")
    assert ours[-1] < ours[0]
    np.testing.assert_allclose(ours, xla, rtol=1e-4)


@pytest.mark.slow
def test_training_tap_by_tap_gives_xlas_loss_curve():
    """Every layer tap by tap (its products one oneDNN call where large enough, else XLA's)."""
    xla, ours = _train("xla", arch="vgg11"), _train("taps", arch="vgg11")
    assert ours[-1] < ours[0]
    np.testing.assert_allclose(ours, xla, rtol=1e-4)


@pytest.mark.slow
def test_training_by_winograd_gives_xlas_loss_curve():
    """Every 3x3 layer by Winograd with its C++ transforms (maps 32 down to 2 pixels), with
    bias and ReLU in one call (VGG-11) and without a bias before batch norm (VGG-11 BN)."""
    for arch in ("vgg11", "vgg11_bn"):
        xla, ours = _train("xla", arch=arch), _train("winograd", arch=arch)
        assert ours[-1] < ours[0]
        np.testing.assert_allclose(ours, xla, rtol=1e-4)


@pytest.mark.slow
def test_training_gives_xlas_loss_curve():
    everything = ComputeOptions(onednn_min_macs=0)  # fc6-fc8 too (tiny here) go to oneDNN
    xla, ours = _train("xla"), _train("onednn", options=everything)
    assert ours[-1] < ours[0]  # it learns
    np.testing.assert_allclose(ours, xla, rtol=1e-4)
    if not onednn.has_kernels(jnp.bfloat16):
        return  # no bfloat16 kernels on this CPU (test_cpus_without_bfloat16_kernels_keep_xla)
    bf16 = _train("onednn", jnp.bfloat16, options=everything)
    # bfloat16 follows float32 within its precision at first, then on its own path down (at
    # this learning rate XLA's own bfloat16 run is 3-4% off float32 by the third step).
    np.testing.assert_allclose(bf16[:2], xla[:2], rtol=5e-2)
    assert bf16[-1] < 0.1 * bf16[0]


def _python(code: str, cwd=ROOT, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=600)


@pytest.mark.slow
def test_pmap_over_four_cpu_devices_matches_one():
    res = _python("""
        import jax, jax.numpy as jnp, numpy as np
        from vgg_jax.compute import onednn, winograd
        assert jax.local_device_count() == 4
        x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 12, 12, 8)), jnp.float32)
        k = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 8, 8)), jnp.float32)
        by_winograd = lambda x, k: winograd.conv_bias(x, k, jnp.full(8, 0.1), True)
        for conv in (onednn.conv, onednn.taps, by_winograd):
            loss = lambda k, x: (conv(x, k) ** 2).mean()
            per_device = jax.pmap(jax.grad(loss), in_axes=(None, 0))(k, x)
            one = jnp.stack([jax.grad(loss)(k, x[i]) for i in range(4)])
            np.testing.assert_allclose(per_device, one, rtol=1e-5, atol=1e-6)
        print("ok")
        """, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


@pytest.mark.slow
def test_the_install_compiles_the_kernels(tmp_path):
    """pip's build (setup.py's build_py) puts the library in the package; without a compiler
    the install still succeeds and says that the kernels come later."""
    assert os.path.dirname(onednn.library_path()) == build_lib.HERE  # `pip install -e .`'s
    for name, env in (("ok", {}), ("nocxx", {"CXX": "/nonexistent/g++"})):
        res = subprocess.run([sys.executable, "setup.py", "build_py", "--build-lib",
                              str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=600)
        assert res.returncode == 0, res.stderr[-1500:]
        built = tmp_path / name / "vgg_jax" / "compute" / "kernels" / build_lib.library_name()
        assert built.exists() == (name == "ok"), res.stdout[-1500:]
    assert "oneDNN kernels not built at install (no C++ compiler" in res.stdout


@pytest.mark.slow
def test_fallback_without_the_kernels(tmp_path):
    """An install that could not compile them, and no compiler now: one log line, XLA's
    convolutions, the net still runs."""
    shutil.copytree(os.path.join(ROOT, "vgg_jax"), tmp_path / "src" / "vgg_jax",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    res = _python("""
        import jax, jax.numpy as jnp
        from vgg_jax import models
        from vgg_jax.compute import conv, onednn
        from vgg_jax.compute.modules import fast
        print("available", onednn.available())
        print("route", conv.choose((2, 14, 14, 64), (3, 3, 64, 64)))
        m = fast(models.VGG(arch="vgg11", num_classes=3, width=1 / 16, fc_width=8))
        v = m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        print("logits", m.apply(v, jnp.ones((2, 32, 32, 3))).shape)
        """, cwd=tmp_path, PYTHONPATH=str(tmp_path / "src"),
                  VGG_JAX_CACHE=str(tmp_path / "empty"), CXX="/nonexistent/g++")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:3] == ["available False", "route xla", "logits (2, 3)"]
    warnings = [ln for ln in res.stderr.splitlines() if "oneDNN kernels unavailable" in ln]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0], res.stderr[-1500:]
    off = _python("from vgg_jax.compute import onednn; print(onednn.available())",
                  VGG_JAX_NO_ONEDNN="1")
    assert off.stdout.strip() == "False"


def test_cli_prints_the_kernels_it_runs_here():
    res = subprocess.run([sys.executable, "-m", "vgg_jax.compute"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    lines = res.stdout.strip().splitlines()
    assert lines[0] == f"built: {onednn.library_path()}"
    assert len(lines) == 8 and all(": " in ln and ln.split(": ")[1] for ln in lines[1:])
    if onednn.has_kernels(jnp.float32):  # blocks 2-5 train by Winograd, block 1 by oneDNN
        assert lines[1].endswith("trains by onednn") and lines[2].endswith("trains by winograd")
