"""Readouts and embeddings against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import readouts


def test_linear_matches_numpy_on_leading_axes():
    r = readouts.linear(3)
    p = r.init(jax.random.PRNGKey(0), 4)
    assert p["w"].shape == (4, 3) and p["b"].shape == (3,)
    p = {
        "w": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32),
        "b": jnp.asarray([0.5, -1.0, 2.0], jnp.float32),
    }
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    expected = np.einsum("bti,io->bto", x, np.asarray(p["w"])) + np.asarray(p["b"])
    np.testing.assert_allclose(r.apply(p, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.apply(p, x[0, 0]), expected[0, 0], rtol=1e-5, atol=1e-5)


def test_linear_without_bias():
    r = readouts.linear(2, use_bias=False)
    p = r.init(jax.random.PRNGKey(0), 3)
    assert set(p) == {"w"}
    x = jnp.ones(3)
    np.testing.assert_allclose(r.apply(p, x), np.ones(3) @ np.asarray(p["w"]), rtol=1e-6)


def test_mlp_matches_numpy_loop():
    r = readouts.mlp([5, 4], 2, activation="tanh")
    p = r.init(jax.random.PRNGKey(1), 3)
    assert [q["w"].shape for q in p] == [(3, 5), (5, 4), (4, 2)]
    # non-zero biases so that the bias path is checked too
    p = [{"w": q["w"], "b": q["b"] + 0.1 * (i + 1)} for i, q in enumerate(p)]
    x = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)
    h = x
    for i, q in enumerate(p):
        h = h @ np.asarray(q["w"]) + np.asarray(q["b"])
        if i < len(p) - 1:
            h = np.tanh(h)
    np.testing.assert_allclose(r.apply(p, x), h, rtol=1e-5, atol=1e-5)


def test_embedding_is_one_hot_matmul():
    e = readouts.embedding(7, 3)
    p = e.init(jax.random.PRNGKey(0))
    assert p["table"].shape == (7, 3)
    tokens = jnp.array([[0, 6, 3], [2, 2, 1]])
    expected = np.eye(7)[np.asarray(tokens)] @ np.asarray(p["table"])
    np.testing.assert_allclose(e.apply(p, tokens), expected, rtol=1e-6, atol=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="output_size"):
        readouts.linear(0)
    with pytest.raises(ValueError, match="activation"):
        readouts.mlp([3], 2, activation="swish?")
    with pytest.raises(ValueError, match="hidden_sizes"):
        readouts.mlp([3, -1], 2)
    r = readouts.linear(2)
    p = r.init(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        r.apply(p, jnp.ones((4, 5)))
    e = readouts.embedding(4, 2)
    with pytest.raises(TypeError, match="tokens"):
        e.apply(e.init(jax.random.PRNGKey(0)), jnp.ones(3))
