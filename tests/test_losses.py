"""Masked losses against NumPy loops, and the property that padding never matters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnjax import losses, padding

B, T, V, D = 3, 5, 4, 2


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_valid_steps_mask():
    np.testing.assert_array_equal(padding.valid_steps(4, 2), [True, True, False, False])
    np.testing.assert_array_equal(
        padding.valid_steps(3, jnp.array([0, 3])), [[False, False, False], [True, True, True]]
    )


def test_masked_cross_entropy_matches_numpy_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    labels = rng.integers(0, V, size=(B, T))
    lengths = [5, 2, 0]
    total, count = 0.0, 0
    for b in range(B):
        for t in range(lengths[b]):
            total -= _np_log_softmax(logits[b, t])[labels[b, t]]
            count += 1
    mask = padding.valid_steps(T, jnp.array(lengths))
    np.testing.assert_allclose(
        losses.masked_cross_entropy(logits, labels, mask), total / count, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.masked_cross_entropy(logits, labels),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
        rtol=1e-5,
    )


def test_masked_mse_matches_numpy_loop():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(B, T, D)).astype(np.float32)
    target = rng.normal(size=(B, T, D)).astype(np.float32)
    lengths = [1, 4, 5]
    per_step = [
        np.mean((pred[b, t] - target[b, t]) ** 2) for b in range(B) for t in range(lengths[b])
    ]
    mask = padding.valid_steps(T, jnp.array(lengths))
    np.testing.assert_allclose(losses.masked_mse(pred, target, mask), np.mean(per_step), rtol=1e-5)
    np.testing.assert_allclose(
        losses.masked_mse(pred, target), np.mean((pred - target) ** 2), rtol=1e-5
    )
    # scalar targets per step: mask covers every axis
    np.testing.assert_allclose(
        losses.masked_mse(pred[..., 0], target[..., 0], mask),
        np.mean(
            [(pred[b, t, 0] - target[b, t, 0]) ** 2 for b in range(B) for t in range(lengths[b])]
        ),
        rtol=1e-5,
    )


def test_nothing_valid_gives_zero_loss_and_gradient():
    logits = jnp.ones((T, V))
    mask = jnp.zeros(T, bool)
    loss, grad = jax.value_and_grad(losses.masked_cross_entropy)(
        logits, jnp.zeros(T, jnp.int32), mask
    )
    assert loss == 0.0 and not np.any(np.asarray(grad))
    loss, grad = jax.value_and_grad(losses.masked_mse)(logits, logits + 1.0, mask)
    assert loss == 0.0 and not np.any(np.asarray(grad))


@jax.jit
def _ce_value_and_grad(logits, labels, mask):
    return jax.value_and_grad(losses.masked_cross_entropy)(logits, labels, mask)


@jax.jit
def _mse_value_and_grad(pred, target, mask):
    return jax.value_and_grad(losses.masked_mse)(pred, target, mask)


_pad_values = st.one_of(
    st.floats(-1e6, 1e6, width=32),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(-float("inf")),
)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    pad=_pad_values,
    pad_label=st.integers(-100, 100),
    seed=st.integers(0, 2**16),
)
def test_padding_never_changes_loss_or_gradient(lengths, pad, pad_label, seed):
    rng = np.random.default_rng(seed)
    mask = np.arange(T)[None] < np.array(lengths)[:, None]
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    labels = rng.integers(0, V, size=(B, T)).astype(np.int32)
    padded_logits = np.where(mask[..., None], logits, np.float32(pad))
    padded_labels = np.where(mask, labels, pad_label).astype(np.int32)
    l0, g0 = _ce_value_and_grad(logits, labels, mask)
    l1, g1 = _ce_value_and_grad(padded_logits, padded_labels, mask)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(g1, g0, rtol=1e-6)
    assert np.all(np.asarray(g1)[~mask] == 0.0)

    target = rng.normal(size=(B, T, D)).astype(np.float32)
    pred = rng.normal(size=(B, T, D)).astype(np.float32)
    padded_pred = np.where(mask[..., None], pred, np.float32(pad))
    padded_target = np.where(mask[..., None], target, np.float32(-pad if np.isfinite(pad) else 0.0))
    m0, h0 = _mse_value_and_grad(pred, target, mask)
    m1, h1 = _mse_value_and_grad(padded_pred, padded_target, mask)
    np.testing.assert_allclose(m1, m0, rtol=1e-6)
    np.testing.assert_allclose(h1, h0, rtol=1e-6)
    assert np.all(np.asarray(h1)[~mask] == 0.0)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="targets"):
        losses.masked_mse(jnp.ones((3, 2)), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="mask"):
        losses.masked_mse(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(4, bool))
    with pytest.raises(ValueError, match="labels"):
        losses.masked_cross_entropy(jnp.ones((3, 2)), jnp.ones(4, jnp.int32))
    with pytest.raises(TypeError, match="labels"):
        losses.masked_cross_entropy(jnp.ones((3, 2)), jnp.ones(3))
