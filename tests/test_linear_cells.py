"""The LRU, minGRU and minLSTM: their equations against NumPy loops, their initialisation
against the paper, and their parallel path (one associative scan) against the step-by-step
reference through every layer, model, Flax module and ``fit``, with dirty padding.

Tolerances: float32 results against float64 NumPy loops to 1e-5; parallel against
sequential (both float32, a different summation order) to 1e-5, values and gradients.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from finite_differences import assert_gradient_matches
from paths import I, assert_impl_equals_reference
from random_params import random_params

import rnnjax
from rnnjax import diagnostics
from rnnjax._src import linear_cells

B, T, H = 3, 6, 4
CELLS = {
    "lru": lambda: rnnjax.lru(H, 0.5, 0.99, state_size=5),
    "mingru": lambda: rnnjax.mingru(H),
    "minlstm": lambda: rnnjax.minlstm(H),
    # the same recurrences scanned in linear space
    "mingru-linear": lambda: rnnjax.mingru(H, log_space=False),
    "minlstm-linear": lambda: rnnjax.minlstm(H, log_space=False),
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def g(x):  # Feng et al. 2024, in linear space
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def numpy_loop(name, params, xs, h0):
    """Returns (h_T, ys): the cell's published equations, one step after another, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h, ys = np.asarray(h0, np.complex128 if name == "lru" else np.float64), []
    for x in np.asarray(xs, np.float64):
        if name == "lru":  # Orvieto et al. 2023, eq. 7
            lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
            h = lam * h + np.exp(p["gamma_log"]) * (x @ (p["B_re"] + 1j * p["B_im"]))
            ys.append((h @ (p["C_re"] + 1j * p["C_im"])).real + x @ p["D"])
            continue
        pre = x @ p["w_ih"] + p["b_ih"]
        if name.startswith("mingru"):
            k, tilde = np.split(pre, 2)
            z = sigmoid(k)
            h = (1 - z) * h + z * g(tilde)
        else:
            f, i, tilde = np.split(pre, 3)
            f, i = sigmoid(f), sigmoid(i)
            h = f / (f + i) * h + i / (f + i) * g(tilde)
        ys.append(h)
    return h, np.stack(ys)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_the_step_and_the_parallel_path_follow_the_published_equations(name):
    cell = CELLS[name]()
    params = random_params(cell, jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    h0 = (-0.5 + 0.3j if name == "lru" else -0.5) * np.ones(cell.initial_carry(params).shape)
    carry = jnp.asarray(h0, cell.initial_carry(params).dtype)  # a negative state: log space copes
    want = numpy_loop(name, params, xs, h0)
    run = jax.jit(
        lambda impl: rnnjax.scan(cell, params, xs, carry=carry, impl=impl), static_argnums=0
    )
    for impl in ("reference", "parallel"):
        got = run(impl)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-5)


def test_lru_initialisation_follows_the_paper():
    r_min, r_max, max_phase = 0.4, 0.9, 1.0
    params = rnnjax.lru(8, r_min, r_max, max_phase, state_size=4000).init(jax.random.key(0), 50)
    lam = np.asarray(linear_cells._lru_lambda(params))
    modulus, phase = np.abs(lam), np.angle(lam)
    assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # uniform on the ring by area: |λ|² ~ U[r_min², r_max²]; phase ~ U[0, max_phase]
    np.testing.assert_allclose(np.mean(modulus**2), (r_min**2 + r_max**2) / 2, atol=0.01)
    np.testing.assert_allclose(np.mean(phase), max_phase / 2, atol=0.02)
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-5)
    np.testing.assert_allclose(np.std(params["B_re"]), 1 / np.sqrt(2 * 50), rtol=0.02)
    np.testing.assert_allclose(np.std(params["C_im"]), 1 / np.sqrt(4000), rtol=0.02)
    assert params["D"].shape == (50, 8)


