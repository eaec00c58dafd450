"""The selective SSM of Mamba (Gu & Dao 2023): its step against a NumPy loop of the paper's
Algorithm 2 (with the reference scan's discretisation), its softplus where the plain formula
overflows, its initialisation against the reference code's, and its gradients against
float64 finite differences.

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

T, I, D, N = 6, 3, 4, 3


def numpy_loop(params, xs, h0):
    """Returns (h_T, ys): Algorithm 2 / selective_scan_ref, one step after another, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    A = -np.exp(p["A_log"])  # (D, N)
    h, ys = np.array(h0, np.float64), []  # a copy: updated in place below
    for x in np.asarray(xs, np.float64):
        u = x @ p["W_in"]
        delta = np.logaddexp(0.0, u @ p["W_delta_down"] @ p["W_delta"] + p["b_delta"])
        B, C = u @ p["W_B"], u @ p["W_C"]
        for d in range(D):  # each channel on its own: h_d' = exp(Δ_d A_d) h_d + Δ_d B u_d
            h[d] = np.exp(delta[d] * A[d]) * h[d] + delta[d] * B * u[d]
        ys.append(h @ C + p["D"] * u)
    return h, np.stack(ys)


def test_the_step_and_the_parallel_path_follow_the_paper():
    cell = rnnjax.selective_ssm(D, N, dt_rank=2)
    params = random_params(cell, jax.random.key(0), I)
    # channel 3's step size pre-activation is ~100: log(1 + exp(100)) is inf in float32
    params["b_delta"] = jnp.array([-3.0, 0.0, 2.0, 100.0])
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.log1p(np.exp(np.float32(100.0))))
    xs = jax.random.normal(jax.random.key(1), (T, I))
    h0 = np.linspace(-1.0, 1.0, D * N).reshape(D, N)
    want = numpy_loop(params, xs, h0)
    assert_both_loops_give(cell, params, xs, h0, want, atol=1e-5)


def test_initialisation_follows_the_reference_code():
    dt_min, dt_max, d, n = 1e-3, 1e-1, 2000, 5
    params = rnnjax.selective_ssm(d, n).init(jax.random.key(0), 50)
    np.testing.assert_allclose(-np.exp(params["A_log"]), -np.tile(np.arange(1, n + 1), (d, 1)))
    np.testing.assert_array_equal(params["D"], 1.0)
    delta = np.logaddexp(0.0, np.asarray(params["b_delta"], np.float64))  # Δ at a zero input
    assert delta.min() >= dt_min * (1 - 1e-5) and delta.max() <= dt_max * (1 + 1e-5)
    # log-uniform: log Δ ~ U[log dt_min, log dt_max]
    lo, hi = np.log(dt_min), np.log(dt_max)
    np.testing.assert_allclose(np.mean(np.log(delta)), (lo + hi) / 2, atol=0.06)
    np.testing.assert_allclose(np.std(np.log(delta)), (hi - lo) / np.sqrt(12), rtol=0.03)
    rank = params["W_delta"].shape[0]
    assert rank == 125 and params["W_delta_down"].shape == (d, rank)  # ceil(D / 16)
    assert np.abs(params["W_delta"]).max() <= rank**-0.5
    np.testing.assert_allclose(np.std(params["W_delta"]), rank**-0.5 / np.sqrt(3), rtol=0.02)
    np.testing.assert_allclose(np.std(params["W_B"]), 1 / np.sqrt(3 * d), rtol=0.03)
    np.testing.assert_allclose(np.std(params["W_in"]), 1 / np.sqrt(3 * 50), rtol=0.03)


def test_gradients_match_finite_differences_in_float64():
    # through both directions of a bidirectional layer on the associative scan, with lengths
    assert_layer_gradients_match(rnnjax.bidirectional(rnnjax.selective_ssm(2, 2), impl="parallel"))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"need 0 < dt_min <= dt_max, got dt_min=0.1, dt_max=0.01"):
        rnnjax.selective_ssm(4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="state_size"):
        rnnjax.selective_ssm(4, 0)
    with pytest.raises(ValueError, match="dt_rank"):
        rnnjax.selective_ssm(4, dt_rank=0)
