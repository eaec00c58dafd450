"""The LAPACK-free QR and the orthogonal initialiser built on it (issue 26: no deadlock, same draws)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import initializers
from rnnjax._src import householder


def _numpy_qr_positive(a):
    """NumPy's (LAPACK) reduced QR with R's diagonal made positive: the unique factorisation."""
    q, r = np.linalg.qr(np.asarray(a, np.float64))
    sign = np.where(np.diag(r) < 0, -1.0, 1.0)
    return q * sign, r * sign[:, None]


@pytest.mark.parametrize("shape", [(5, 3), (8, 8), (1, 1), (7, 1)])
def test_qr_equals_lapack_with_positive_diagonal(shape):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    q, r = householder.qr(jnp.asarray(a))
    want_q, want_r = _numpy_qr_positive(a)
    np.testing.assert_allclose(q, want_q, atol=2e-6)
    np.testing.assert_allclose(r, want_r, atol=2e-5)
    np.testing.assert_allclose(q @ r, a, atol=2e-6)
    assert np.all(np.diag(r) >= 0)
    np.testing.assert_array_equal(np.tril(r, -1), 0)


def test_qr_batches_and_jits_like_one_matrix():
    a = np.random.default_rng(1).standard_normal((2, 3, 6, 4)).astype(np.float32)
    q, r = jax.jit(householder.qr)(jnp.asarray(a))
    assert q.shape == (2, 3, 6, 4) and r.shape == (2, 3, 4, 4)
    for i in range(2):
        for j in range(3):
            want_q, _ = _numpy_qr_positive(a[i, j])
            np.testing.assert_allclose(q[i, j], want_q, atol=2e-6)


def test_qr_refuses_a_wide_matrix():
    with pytest.raises(ValueError, match=r"m >= n, got shape \(2, 3\)"):
        householder.qr(jnp.zeros((2, 3)))


@pytest.mark.parametrize(
    ("shape", "column_axis"), [((16, 16), -1), ((4, 16), -1), ((16, 4), -1), ((3, 5, 7), 0)]
)
def test_orthogonal_draws_what_jax_draws(shape, column_axis):
    # Same key use and the same Q as jax.nn.initializers.orthogonal (one LAPACK call at a
    # time here, which is safe): switching to the LAPACK-free QR changed no parameter.
    key = jax.random.key(7)
    got = initializers.orthogonal(1.5, column_axis)(key, shape)
    want = jax.nn.initializers.orthogonal(1.5, column_axis)(key, shape)
    assert got.shape == shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=3e-6)


@pytest.mark.parametrize("n", [64, 256])
def test_orthogonal_is_orthogonal_to_float32_precision(n):
    q = np.asarray(initializers.orthogonal()(jax.random.key(0), (n, n)), np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=5e-6)
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=5e-6)


def test_orthogonal_keeps_the_requested_dtype():
    q = initializers.orthogonal()(jax.random.key(0), (8, 8), jnp.bfloat16)
    assert q.dtype == jnp.bfloat16


def test_orthogonal_draws_are_haar_distributed():
    # Closed forms for Q Haar-distributed on O(n) (Diaconis & Shahshahani 1994):
    # E[Q_ij] = 0, E[Q_ij^2] = 1/n, E[tr Q] = 0, E[(tr Q)^2] = 1, P(det Q = 1) = 1/2.
    n, draws = 4, 20_000
    keys = jax.random.split(jax.random.key(0), draws)
    qs = np.asarray(jax.jit(jax.vmap(lambda k: initializers.orthogonal()(k, (n, n))))(keys))
    qs = qs.astype(np.float64)

    def close(samples, expected):
        mean, se = samples.mean(), samples.std() / np.sqrt(samples.size)
        assert abs(mean - expected) < 4 * se, (mean, expected, se)

    close(qs[:, 0, 0], 0.0)
    close(qs[:, 1, 2], 0.0)
    close(qs[:, 0, 0] ** 2, 1 / n)
    close(qs[:, 3, 1] ** 2, 1 / n)
    trace = np.trace(qs, axis1=1, axis2=2)
    close(trace, 0.0)
    close(trace**2, 1.0)
    close((np.linalg.det(qs) > 0).astype(float), 0.5)
    # The check can fail: Householder's own signs (R's diagonal left as the reflections
    # make it) give Q_00 = -|Q_00|, which E[Q_00] = 0 rejects.
    with pytest.raises(AssertionError):
        close(-np.abs(qs[:, 0, 0]), 0.0)
