"""vae_jax.models.layers: the CPU's convolutions (matrix products; stride 1 with canonical
gradients) equal XLA's, values and gradients, and the modules keep Flax's parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vae_jax import ops
from vae_jax.models import layers

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="the product path is taken on the CPU only")


def _value_and_grads(conv, x, k):
    """conv(x, k), and the gradients of Σ conv(x, k)·r for a fixed random r."""
    r = np.random.default_rng(7).standard_normal(jax.eval_shape(conv, x, k).shape, np.float32)

    @jax.jit
    def f(x, k):
        y, vjp = jax.vjp(conv, x, k)
        return y, vjp(r)
    return f(x, k)


def _assert_same(conv_ours, conv_xla, x, k):
    ours, theirs = _value_and_grads(conv_ours, x, k), _value_and_grads(conv_xla, x, k)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def _uses_xla_conv(fn, *args) -> bool:
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))


def _inputs(shape, kshape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, np.float32), rng.standard_normal(kshape, np.float32)


@pytest.mark.parametrize("shape,kshape,strides,padding", [
    ((3, 14, 14, 4), (3, 3, 4, 5), (2, 2), "SAME"),
    ((3, 15, 13, 4), (3, 3, 4, 5), (2, 2), "SAME"),      # odd sides
    ((2, 28, 28, 1), (3, 3, 1, 8), (2, 2), "VALID"),
    ((2, 11, 9, 3), (4, 2, 3, 2), (3, 2), "SAME"),        # non-square kernel and strides
    ((2, 10, 10, 3), (3, 3, 3, 2), (2, 1), ((2, 0), (1, 3))),   # explicit, asymmetric
    ((2, 10, 10, 3), (3, 3, 3, 2), (2, 2), ((-1, 1), (0, 0))),  # negative (cropping)
])
def test_strided_convolution_is_xla_s(shape, kshape, strides, padding):
    x, k = _inputs(shape, kshape)

    def ours(x, k):
        return layers.conv_general_dilated(x, k, strides, padding, dimension_numbers=layers.NHWC)

    def xla(x, k):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=layers.NHWC)

    assert not _uses_xla_conv(ours, x, k)   # the product path, not XLA's convolution
    _assert_same(ours, xla, x, k)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 2), (0, 1))])
@pytest.mark.parametrize("k_size,stride", [(3, 2), (4, 2), (2, 3), (5, 3), (3, 1)])
def test_transposed_convolution_is_lax_conv_transpose(k_size, stride, padding):
    x, k = _inputs((2, 5, 6, 3), (k_size, k_size, 3, 4), seed=k_size * 10 + stride)
    s = (stride, stride)

    def ours(x, k):
        return layers.conv_transpose(x, k, s, padding)

    def xla(x, k):
        return lax.conv_transpose(x, k, s, padding, dimension_numbers=layers.NHWC)

    if stride > 1:
        assert not _uses_xla_conv(ours, x, k)
    _assert_same(ours, xla, x, k)


def test_transposed_convolution_with_unequal_strides_and_a_kernel_smaller_than_them():
    x, k = _inputs((2, 4, 5, 2), (1, 2, 2, 3))   # residues no tap reaches are zeros
    for s in [(2, 3), (3, 1)]:
        _assert_same(lambda x, k: layers.conv_transpose(x, k, s, "SAME"),
                     lambda x, k: lax.conv_transpose(x, k, s, "SAME",
                                                     dimension_numbers=layers.NHWC), x, k)


def _uses_canonical_vjp(fn, *args) -> bool:
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("shape,kshape,padding", [
    ((3, 9, 9, 4), (3, 3, 4, 5), "SAME"),
    ((2, 7, 11, 3), (3, 3, 3, 6), "VALID"),               # odd, unequal sides
    ((2, 8, 7, 5), (3, 3, 5, 2), ((0, 2), (1, 0))),       # explicit, asymmetric
    ((2, 6, 9, 3), (3, 1, 3, 4), "SAME"),                 # a non-square kernel
    ((2, 5, 5, 4), (4, 4, 4, 3), "SAME"),                 # even k: SAME pads (1, 2)
    ((3, 7, 5, 6), (1, 1, 6, 4), "SAME"),                 # a 1x1: a matrix product
    ((2, 4, 6, 3), (1, 1, 3, 8), "VALID"),
])
def test_stride_one_convolution_is_xla_s(shape, kshape, padding):
    x, k = _inputs(shape, kshape, seed=sum(shape))

    def ours(x, k):
        return layers.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=layers.NHWC)

    def xla(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=layers.NHWC)

    if kshape[:2] == (1, 1):
        assert not _uses_xla_conv(ours, x, k)
    else:
        assert _uses_canonical_vjp(ours, x, k)
    _assert_same(ours, xla, x, k)


def _conv_labels_in_a_scan(conv, x, k) -> set[str]:
    """The dimension labels of every convolution XLA:CPU compiles for conv's gradients
    inside a lax.scan (a while loop, as in the train step)."""
    def body(c, _):
        y, vjp = jax.vjp(conv, *c)
        return vjp(y), None
    hlo = jax.jit(lambda x, k: lax.scan(body, (x, k), None, length=2)[0]).lower(
        x, k).compile().as_text()
    return {line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines()
            if " convolution(" in line}


def test_stride_one_gradients_inside_a_loop_are_canonical_convolutions():
    # XLA:CPU runs only b01f_01io->b01f fast; in a loop body it leaves lax's gradient
    # convolutions in other labels (its generic loop, 20-40x slower).
    x, k = _inputs((2, 8, 8, 3), (3, 3, 3, 4))

    def conv(x, k):
        return layers.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=layers.NHWC)

    assert _conv_labels_in_a_scan(conv, x, k) == {"b01f_01io->b01f"}
    ops.set_enabled(False)
    try:   # the switch off: lax's own convolution and gradients
        assert not _uses_canonical_vjp(conv, x, k)
    finally:
        ops.set_enabled(True)


def test_stride_one_paddings_outside_the_path_and_other_layouts_stay_with_xla():
    x, k = _inputs((2, 8, 8, 3), (3, 3, 3, 4))
    for kk, pads in [(k, ((3, 0), (1, 1))), (k, ((-1, 1), (1, 1))), (k[:1, :1], ((1, 0), (0, 1)))]:
        def ours(x, k, pads=pads):
            return layers.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=layers.NHWC)

        assert not _uses_canonical_vjp(ours, x, kk) and _uses_xla_conv(ours, x, kk)
        _assert_same(ours, lambda x, k, pads=pads: lax.conv_general_dilated(
            x, k, (1, 1), pads, dimension_numbers=layers.NHWC), x, kk)
    xc, kc = jnp.moveaxis(x, -1, 1), jnp.transpose(k, (3, 2, 0, 1))
    np.testing.assert_allclose(   # no dimension numbers: lax's default, NCHW / OIHW
        layers.conv_general_dilated(xc, kc, (2, 2), "SAME"),
        lax.conv_general_dilated(xc, kc, (2, 2), "SAME"), rtol=1e-6)
    # NCHW input with an HWIO kernel: not rewritten, still correct
    y = layers.conv_general_dilated(xc, k, (2, 2), "SAME",
                                    dimension_numbers=("NCHW", "HWIO", "NCHW"))
    np.testing.assert_allclose(y, lax.conv_general_dilated(
        xc, k, (2, 2), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW")), rtol=1e-6)


@pytest.mark.slow
def test_modules_keep_flax_parameters_and_values():
    x = jax.random.uniform(jax.random.key(0), (4, 7, 7, 6))
    key = jax.random.key(1)
    for ours, theirs in [
        (layers.ConvTranspose(5, (3, 3), strides=(2, 2)),
         nn.ConvTranspose(5, (3, 3), strides=(2, 2), padding="SAME")),
        (layers.ConvTranspose(5, (4, 4), strides=(2, 2), padding="VALID"),
         nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="VALID")),
        (layers.Conv(5, (3, 3), strides=(2, 2), padding="SAME"),
         nn.Conv(5, (3, 3), strides=(2, 2), padding="SAME")),
        (layers.Conv(5, (3, 3), padding="SAME"), nn.Conv(5, (3, 3), padding="SAME")),
        (layers.Conv(4, (1, 1)), nn.Conv(4, (1, 1))),
    ]:
        p_ours, p_theirs = jax.jit(ours.init)(key, x), jax.jit(theirs.init)(key, x)
        assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
        for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
            np.testing.assert_array_equal(a, b)   # same initialiser, same key: same bits
        np.testing.assert_allclose(jax.jit(ours.apply)(p_ours, x),
                                   jax.jit(theirs.apply)(p_theirs, x),
                                   rtol=1e-5, atol=1e-6)