# Each path once over the three cells (compiles dominate the suite's time): a stack of a
# forward and a bidirectional layer (both directions as one vmapped scan), a reverse layer
# with remat, a model of each kind that takes a length, both Flax modules, and fit.
# (one_to_many reads only xs[0] and takes no length; its decoder is encoder_decoder's.)
PATHS = {
    "lru": ("stack", "linen"),
    "mingru": ("recurrent-reverse-remat", "many_to_many", "encoder_decoder", "nnx"),
    "minlstm": ("many_to_one",),
    "mingru-linear": ("recurrent-reverse-remat",),
}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_the_parallel_path_equals_the_reference_through_every_path(name):
    # On a vmapped batch with lengths T, 2 and 0 whose padding is NaN (tests/paths.py)
    assert_impl_equals_reference(CELLS[name](), PATHS[name], steps=T, fit=name == "mingru")


def test_lru_gradients_match_finite_differences_in_float64():
    # The complex state under jit, vmap and grad: the parallel path's gradient against central
    # finite differences of the same loss (real parameters, real output).
    with jax.enable_x64(True):
        cell = rnnjax.lru(3, 0.6, 0.95, state_size=2)
        layer = rnnjax.bidirectional(cell, impl="parallel")
        params = jax.tree.map(lambda a: a.astype(jnp.float64), layer.init(jax.random.key(0), 2))
        xs = jax.random.normal(jax.random.key(1), (2, 5, 2), jnp.float64)
        lengths = jnp.array([5, 3])

        @jax.jit
        def loss(p):
            final, ys = jax.vmap(lambda x, n: layer.apply(p, x, length=n))(xs, lengths)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.abs(final[0]) ** 2)

        assert_gradient_matches(loss, params)


def test_an_edited_linear_step_keeps_or_leaves_the_parallel_path_as_it_should():
    cell = rnnjax.mingru(H)
    params = random_params(cell, jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))

    def doubled(params, x):  # an edited equation: b_t twice as large
        log_a, log_b = linear_cells.mingru_coefficients(params, x)
        return log_a, log_b + jnp.log(2.0)

    edited = cell._replace(step=cell.step._replace(coefficients=doubled))
    assert rnnjax.scan_path(edited, "parallel") == "parallel"
    want = rnnjax.reference_scan(edited, params, xs)[1]
    parallel = lambda c: rnnjax.recurrent(c, impl="parallel").apply(params, xs)[1]
    np.testing.assert_allclose(parallel(edited), want, atol=1e-6)
    assert np.abs(parallel(cell) - want).max() > 0.1
    wrapped = cell._replace(step=lambda p, h, x: cell.step(p, 2 * h, x))  # any other function
    assert rnnjax.scan_path(wrapped) == rnnjax.scan_path(wrapped, "reference") == "reference"
    np.testing.assert_allclose(
        rnnjax.recurrent(wrapped).apply(params, xs)[1],
        rnnjax.reference_scan(wrapped, params, xs)[1],
        atol=1e-6,
    )
    with pytest.raises(
        ValueError, match=r"impl='parallel' needs a cell whose step is a rnnjax.LinearStep"
    ):
        rnnjax.recurrent(wrapped, impl="parallel").apply(params, xs)


def test_state_gradients_of_the_complex_lru_state_have_the_closed_form():
    # L = Σ_i w_i Re(h_T,i): dL/dh_t,i has modulus |w_i| |λ_i|^(T-1-t), for both parts of h.
    cell = rnnjax.lru(H, 0.5, 0.99, state_size=3)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    w = jnp.array([1.0, -2.0, 0.5])
    norms = diagnostics.state_gradient_norms(cell, params, xs, lambda h, ys: jnp.sum(w * h.real))
    modulus = np.abs(np.asarray(linear_cells._lru_lambda(params)))
    want = [np.linalg.norm(np.asarray(w) * modulus ** (T - 1 - t)) for t in range(T)]
    np.testing.assert_allclose(norms, want, rtol=1e-5)
