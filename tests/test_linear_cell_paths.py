"""The RG-LRU and Mamba's selective SSM through every path: layers, models, Flax modules and
``fit`` on the associative scan against the step-by-step reference (values and gradients,
lengths, NaN padding), and the diagnostics against the closed form of a diagonal recurrence.

Their equations, initialisation and finite differences: tests/test_griffin.py and
tests/test_mamba.py. Tolerances: parallel against sequential, both float32, 1e-5.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from paths import I, assert_impl_equals_reference
from random_params import random_params

import rnnjax
from rnnjax import diagnostics

B, T, H = 3, 5, 3
CELLS = {
    "rg_lru": lambda: rnnjax.rg_lru(H),
    "selective_ssm": lambda: rnnjax.selective_ssm(H, 2),
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def decays(name, params, xs):
    """Returns ``(T, n)``: the diagonal ``a_t`` of ∂h_t/∂h_{t-1}, from the paper's equations."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    u = np.asarray(xs, np.float64) @ p["W_in"]
    if name == "rg_lru":  # a_t = σ(Λ)^(c r_t), c = 8
        return sigmoid(p["Lambda"]) ** (8 * sigmoid(u @ p["W_a"] + p["b_a"]))
    delta = np.logaddexp(0.0, u @ p["W_delta_down"] @ p["W_delta"] + p["b_delta"])
    return np.exp(delta[:, :, None] * -np.exp(p["A_log"])).reshape(len(u), -1)  # exp(Δ_t A)


# Each path once over the two cells in the quick suite (compiles dominate its time), every
# path on both in the slow one. (one_to_many reads only xs[0], takes no length and steps its
# decoder: no layer runs, so it has no parallel path.)
QUICK = {
    "rg_lru": ("stack", "recurrent-reverse-remat", "many_to_one", "linen"),
    "selective_ssm": ("scan", "many_to_many", "encoder_decoder", "nnx", "fit"),
}
EVERY = ("scan", "recurrent", "recurrent-reverse-remat", "bidirectional", "stack")
EVERY += ("many_to_one", "many_to_many", "encoder_decoder", "linen", "nnx", "fit")


@pytest.mark.parametrize("name", sorted(QUICK))
def test_the_parallel_path_equals_the_reference_through_every_path(name):
    paths_ = QUICK[name]
    assert_impl_equals_reference(CELLS[name](), paths_, steps=T, fit="fit" in paths_)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_path_on_every_cell(name):
    assert_impl_equals_reference(CELLS[name](), EVERY, steps=T, fit=True)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_diagnostics_have_the_closed_form_of_a_diagonal_recurrence(name):
    # ∂h_t/∂h_{t-1} = diag(a_t): the Jacobian product is diag(∏ a_s), its spectral norm the
    # largest entry, the Lyapunov exponents the time averages of log a_t, and the gradient of
    # L = Σ w ⊙ h_last with respect to h_t is w ⊙ ∏_{s > t} a_s.
    cell = CELLS[name]()
    params = random_params(cell, jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    length = 4
    a = decays(name, params, xs)[:length]
    n = a.shape[1]
    products = np.stack([np.prod(a[t + 1 :], axis=0) for t in range(length)])

    jacobians = diagnostics.step_jacobians(cell, params, xs, length=length)
    np.testing.assert_allclose(jacobians[:length], jax.vmap(jnp.diag)(a), rtol=1e-5, atol=1e-6)
    norms = diagnostics.jacobian_norms(cell, params, xs, length=length)
    np.testing.assert_allclose(norms[:length], products.max(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(norms[length:], 0.0)
    spectrum = diagnostics.lyapunov_spectrum(cell, params, xs, length=length)
    np.testing.assert_allclose(
        np.sort(spectrum), np.sort(np.log(a).mean(axis=0)), rtol=1e-4, atol=1e-6
    )

    w = np.linspace(-1.0, 1.0, n)
    layer = rnnjax.recurrent(cell, impl="parallel")

    def loss(p, xs):
        final = layer.apply(p, xs, length=length)[0]
        return jnp.sum(jnp.asarray(w) * jax.flatten_util.ravel_pytree(final)[0])

    flow = diagnostics.gradient_flow(loss, params, xs)
    ((_, grads),) = flow.items()
    np.testing.assert_allclose(grads[:length], w * products, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grads[length:], 0.0)
