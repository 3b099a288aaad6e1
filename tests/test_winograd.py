"""Winograd F(2x2, 3x3) with C++ tile transforms (vgg_jax.compute.winograd): XLA's values and
gradients, and the layers vgg_jax.compute.conv routes to it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax.compute import conv, onednn, winograd
from vgg_jax.compute.options import ComputeOptions

pytestmark = pytest.mark.skipif(not winograd.available(),
                                reason="needs the kernels built (python -m vgg_jax.onednn)")


def _reference(x, k, b, relu):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    return jax.nn.relu(y) if relu else y


def _values_and_gradients(f, x, k, b, dy):
    y, vjp = jax.vjp(f, x, k, b)
    return (y, *vjp(dy))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape,out", [
    ((2, 6, 4, 37), 21), ((1, 2, 2, 16), 16), ((3, 8, 10, 64), 48),
    # VGG's blocks 2-5 (batch 1; blocks 2-3 at 112x112 images)
    ((1, 56, 56, 64), 128), ((1, 28, 28, 256), 256), ((1, 28, 28, 256), 512),
    ((1, 14, 14, 512), 512)])
def test_small_integers_give_xla_values_and_gradients_exactly(shape, out, relu):
    """On small integers every step of Winograd is exact in float32 (G's halves included),
    so forward, input, kernel and bias gradients equal XLA's direct convolution's bit for bit:
    any misplaced tile, border pixel, channel tail (37, 21: not a multiple of the vector
    width) or ReLU mask would show. The bias's .5 keeps every output off ReLU's kink."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(-2, 3, shape), jnp.float32)
    k = jnp.asarray(rng.integers(-2, 3, (3, 3, shape[-1], out)), jnp.float32)
    b = jnp.asarray(rng.integers(-3, 3, out) + 0.5, jnp.float32)
    dy = jnp.asarray(rng.integers(-2, 3, (*shape[:3], out)), jnp.float32)
    ours = _values_and_gradients(lambda x, k, b: winograd.conv_bias(x, k, b, relu), x, k, b, dy)
    want = _values_and_gradients(lambda x, k, b: _reference(x, k, b, relu), x, k, b, dy)
    for name, a, e in zip(("y", "dx", "dk", "db"), ours, want):
        assert a.shape == e.shape and a.dtype == jnp.float32, name
        np.testing.assert_array_equal(a, e, err_msg=name)
    if relu:
        assert 0 < float((ours[0] == 0).mean()) < 1  # the mask really masks


def test_random_data_matches_to_float32_rounding_also_under_jit_and_vmap():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 3, 12, 8, 32)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 32, 40)) / 17, jnp.float32)
    b = jnp.asarray(rng.standard_normal(40), jnp.float32)
    loss = lambda f: lambda x, k, b: (f(x, k, b) ** 2).sum()  # noqa: E731
    ours = jax.jit(jax.vmap(jax.value_and_grad(loss(winograd.conv_bias), (0, 1, 2)),
                            (0, None, None)))(x, k, b)
    want = jax.vmap(jax.value_and_grad(loss(lambda x, k, b: _reference(x, k, b, False)),
                                       (0, 1, 2)), (0, None, None))(x, k, b)
    for a, e in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * float(jnp.abs(e).max()))


@pytest.mark.slow
def test_only_float32_3x3_kernels_on_even_maps():
    k, b = jnp.zeros((3, 3, 8, 8)), jnp.zeros(8)
    with pytest.raises(ValueError, match="even maps"):
        winograd.conv_bias(jnp.zeros((1, 7, 8, 8)), k, b)
    with pytest.raises(ValueError, match="float32 3x3"):
        winograd.conv_bias(jnp.zeros((1, 8, 8, 8), jnp.bfloat16), k.astype(jnp.bfloat16), b)
    with pytest.raises(ValueError, match="3x3 kernels"):
        winograd.conv_bias(jnp.zeros((1, 8, 8, 8)), jnp.zeros((5, 5, 8, 8)), b)
    # Asked for by name, an odd map still gets Winograd: every step XLA's.
    x = jax.random.normal(jax.random.key(0), (1, 7, 5, 8))
    k = jax.random.normal(jax.random.key(1), (3, 3, 8, 8))
    assert "vgg_winograd" not in str(jax.make_jaxpr(
        lambda x: conv.convolve(x, k, "winograd"))(x))
    np.testing.assert_allclose(conv.convolve(x, k, "winograd"), _reference(x, k, 0., False),
                               rtol=1e-5, atol=1e-5)


def test_vgg_layers_with_128_or_more_channels_train_by_winograd():
    """Blocks 2-5 of VGG at 224 (and 8x8-16x16 maps of a CIFAR image) train by Winograd on
    CPU; 64-channel layers, small maps in inference, bfloat16 and ``ComputeOptions(winograd=False)``
    keep oneDNN's direct convolution. The training step then holds the transforms' calls
    and no oneDNN convolution for such a layer."""
    if not onednn.has_kernels(jnp.float32):
        pytest.skip("no oneDNN float32 kernels")
    block3 = ((8, 56, 56, 256), (3, 3, 256, 256))
    assert conv.choose(*block3, training=True) == "winograd"
    assert conv.choose(*block3) == "winograd"
    assert conv.choose((8, 14, 14, 512), (3, 3, 512, 512), training=True) == "winograd"
    assert conv.choose((8, 14, 14, 512), (3, 3, 512, 512)) == "onednn"
    assert conv.choose((128, 8, 8, 128), (3, 3, 128, 256), training=True) == "winograd"
    assert conv.choose((8, 224, 224, 64), (3, 3, 64, 64), training=True) == "onednn"
    assert conv.choose((8, 112, 112, 64), (3, 3, 64, 128), training=True) == "onednn"
    if onednn.has_kernels(jnp.bfloat16):
        assert conv.choose(*block3, training=True, dtype=jnp.bfloat16) == "onednn"
    x, k, b = jnp.ones((2, 16, 16, 128)), jnp.ones((3, 3, 128, 128)), jnp.ones(128)
    grad = jax.grad(lambda x, k, b: conv.convolve_bias(x, k, b, True, training=True).sum(),
                    (0, 1, 2))
    jaxpr = str(jax.make_jaxpr(grad)(x, k, b))
    for target in ("input", "output", "output_gradient", "input_gradient"):
        assert f"vgg_winograd_{target}" in jaxpr
    assert "vgg_onednn_conv" not in jaxpr
    assert conv.choose(*block3, training=True,
                       options=ComputeOptions(winograd=False)) == "onednn"
