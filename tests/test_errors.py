"""Bad input raises a named error at trace time, with what was expected and what came."""

import jax
import jax.numpy as jnp
import pytest

import rnnjax

cell = rnnjax.lstm(4)
params = cell.init(jax.random.key(0), 3)
xs = jnp.zeros((5, 3))


@pytest.mark.parametrize(
    "bad,match",
    [
        (jnp.zeros((2, 5, 3)), r"xs must have shape \(T, input_size\).*jax.vmap.*\(2, 5, 3\)"),
        (jnp.zeros((5,)), r"xs must have shape.*\(5,\)"),
        (jnp.zeros((5, 2)), r"xs has feature size 2.*input_size=3.*\(T, 3\).*\(5, 2\)"),
    ],
)
def test_wrong_input_shape(bad, match):
    with pytest.raises(ValueError, match=match):
        rnnjax.scan(cell, params, bad)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x: rnnjax.recurrent(cell).apply(params, x))(bad)


@pytest.mark.parametrize("length", [-1, 6])
def test_length_out_of_range(length):
    with pytest.raises(ValueError, match=r"length must be in \[0, T=5\], got " + str(length)):
        rnnjax.scan(cell, params, xs, length=length)


def test_length_must_be_an_integer_scalar():
    with pytest.raises(ValueError, match="length must be a scalar"):
        rnnjax.scan(cell, params, xs, length=jnp.array([3, 4]))
    with pytest.raises(TypeError, match="length must be an integer"):
        rnnjax.scan(cell, params, xs, length=2.5)


def test_carry_mismatch():
    with pytest.raises(TypeError, match="carry has the wrong structure"):
        rnnjax.scan(cell, params, xs, carry=jnp.zeros(4))
    with pytest.raises(
        ValueError, match=r"carry has the wrong shapes.*\[\(4,\), \(4,\)\].*\[\(2, 4\), \(2, 4\)\]"
    ):
        rnnjax.scan(cell, params, xs, carry=(jnp.zeros((2, 4)), jnp.zeros((2, 4))))


def test_bad_configuration():
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'sigmoid'"):
        rnnjax.elman(4, "sigmoid")
    with pytest.raises(ValueError, match=r"merge must be one of .* got 'max'"):
        rnnjax.bidirectional(cell, merge="max")
    with pytest.raises(ValueError, match="merge='sum' needs equal hidden sizes"):
        rnnjax.bidirectional(rnnjax.gru(3), rnnjax.gru(4), merge="sum")
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        rnnjax.gru(0)
    with pytest.raises(ValueError, match="input_size must be a positive int, got -2"):
        cell.init(jax.random.key(0), -2)
    with pytest.raises(ValueError, match="dropout must be in"):
        rnnjax.stack(rnnjax.recurrent(cell), dropout=1.5)
