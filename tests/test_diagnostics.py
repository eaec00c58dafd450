"""Gradient-flow diagnostics against brute force: jax.jacrev of Python-unrolled loops, NumPy
QR loops, and the closed form of a linear RNN with W_hh = a·Q."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnnjax
from rnnjax import diagnostics as dg

T, I, H = 6, 2, 3


def random_params(cell, key, input_size, *, scale=0.6):
    """Cell params with every entry random (biases included), so no term hides behind a zero."""
    params = cell.init(key, input_size)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 7), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)]
    )


CELLS = {"elman": rnnjax.elman(H), "lstm": rnnjax.lstm(H), "gru": rnnjax.gru(H)}


def setup(name, seed=0):
    cell = CELLS[name]
    key = jax.random.PRNGKey(seed)
    params = random_params(cell, key, I)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (T, I))
    carry0 = cell.initial_carry(params)
    flat0, unravel = ravel_pytree(carry0)
    carry = unravel(0.5 * jax.random.normal(jax.random.fold_in(key, 2), flat0.shape))
    return cell, params, xs, carry


def loss_fn(final_carry, ys):
    """Reads both the final carry and every output, nonlinearly."""
    flat, _ = ravel_pytree(final_carry)
    w = jnp.linspace(-1.0, 1.0, flat.size)
    v = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * flat) ** 2 + jnp.sum(v * jnp.sin(ys))


def unrolled(cell, params, xs, carry, length):
    """Returns f(probe) -> (final_carry, ys): a Python loop that adds probe[t] to the carry
    leaving step t, and skips steps t >= length (padding keeps the carry, emits zeros)."""
    _, unravel = ravel_pytree(carry)

    def f(probe):
        h, ys = carry, []
        for t in range(xs.shape[0]):
            if length is None or t < length:
                h, y = cell.step(params, h, xs[t])
                h = jax.tree.map(jnp.add, h, unravel(probe[t]))
            else:
                y = jnp.zeros((cell.hidden_size,))
            ys.append(y)
        return h, jnp.stack(ys)

    return f


def brute_state_gradients(cell, params, xs, carry, length):
    f = unrolled(cell, params, xs, carry, length)
    n = ravel_pytree(carry)[0].size
    return jax.jacrev(lambda p: loss_fn(*f(p)))(jnp.zeros((xs.shape[0], n)))


def brute_final_jacobians(cell, params, xs, carry, length):
    """Returns (T, n, n): d(state_{T-1}) / d(state_t), by jacrev of the unrolled loop."""
    f = unrolled(cell, params, xs, carry, length)
    n = ravel_pytree(carry)[0].size
    jac = jax.jacrev(lambda p: ravel_pytree(f(p)[0])[0])(jnp.zeros((xs.shape[0], n)))
    return jnp.moveaxis(jac, 1, 0)  # (n_out, T, n_in) -> (T, n_out, n_in)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("length", [None, 4])
def test_state_gradients_match_jacrev_of_unrolled_loop(name, length):
    cell, params, xs, carry = setup(name)
    got = dg.state_gradients(cell, params, xs, loss_fn, carry=carry, length=length)
    want = brute_state_gradients(cell, params, xs, carry, length)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if length is not None:
        assert np.all(np.asarray(got[length:]) == 0.0)
    norms = dg.state_gradient_norms(cell, params, xs, loss_fn, carry=carry, length=length)
    np.testing.assert_allclose(norms, np.linalg.norm(np.asarray(want), axis=1), rtol=1e-5, atol=1e-6)


def test_state_gradients_under_jit_and_vmap_with_per_example_length():
    cell, params, _, carry = setup("lstm")
    xs = jax.random.normal(jax.random.PRNGKey(3), (3, T, I))
    lengths = jnp.array([T, 2, 0])
    batched = jax.jit(
        jax.vmap(lambda x, n: dg.state_gradients(cell, params, x, loss_fn, carry=carry, length=n))
    )
    got = batched(xs, lengths)
    for b in range(3):
        want = brute_state_gradients(cell, params, xs[b], carry, int(lengths[b]))
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a", [0.9, 1.1])
def test_linear_orthogonal_rnn_gradient_norms_are_powers_of_a(a):
    steps, n = 20, 4
    cell = rnnjax.elman(n, "identity", recurrent_init=rnnjax.initializers.orthogonal(a))
    params = cell.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (steps, I))
    u = jnp.array([1.0, -2.0, 0.5, 3.0])
    norms = dg.state_gradient_norms(cell, params, xs, lambda h, ys: jnp.dot(u, h))
    want = a ** (steps - 1 - np.arange(steps)) * np.linalg.norm(u)
    np.testing.assert_allclose(norms, want, rtol=1e-4)


def test_state_gradients_bad_input_raises():
    cell, params, xs, _ = setup("elman")
    with pytest.raises(ValueError, match="xs"):
        dg.state_gradients(cell, params, xs[None], loss_fn)
    with pytest.raises(TypeError, match="loss_fn"):
        dg.state_gradients(cell, params, xs, None)
    with pytest.raises(TypeError, match="cell"):
        dg.state_gradients(params, params, xs, loss_fn)
