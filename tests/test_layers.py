"""Layers: bidirectional vs two separate scans, vmap over lengths vs per-example calls, stacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax

T, I = 6, 3


def assert_trees_close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean"])
@pytest.mark.parametrize("backward", ["same", "other-kind"])
@pytest.mark.parametrize("length", [None, 4])
def test_bidirectional_equals_two_scans(merge, backward, length):
    fwd = rnnjax.lstm(5)
    bwd = fwd if backward == "same" else rnnjax.gru(5)
    layer = rnnjax.bidirectional(fwd, bwd, merge=merge)
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    (c_f, c_b), ys = layer.apply(params, xs, length=length)

    ref_cf, ys_f = rnnjax.reference_scan(fwd, params["forward"], xs, length=length)
    ref_cb, ys_b = rnnjax.reference_scan(bwd, params["backward"], xs, length=length, reverse=True)
    want = {
        "concat": jnp.concatenate([ys_f, ys_b], -1),
        "sum": ys_f + ys_b,
        "mean": (ys_f + ys_b) / 2,
    }[merge]
    np.testing.assert_allclose(ys, want, atol=1e-6)
    assert_trees_close((c_f, c_b), (ref_cf, ref_cb))
    assert layer.output_size == want.shape[-1]


def test_vmap_over_lengths_equals_per_example_calls():
    layer = rnnjax.stack(rnnjax.bidirectional(rnnjax.gru(4)), rnnjax.recurrent(rnnjax.lstm(3)))
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (4, T, I))
    lengths = jnp.array([6, 1, 3, 0])
    finals, ys = jax.jit(jax.vmap(lambda x, n: layer.apply(params, x, length=n)))(xs, lengths)
    one = jax.jit(lambda x, n: layer.apply(params, x, length=n))
    for b in range(4):
        final_b, ys_b = one(xs[b], int(lengths[b]))
        np.testing.assert_allclose(ys[b], ys_b, atol=1e-6)
        assert_trees_close(jax.tree.map(lambda a: a[b], finals), final_b)
        np.testing.assert_array_equal(ys[b, int(lengths[b]) :], 0.0)


def test_stack_threads_outputs_through_layers():
    l1, l2 = rnnjax.recurrent(rnnjax.elman(4)), rnnjax.recurrent(rnnjax.gru(5), reverse=True)
    layer = rnnjax.stack(l1, l2)
    params = layer.init(jax.random.key(0), I)
    assert params[1]["w_ih"].shape == (4, 15)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    finals, ys = layer.apply(params, xs, length=5)
    f1, h1 = rnnjax.reference_scan(rnnjax.elman(4), params[0], xs, length=5)
    f2, h2 = rnnjax.reference_scan(rnnjax.gru(5), params[1], h1, length=5, reverse=True)
    np.testing.assert_allclose(ys, h2, atol=1e-6)
    assert_trees_close(finals, [f1, f2])


def test_stack_dropout_only_in_training_and_needs_a_key():
    layer = rnnjax.stack(
        rnnjax.recurrent(rnnjax.lstm(8)), rnnjax.recurrent(rnnjax.lstm(8)), dropout=0.5
    )
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    _, eval_ys = layer.apply(params, xs)
    _, no_drop = rnnjax.stack(
        rnnjax.recurrent(rnnjax.lstm(8)), rnnjax.recurrent(rnnjax.lstm(8))
    ).apply(params, xs)
    np.testing.assert_array_equal(eval_ys, no_drop)
    with pytest.raises(ValueError, match="key"):
        layer.apply(params, xs, train=True)
    _, a = layer.apply(params, xs, train=True, key=jax.random.key(2))
    _, b = layer.apply(params, xs, train=True, key=jax.random.key(3))
    assert not np.allclose(a, b) and not np.allclose(a, eval_ys)


def test_gradients_of_a_bidirectional_stack():
    layer = rnnjax.stack(
        rnnjax.bidirectional(rnnjax.lstm(3)), rnnjax.bidirectional(rnnjax.gru(2), merge="sum")
    )
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (5, I))

    @jax.jit
    def loss(p, x):
        _, ys = layer.apply(p, x, length=4)
        return jnp.sum(jnp.sin(ys))

    check_grads(loss, (params, xs), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)
