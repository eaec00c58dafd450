"""The RG-LRU (De et al. 2024): its step against a NumPy loop of the paper's equations, its
log-space decay where the plain formula rounds to 1, its initialisation against the reference
code's, and its gradients against float64 finite differences.

The paths (layers, models, Flax, fit, diagnostics) are in tests/test_linear_cell_paths.py.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from finite_differences import assert_layer_gradients_match
from paths import assert_both_loops_give
from random_params import random_params

import rnnjax
from rnnjax._src import griffin

T, I, D = 6, 3, 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_loop(params, xs, h0, c=8.0):
    """Returns (h_T, ys): Griffin section 2.4, one step after another, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h, ys = np.asarray(h0, np.float64), []
    for x in np.asarray(xs, np.float64):
        u = x @ p["W_in"]
        r = sigmoid(u @ p["W_a"] + p["b_a"])  # recurrence gate
        i = sigmoid(u @ p["W_x"] + p["b_x"])  # input gate
        a_t = sigmoid(p["Lambda"]) ** (c * r)
        h = a_t * h + np.sqrt(1 - a_t**2) * (i * u)
        ys.append(h)
    return h, np.stack(ys)


@pytest.mark.parametrize("c", [8.0, 2.5])
def test_the_step_and_the_parallel_path_follow_the_paper(c):
    cell = rnnjax.rg_lru(D, c=c)
    params = random_params(cell, jax.random.key(0), I)
    # a = σ(Λ) from well inside (0, 1) to 1 - 2e-9, where float32's σ(Λ) is 1.0 and the
    # plain sqrt(1 - a_t²) would be 0: the log-space form keeps it (~1e-4 here)
    params["Lambda"] = jnp.array([-1.0, 2.0, 12.0, 20.0])
    assert float(jax.nn.sigmoid(params["Lambda"][3])) == 1.0  # the float32 formula fails
    xs = 2.0 * jax.random.normal(jax.random.key(1), (T, I))
    h0 = np.array([-0.5, 0.3, 1.0, -2.0])
    want = numpy_loop(params, xs, h0, c)
    assert np.all(np.abs(want[1][:, 3]) > 1e-6)  # the normalised input of unit 3 is not 0
    assert_both_loops_give(cell, params, xs, h0, want, atol=1e-6)


def test_initialisation_follows_the_reference_code():
    a_min, a_max, d = 0.9, 0.999, 1000
    params = rnnjax.rg_lru(d).init(jax.random.key(0), 50)
    a = np.asarray(jax.nn.sigmoid(params["Lambda"]), np.float64)
    assert a.min() >= a_min - 1e-6 and a.max() <= a_max + 1e-6
    # uniform on the ring: a² ~ U[a_min², a_max²]
    np.testing.assert_allclose(np.mean(a**2), (a_min**2 + a_max**2) / 2, atol=0.003)
    np.testing.assert_allclose(np.std(a**2), (a_max**2 - a_min**2) / np.sqrt(12), rtol=0.05)
    # the decay at an open recurrence gate (r = 1) is a^c, c = 8
    assert (a**8).min() >= a_min**8 - 1e-6 and (a**8).max() <= a_max**8 + 1e-6
    np.testing.assert_allclose(np.std(params["W_a"]), 1 / np.sqrt(d), rtol=0.02)
    np.testing.assert_allclose(np.std(params["W_x"]), 1 / np.sqrt(d), rtol=0.02)
    np.testing.assert_array_equal(params["b_a"], 0.0)
    np.testing.assert_array_equal(params["b_x"], 0.0)
    np.testing.assert_allclose(np.std(params["W_in"]), 1 / np.sqrt(50), rtol=0.02)


def test_gradients_match_finite_differences_in_float64():
    # through both directions of a bidirectional layer on the associative scan, with lengths
    assert_layer_gradients_match(rnnjax.bidirectional(rnnjax.rg_lru(3), impl="parallel"))


def test_the_sqrt_derivative_is_bounded_as_in_the_reference_code():
    x = jnp.array([0.25, 1e-3, 1e-9, 0.0])
    grads = jax.vmap(jax.grad(griffin.sqrt_bounded_derivative))(x)
    np.testing.assert_allclose(griffin.sqrt_bounded_derivative(x), np.sqrt(x))
    np.testing.assert_allclose(grads, [1.0, 0.5 / np.sqrt(1e-3), 1000.0, 1000.0], rtol=1e-6)
    # a closed recurrence gate (a_t = 1 exactly) gives finite gradients
    cell = rnnjax.rg_lru(2)
    params = cell.init(jax.random.key(0), 2)
    params["b_a"] = jnp.full((2,), -200.0)  # r_t = σ(-200) = 0 in float32
    xs = jnp.ones((3, 2))
    g = jax.grad(lambda p: jnp.sum(rnnjax.reference_scan(cell, p, xs)[1]))(params)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(g))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"need 0 < a_min < a_max < 1, got a_min=0.9, a_max=1.0"):
        rnnjax.rg_lru(4, a_max=1.0)
    with pytest.raises(ValueError, match="c must be > 0, got 0"):
        rnnjax.rg_lru(4, c=0)
    with pytest.raises(ValueError, match="hidden_size"):
        rnnjax.rg_lru(0)


def test_cells_built_the_same_way_have_equal_steps():
    # so that a bidirectional layer of two of them runs both directions as one vmapped scan
    assert rnnjax.rg_lru(3, c=2.0).step == rnnjax.rg_lru(4, c=2.0).step
    assert rnnjax.rg_lru(3).step == rnnjax.rg_lru(4).step != rnnjax.rg_lru(3, c=2.0).step
