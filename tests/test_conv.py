"""How convolutions are computed (vgg_jax.compute.conv): every route gives XLA's values and
gradients."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax import models
from vgg_jax.compute import conv, onednn, xla
from vgg_jax.compute.modules import fast
from vgg_jax.compute.options import DEFAULT, ComputeOptions


@pytest.mark.parametrize("hw,cin,kernel,algorithm", [
    ((2, 2), 8, 3, "im2col"), ((1, 1), 8, 3, "im2col"), ((2, 1), 8, 3, "im2col"),
    ((2, 2), 8, 1, "im2col"), ((4, 4), 8, 3, "xla"), ((28, 28), 256, 3, "winograd"),
    ((56, 30), 256, 3, "winograd"), ((7, 5), 8, 3, "winograd"), ((29, 29), 256, 1, "xla"),
    # The large-kernel twins: 5x5 and 7x7 kernels, cut where the map is smaller than them.
    ((2, 2), 8, 5, "im2col"), ((1, 1), 8, 7, "im2col"), ((2, 1), 8, 7, "im2col"),
    ((3, 3), 8, 7, "im2col"), ((4, 4), 8, 7, "im2col"), ((4, 3), 8, 5, "im2col"),
    ((5, 5), 8, 5, "xla"), ((8, 8), 8, 7, "xla"), ((28, 28), 256, 5, "xla"),
    ((14, 14), 64, 7, "xla")])
@pytest.mark.slow
def test_convolution_algorithms_match_xla(hw, cin, kernel, algorithm):
    """im2col (tiny maps: XLA:CPU is ~80x slower there) and Winograd F(2x2, 3x3) (blocks 3-4
    on CPU) give XLA's values and gradients; ``choose`` routes shapes as documented."""
    x = jax.random.normal(jax.random.key(0), (2, *hw, cin))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, 5)) / (3 * cin ** 0.5)
    if algorithm != "winograd" or min(hw) >= 28:
        assert conv.choose(x.shape, w.shape, onednn_ok=False) == algorithm

    reference = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                                  padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = functools.partial(conv.convolve, algorithm=algorithm)
    np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=2e-5)
    loss = lambda f: lambda x, w: (f(x, w) ** 2).sum()  # noqa: E731
    for g_ours, g_ref in zip(jax.grad(loss(ours), (0, 1))(x, w),
                             jax.grad(loss(reference), (0, 1))(x, w)):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-4 * float(
            jnp.abs(g_ref).max()))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("n,hw,cin,kernel,cout", [
    # Large enough for oneDNN (one call, where built): blocks 5 and 4 of a 32x32 image, an
    # odd batch, non-square maps, 1x1, 5x5 and (cut to 3x3 on 2x2) 7x7 kernels.
    (32, (2, 2), 128, 3, 96), (17, (4, 4), 64, 3, 80), (64, (3, 4), 32, 5, 48),
    (128, (2, 2), 64, 7, 48), (128, (3, 2), 32, 1, 64), (64, (1, 1), 128, 3, 128),
    # XLA's products of the copied taps.
    (2, (1, 1), 8, 3, 5), (2, (2, 1), 8, 3, 5), (2, (3, 2), 6, 1, 4),
    (2, (4, 3), 8, 5, 5), (2, (4, 4), 8, 7, 3), (2, (2, 2), 8, 7, 5)])
@pytest.mark.slow
def test_taps_match_xla(n, hw, cin, kernel, cout, dtype):
    """The tap-by-tap convolution (small maps on AVX-512 CPUs) gives XLA's values and
    gradients, as one oneDNN call or by XLA's products, in float32 and (summed in float32)
    bfloat16."""
    x = jax.random.normal(jax.random.key(0), (n, *hw, cin)).astype(dtype)
    w = (jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout))
         / (kernel * cin ** 0.5)).astype(dtype)
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    reference = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        f32(x), f32(w), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = lambda x, w: conv.convolve(x, w, "taps")  # noqa: E731
    by_onednn = conv._product_uses_onednn((x.size // cin, cin), (cin, cout), x.dtype, DEFAULT)
    assert by_onednn == ("vgg_onednn_taps" in str(jax.make_jaxpr(ours)(x, w)))
    if n * hw[0] * hw[1] * cin * cout >= DEFAULT.onednn_min_macs and onednn.has_kernels(dtype):
        assert by_onednn
    y = ours(x, w)
    assert y.dtype == x.dtype and y.shape == (n, *hw, cout)
    tol = 1e-5 if dtype == "float32" else 2e-2  # relative to the largest value
    dy = jax.random.normal(jax.random.key(2), y.shape)
    got = (y, *jax.vjp(ours, x, w)[1](dy.astype(dtype)))
    want, want_vjp = jax.vjp(reference, x, w)
    for a, b in zip(got, (want, *want_vjp(dy))):
        assert a.shape == b.shape
        assert float(jnp.abs(f32(a) - b).max()) <= tol * float(jnp.abs(b).max())


def test_convolution_rejects_unknown_algorithms():
    x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        conv.convolve(x, w, "winograd")
    with pytest.raises(ValueError, match="use one of"):
        conv.convolve(x, w, "fft")


@pytest.mark.slow
def test_inference_with_winograd_matches_direct_convolution():
    """VGG-11's blocks 3-4 at 112x112 (28-pixel maps, 256-512 channels) take Winograd in
    inference on CPU; features agree with XLA's direct convolutions to float32 rounding."""
    without_onednn = ComputeOptions(onednn=False)  # the rules without oneDNN
    model = models.create_model("vgg11", include_top=False)
    x = jax.random.uniform(jax.random.key(0), (2, 112, 112, 3))
    variables = model.init(jax.random.key(1), x)
    assert conv.choose((2, 28, 28, 256), (3, 3, 256, 512), onednn_ok=False) == "winograd"
    assert conv.choose((2, 28, 28, 256), (3, 3, 256, 512), onednn_ok=False,
                       training=True) == "xla"
    assert conv.choose((2, 28, 28, 256), (3, 3, 256, 512), onednn_ok=False,
                       dtype=jnp.bfloat16) == "xla"
    with_winograd = jax.jit(fast(model, options=without_onednn).apply)(variables, x)
    direct = jax.jit(fast(model, options=dataclasses.replace(
        without_onednn, xla_winograd_min_channels=10 ** 9)).apply)(variables, x)
    assert float(jnp.abs(direct).max()) > 0
    assert not np.array_equal(with_winograd, direct)  # the two routes really differ
    np.testing.assert_allclose(with_winograd, direct, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(direct).max()))


def test_large_kernels_are_cut_to_what_the_map_reaches():
    """A 7x7 kernel on a 2x2 map only ever meets pixels with its centre 3x3; on 3x3 maps
    with its centre 5x5; from 4x4 on, with all of it. Nothing 3x3-specific (Winograd) is
    applied to 5x5 and 7x7 kernels."""
    w = jnp.arange(7 * 7, dtype=jnp.float32).reshape(7, 7, 1, 1)
    assert xla.effective_kernel(w, 2, 2).shape[:2] == (3, 3)
    np.testing.assert_array_equal(xla.effective_kernel(w, 2, 2), w[2:5, 2:5])
    assert xla.effective_kernel(w, 3, 1).shape[:2] == (5, 1)
    assert xla.effective_kernel(w, 4, 9) is w
    for k in (5, 7):
        for side in (14, 28, 56):
            assert conv.choose((8, side, side, 512), (k, k, 512, 512), onednn_ok=False) == "xla"
