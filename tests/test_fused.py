"""The fast path (rnnjax.fused) against the reference: cell.step in lax.scan.

The reference is rnnjax.scan, which runs cell.step step by step and is itself tested against
a Python loop and PyTorch in test_scan.py/test_interop.py. Gradients of the fast path (a
custom VJP) are also checked against central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import fused

T, I, H, B = 7, 3, 4, 3

CELLS = {
    "lstm": rnnjax.lstm(H),
    "gru": rnnjax.gru(H),
    "elman-relu-nobias": rnnjax.elman(H, "relu", use_bias=False),
}


def _inputs(name):
    cell = CELLS[name]
    params = cell.init(jax.random.key(0), I)
    # nonzero biases so that the bias folding is exercised
    params = {k: v + 0.1 * jax.random.normal(jax.random.key(5), v.shape) for k, v in params.items()}
    if name.startswith("elman"):  # keep the ReLU RNN from blowing up over T steps
        params = {k: 0.5 * v for k, v in params.items()}
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    carry = jax.tree.map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(2), (B,) + a.shape),
        cell.initial_carry(params),
    )
    lengths = jnp.array([T, 4, 0])
    return cell, params, xs, carry, lengths


def _loss(run, cell, params, xs, carry, lengths, reverse, masked):
    """Returns a scalar reading every output and the final carry, batched with vmap."""

    def one(x, c, n):
        final, ys = run(cell, params, x, carry=c, length=n if masked else None, reverse=reverse)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final))

    return jnp.sum(jax.vmap(one)(xs, carry, lengths))


def _fused(**options):
    return lambda cell, params, xs, **kw: fused.scan(cell, params, xs, impl="fused", **kw, **options)


def _close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


# The loop layouts the backends use by default: on CPU the input projection is in the loop
# and the loop is rolled; on GPU/TPU the projection is one matmul before the loop and the
# loop is unrolled 4 steps per iteration (4 does not divide T = 7: a remainder too).
LAYOUTS = {"cpu": (False, 1), "gpu": (True, 4)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(CELLS))
def test_values_and_gradients_match_reference(name, layout, monkeypatch):
    hoist, unroll = LAYOUTS[layout]
    monkeypatch.setattr(fused, "HOIST_INPUT", hoist)
    cell, params, xs, carry, lengths = _inputs(name)
    # (reverse, masked, remat): remat=3 does not divide T, so it also tests the padding
    for reverse, masked, remat in ((False, False, None), (True, True, None), (False, True, 3)):
        grad = lambda run: jax.jit(jax.value_and_grad(
            lambda p, x, c: _loss(run, cell, p, x, c, lengths, reverse, masked), (0, 1, 2)
        ))(params, xs, carry)
        _close(grad(_fused(remat=remat, unroll=unroll)), grad(rnnjax.scan))


def test_default_layout_of_the_backend():
    assert fused.HOIST_INPUT is None  # tests that change it restore it
    on_cpu = jax.default_backend() == "cpu"
    assert fused._hoist_input() is not on_cpu
    assert fused.default_unroll() == (1 if on_cpu else 4)


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_elman_backward_for_each_activation_matches_reference(activation):
    # the fast path writes act'(z) per activation by hand (relu is covered above)
    cell = rnnjax.elman(H, activation)
    params = {k: 0.5 * v for k, v in cell.init(jax.random.key(0), I).items()}
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    grad = lambda run: jax.grad(
        lambda p, x: jnp.sum(jnp.sin(jax.vmap(lambda s: run(cell, p, s)[1])(x))), (0, 1)
    )(params, xs)
    _close(grad(_fused()), grad(rnnjax.scan))


def test_outputs_match_reference_per_step():
    cell, params, xs, carry, lengths = _inputs("lstm")
    x, c = xs[1], jax.tree.map(lambda a: a[1], carry)
    want_final, want_ys = rnnjax.scan(cell, params, x, carry=c, length=4, reverse=True)
    got_final, got_ys = fused.scan(cell, params, x, carry=c, length=4, reverse=True, impl="fused")
    _close((got_final, got_ys), (want_final, want_ys), 1e-6)
    np.testing.assert_array_equal(np.asarray(got_ys[4:]), 0.0)  # padding emits zeros


def test_gradient_matches_finite_differences():
    cell, params, xs, carry, lengths = _inputs("gru")
    loss = lambda p: _loss(_fused(), cell, p, xs, carry, lengths, False, True)
    grads = jax.grad(loss)(params)
    eps = 1e-2
    for name in ("w_hh", "b_hh", "w_ih"):
        direction = jax.random.normal(jax.random.key(3), params[name].shape)
        shift = lambda s: {**params, name: params[name] + s * direction}
        numeric = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
        analytic = jnp.vdot(grads[name], direction)
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-3, atol=2e-3)


def test_remat_sqrt_matches_no_remat_and_reference_cells_fall_back():
    cell, params, xs, carry, lengths = _inputs("elman-relu-nobias")
    x = jnp.concatenate([xs[0]] * 3)  # T = 21, segments of ceil(sqrt(21)) = 5
    run = lambda p, **kw: fused.scan(cell, p, x, length=17, **kw)[1]
    want = jax.grad(lambda p: jnp.sum(run(p, impl="reference") ** 2))(params)
    _close(jax.grad(lambda p: jnp.sum(run(p, remat="sqrt") ** 2))(params), want)
    _close(jax.grad(lambda p: jnp.sum(run(p, impl="reference", remat="sqrt") ** 2))(params), want)
    # a cell without a fast path: impl="auto" falls back to cell.step, "fused" refuses
    gru_before = rnnjax.gru(H, reset_after=False)
    p = gru_before.init(jax.random.key(0), I)
    assert not fused.supports(gru_before) and fused.supports(cell)
    _close(fused.scan(gru_before, p, x, remat=4), rnnjax.scan(gru_before, p, x))
    with pytest.raises(ValueError, match="impl='fused'"):
        fused.scan(gru_before, p, x, impl="fused")


def test_layers_use_the_fast_path_with_the_same_results():
    cell, params, xs, carry, lengths = _inputs("lstm")
    bi = lambda impl: rnnjax.bidirectional(cell, impl=impl)
    p = bi("reference").init(jax.random.key(4), I)
    loss = lambda impl: lambda p: jnp.sum(
        jax.vmap(lambda x, n: bi(impl).apply(p, x, length=n)[1])(xs, lengths) ** 2
    )
    _close(jax.value_and_grad(loss("fused"))(p), jax.value_and_grad(loss("reference"))(p))
    layer = rnnjax.recurrent(cell, reverse=True, remat=2)
    _close(layer.apply(params, xs[0]), rnnjax.scan(cell, params, xs[0], reverse=True))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="remat"):
        rnnjax.recurrent(CELLS["lstm"], remat=0)
    with pytest.raises(ValueError, match="impl"):
        rnnjax.recurrent(CELLS["lstm"], impl="cudnn")
