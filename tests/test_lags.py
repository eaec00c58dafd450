"""gradient_by_lag against brute force: the parameters copied once per step, the loss read
at step t differentiated (jax.jacrev of a Python loop) with respect to the copy at step k,
and the terms of lag t - k added one by one (Pascanu, Mikolov & Bengio 2013, eqs. 3-5)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from random_params import random_params as _random_params

import rnnjax
from rnnjax import diagnostics
from rnnjax._src import lags

T, I, H = 5, 2, 3

random_params = functools.partial(_random_params, scale=0.6)


def _mgu_update(h, gi, gh):  # a user's minimal gated unit (Zhou et al. 2016)
    f = jax.nn.sigmoid(gi[..., :H] + gh[..., :H])
    n = jnp.tanh(gi[..., H:] + f * gh[..., H:])
    return (1 - f) * h + f * n


CELLS = {
    "elman": rnnjax.elman(H),
    "lstm": rnnjax.lstm(H),
    "gru": rnnjax.gru(H),
    "user": rnnjax.gated(H, 2, _mgu_update),
}


def setup(name, seed=0):
    cell = CELLS[name]
    key = jax.random.PRNGKey(seed)
    params = random_params(cell, key, I)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (T, I))
    return cell, params, xs


def loss_fn(final_carry, ys):
    """Reads the final carry and every output, nonlinearly."""
    flat, _ = ravel_pytree(final_carry)
    w = jnp.linspace(-1.0, 1.0, flat.size)
    v = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * flat) ** 2 + jnp.sum(v * jnp.sin(ys))


def brute_force(cell, params, xs, loss_fn):
    """Returns (T, P): component d = Σ_k dL/dy_{k+d} ∂y_{k+d}/∂θ_k (+ the final carry's term
    at t = T - 1), θ_k the copy of the parameters used at step k only."""
    num_steps = xs.shape[0]
    flat, unravel = ravel_pytree(params)

    def run(per_step):  # (T, P): step t uses per_step[t]
        h, ys = cell.initial_carry(params), []
        for t in range(num_steps):
            h, y = cell.step(unravel(per_step[t]), h, xs[t])
            ys.append(y)
        return ravel_pytree(h)[0], jnp.stack(ys)

    tiled = jnp.tile(flat, (num_steps, 1))
    final, ys = run(tiled)
    _, unravel_carry = ravel_pytree(cell.initial_carry(params))
    g_final, g_ys = jax.grad(lambda f, y: loss_fn(unravel_carry(f), y), argnums=(0, 1))(final, ys)
    d_final, d_ys = jax.jacrev(run)(tiled)  # (n, T, P), (T, H, T, P)
    out = np.zeros((num_steps, flat.size))
    for t in range(num_steps):
        for k in range(t + 1):
            term = np.einsum("h,hp->p", g_ys[t], d_ys[t, :, k])
            if t == num_steps - 1:
                term = term + np.einsum("n,np->p", g_final, d_final[:, k])
            out[t - k] += term
    return out


def flat_components(components):
    """Returns (T, P): the lag components of a params-like tree, flattened as ravel_pytree."""
    return jax.vmap(lambda tree: ravel_pytree(tree)[0])(components)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_lag_components_equal_brute_force_and_sum_to_grad(name):
    cell, params, xs = setup(name)
    components = flat_components(lags.lag_gradients(cell, params, xs, loss_fn))
    expected = brute_force(cell, params, xs, loss_fn)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(components, expected, rtol=1e-4, atol=1e-5 * scale)
    full = jax.grad(lambda p: loss_fn(*rnnjax.reference_scan(cell, p, xs)))(params)
    np.testing.assert_allclose(
        components.sum(0), ravel_pytree(full)[0], rtol=1e-4, atol=1e-5 * scale
    )
    norms = jax.jit(lambda p: diagnostics.gradient_by_lag(cell, p, xs, loss_fn))(params)
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=1e-4)


def test_per_leaf_norms_are_the_norms_of_each_leaf():
    cell, params, xs = setup("lstm")
    per_leaf = lags.gradient_by_lag(cell, params, xs, loss_fn, per_leaf=True)
    components = lags.lag_gradients(cell, params, xs, loss_fn)
    assert set(per_leaf) == set(components)  # the LSTM's params are a flat dict of leaves
    for name, norms in per_leaf.items():
        expected = np.linalg.norm(np.asarray(components[name]).reshape(T, -1), axis=1)
        np.testing.assert_allclose(norms, expected, rtol=1e-5)
    total = np.sqrt(sum(np.square(n) for n in per_leaf.values()))
    np.testing.assert_allclose(lags.gradient_by_lag(cell, params, xs, loss_fn), total, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "user"])
def test_padded_steps_contribute_exactly_zero(name):
    cell, params, xs = setup(name)
    n = 3
    poisoned = xs.at[n:].set(jnp.nan)
    masked_loss = lambda final, ys: loss_fn(final, ys[:n])
    batched = jax.vmap(lambda x, m: lags.lag_gradients(cell, params, x, masked_loss, length=m))
    components = jax.vmap(flat_components)(batched(poisoned[None], jnp.array([n])))
    expected = np.zeros((T, ravel_pytree(params)[0].size))
    expected[:n] = brute_force(cell, params, xs[:n], lambda f, ys: loss_fn(f, ys))
    assert np.isfinite(components).all()
    np.testing.assert_allclose(components[0], expected, rtol=1e-4, atol=1e-6)
    grad = jax.grad(lambda p: masked_loss(*rnnjax.reference_scan(cell, p, poisoned, length=n)))(
        params
    )
    np.testing.assert_allclose(components[0].sum(0), ravel_pytree(grad)[0], rtol=1e-4, atol=1e-6)


def test_layer_version_equals_the_cell_version_inside_a_model():
    cell = CELLS["gru"]
    model = rnnjax._src.models.many_to_many(rnnjax.recurrent(cell), rnnjax.readouts.linear(2))
    key = jax.random.PRNGKey(3)
    params = model.init(key, I)
    params = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape), params
    )
    xs = jax.random.normal(jax.random.fold_in(key, 1), (T, I))
    target = jnp.sin(jnp.arange(T * 2.0)).reshape(T, 2)
    model_loss = lambda p, x: jnp.sum((model.apply(p, x) - target) ** 2)
    ((label, components),) = lags.layer_lag_gradients(model_loss, params, xs).items()
    readout = lambda ys: rnnjax.readouts.linear(2).apply(params["readout"], ys)
    cell_loss = lambda final, ys: jnp.sum((readout(ys) - target) ** 2)
    expected = brute_force(cell, params["rnn"], xs, cell_loss)
    np.testing.assert_allclose(flat_components(components), expected, rtol=1e-4, atol=1e-6)
    norms = lags.layer_gradient_by_lag(model_loss, params, xs)[label]
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=1e-4)


def test_layer_version_of_a_bidirectional_layer_sums_to_each_direction_gradient():
    cell = CELLS["lstm"]
    model = rnnjax._src.models.many_to_many(
        rnnjax.bidirectional(cell, cell), rnnjax.readouts.linear(1)
    )
    params = model.init(jax.random.PRNGKey(4), I)
    xs = jax.random.normal(jax.random.PRNGKey(5), (T, I)).at[3:].set(jnp.nan)
    model_loss = lambda p, x: jnp.sum(jnp.sin(model.apply(p, x, length=3)))
    out = lags.layer_lag_gradients(model_loss, params, xs)
    grad = jax.grad(model_loss)(params, xs)
    assert len(out) == 2
    for label, components in out.items():
        direction = label.split("/")[-1]
        flat = flat_components(components)
        assert np.isfinite(flat).all()
        np.testing.assert_allclose(
            flat.sum(0), ravel_pytree(grad["rnn"][direction])[0], rtol=1e-4, atol=1e-6
        )
        assert np.all(flat[3:] == 0)  # lags beyond the 3 valid steps do not exist


def test_errors_name_the_argument():
    cell, params, xs = setup("elman")
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        lags.gradient_by_lag(cell, params, xs, "loss")
    with pytest.raises(TypeError, match=r"cell must be an rnnjax\.Cell"):
        lags.gradient_by_lag("elman", params, xs, loss_fn)
