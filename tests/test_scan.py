"""rnnjax.reference_scan (and rnnjax.scan) against a plain Python loop over cell.step: lengths, reversal, gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import rnnjax
from rnnjax._src.registry import make_cell

T, I, H = 7, 3, 4
CELLS = {
    **{name: make_cell(name, H) for name in ("elman", "lstm", "gru")},
    "gru_cho": make_cell("gru", H, reset_after=False),
}


def python_loop(cell, params, xs, length, carry=None):
    """The reference: step through the first `length` inputs, zeros after."""
    carry = cell.initial_carry(params) if carry is None else carry
    ys = []
    for t in range(xs.shape[0]):
        if t < length:
            carry, y = cell.step(params, carry, xs[t])
        else:
            y = jnp.zeros((cell.hidden_size,))
        ys.append(y)
    return carry, jnp.stack(ys) if ys else jnp.zeros((0, cell.hidden_size))


def assert_trees_close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol)


def setup(name, seed=0):
    cell = CELLS[name]
    params = cell.init(jax.random.key(seed), I)
    xs = jax.random.normal(jax.random.key(seed + 1), (T, I))
    return cell, params, xs


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("length", [None, 0, 3, T])
def test_scan_equals_python_loop(name, length):
    cell, params, xs = setup(name)
    carry0 = jax.tree.map(lambda a: a + 0.3, cell.initial_carry(params))
    got = rnnjax.reference_scan(cell, params, xs, length=length, carry=carry0)
    want = python_loop(cell, params, xs, T if length is None else length, carry0)
    assert_trees_close(got, want)


@functools.cache
def _jitted_scan(name, reverse):
    cell = CELLS[name]
    return jax.jit(lambda p, xs, n: rnnjax.reference_scan(cell, p, xs, length=n, reverse=reverse))


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@given(length=st.integers(0, T), seed=st.integers(0, 2**16))
def test_padding_never_leaks(name, reverse, length, seed):
    """Changing anything at t >= length changes no output before length and not the final carry."""
    _cell, params, xs = setup(name)
    noise = jax.random.normal(jax.random.key(seed), xs.shape) * 10
    padded = jnp.where((jnp.arange(T) >= length)[:, None], noise, xs)
    run = _jitted_scan(name, reverse)
    carry_a, ys_a = run(params, xs, length)
    carry_b, ys_b = run(params, padded, length)
    assert_trees_close(carry_a, carry_b, atol=0)
    np.testing.assert_array_equal(ys_a, ys_b)
    np.testing.assert_array_equal(ys_a[length:], 0.0)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("length", [None, 0, 1, 5])
def test_reverse_equals_flip_scan_flip(name, length):
    cell, params, xs = setup(name)
    n = T if length is None else length
    carry, ys = rnnjax.reference_scan(cell, params, xs, length=length, reverse=True)
    want_carry, want_valid = python_loop(cell, params, xs[:n][::-1], n)
    want_ys = jnp.concatenate([want_valid[::-1], jnp.zeros((T - n, H))])
    assert_trees_close(carry, want_carry)
    np.testing.assert_allclose(ys, want_ys, atol=1e-6)


def test_reverse_valid_is_an_involution_that_keeps_padding():
    xs = jnp.arange(6.0)[:, None]
    np.testing.assert_array_equal(rnnjax.padding.reverse_valid(xs, 4)[:, 0], [3, 2, 1, 0, 4, 5])
    np.testing.assert_array_equal(
        rnnjax.padding.reverse_valid(rnnjax.padding.reverse_valid(xs, 4), 4), xs
    )
    np.testing.assert_array_equal(rnnjax.padding.reverse_valid(xs)[:, 0], [5, 4, 3, 2, 1, 0])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_against_finite_differences(name):
    cell, params, xs = setup(name)

    @jax.jit
    def loss(p, x):
        carry, ys = rnnjax.reference_scan(cell, p, x, length=5)
        return jnp.sum(ys**2) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

    check_grads(loss, (params, xs), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_composes_with_jit_vmap_grad_checkpoint():
    cell, params, xs = setup("lstm")
    batch = jnp.stack([xs, xs * 2, -xs])
    lengths = jnp.array([7, 2, 5])

    def loss(p):
        step = jax.checkpoint(lambda x, n: rnnjax.reference_scan(cell, p, x, length=n)[1])
        return jnp.sum(jax.vmap(step)(batch, lengths) ** 2)

    g = jax.jit(jax.grad(loss))(params)
    g_ref = jax.grad(
        lambda p: sum(
            jnp.sum(python_loop(cell, p, x, int(n))[1] ** 2) for x, n in zip(batch, lengths)
        )
    )(params)
    assert_trees_close(g, g_ref, atol=1e-5)


def test_unroll_gives_same_result():
    cell, params, xs = setup("gru")
    assert_trees_close(
        rnnjax.reference_scan(cell, params, xs, length=4, unroll=3),
        rnnjax.reference_scan(cell, params, xs, length=4),
    )
