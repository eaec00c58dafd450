"""The fast path (rnnjax.scan's "fused" loop) against the reference: cell.step in lax.scan.

The reference is rnnjax.reference_scan, which runs cell.step step by step and is itself tested against
a Python loop and PyTorch in test_scan.py/test_interop.py. Gradients of the fast path (a
custom VJP) are also checked against central finite differences.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._src import fused

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
    return lambda cell, params, xs, **kw: rnnjax.scan(
        cell, params, xs, impl="fused", **kw, **options
    )


def _close(a, b, tol=1e-5):
    # chex names the leaf that differs (e.g. the w_hh gradient), and checks the structure too
    chex.assert_trees_all_close(a, b, rtol=tol, atol=tol)


# The loop layouts the backends use by default: on CPU the input projection is in the loop
# and the loop is rolled; on GPU/TPU the projection is one matmul before the loop and the
# loop is unrolled 4 steps per iteration (4 does not divide T = 7: a remainder too).
LAYOUTS = {"cpu": (False, 1), "gpu": (True, 4)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(CELLS))
def test_values_and_gradients_match_reference(name, layout):
    hoist, unroll = LAYOUTS[layout]
    cell, params, xs, carry, lengths = _inputs(name)
    # (reverse, masked, remat): remat=3 does not divide T, so it also tests the padding
    for reverse, masked, remat in ((False, False, None), (True, True, None), (False, True, 3)):
        grad = lambda run: jax.jit(
            jax.value_and_grad(
                lambda p, x, c: _loss(run, cell, p, x, c, lengths, reverse, masked), (0, 1, 2)
            )
        )(params, xs, carry)
        _close(
            grad(_fused(remat=remat, unroll=unroll, hoist_input=hoist)), grad(rnnjax.reference_scan)
        )


def test_default_layout_of_the_backend():
    on_cpu = jax.default_backend() == "cpu"
    assert fused._hoist_input(None) is not on_cpu
    assert fused._hoist_input(True) and not fused._hoist_input(False)
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
    _close(grad(_fused()), grad(rnnjax.reference_scan))


class OutputsPerStep(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_outputs_match_reference_per_step(self):
        cell, params, xs, carry, _lengths = _inputs("lstm")
        x, c = xs[1], jax.tree.map(lambda a: a[1], carry)
        kw = dict(carry=c, length=4, reverse=True)
        want_final, want_ys = self.variant(lambda p: rnnjax.reference_scan(cell, p, x, **kw))(
            params
        )
        got_final, got_ys = self.variant(lambda p: rnnjax.scan(cell, p, x, impl="fused", **kw))(
            params
        )
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
    cell, params, xs, _carry, _lengths = _inputs("elman-relu-nobias")
    x = jnp.concatenate([xs[0]] * 3)  # T = 21, segments of ceil(sqrt(21)) = 5
    run = lambda p, **kw: rnnjax.scan(cell, p, x, length=17, **kw)[1]
    want = jax.grad(lambda p: jnp.sum(run(p, impl="reference") ** 2))(params)
    _close(jax.grad(lambda p: jnp.sum(run(p, remat="sqrt") ** 2))(params), want)
    _close(jax.grad(lambda p: jnp.sum(run(p, impl="reference", remat="sqrt") ** 2))(params), want)
    # a cell without a fast path: impl="auto" falls back to cell.step, "fused" refuses
    gru_before = rnnjax.gru(H, reset_after=False)
    p = gru_before.init(jax.random.key(0), I)
    assert rnnjax.scan_path(gru_before) == "reference" and rnnjax.scan_path(cell) == "fused"
    _close(rnnjax.scan(gru_before, p, x, remat=4), rnnjax.reference_scan(gru_before, p, x))
    with pytest.raises(ValueError, match="impl='fused'"):
        rnnjax.scan(gru_before, p, x, impl="fused")


def test_layers_use_the_fast_path_with_the_same_results():
    cell, params, xs, _carry, lengths = _inputs("lstm")
    bi = lambda impl: rnnjax.bidirectional(cell, impl=impl)
    p = bi("reference").init(jax.random.key(4), I)
    loss = lambda impl: (
        lambda p: jnp.sum(
            jax.vmap(lambda x, n: bi(impl).apply(p, x, length=n)[1])(xs, lengths) ** 2
        )
    )
    _close(jax.value_and_grad(loss("fused"))(p), jax.value_and_grad(loss("reference"))(p))
    layer = rnnjax.recurrent(cell, reverse=True, remat=2)
    _close(layer.apply(params, xs[0]), rnnjax.reference_scan(cell, params, xs[0], reverse=True))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="remat"):
        rnnjax.recurrent(CELLS["lstm"], remat=0)
    with pytest.raises(ValueError, match="impl"):
        rnnjax.recurrent(CELLS["lstm"], impl="cudnn")


# ------------------------------------------------------------ one definition of each equation


def minimal_gated_unit(hidden_size):
    """The MGU of Zhou et al. (2016), written from scratch in the gated form: 2 gate blocks."""
    h_size = hidden_size

    def update(h, gi, gh):
        f = jax.nn.sigmoid(gi[..., :h_size] + gh[..., :h_size])
        n = jnp.tanh(gi[..., h_size:] + f * gh[..., h_size:])
        return (1.0 - f) * h + f * n

    return rnnjax.gated(hidden_size, 2, update, kind="mgu")


def test_a_users_gated_cell_takes_the_fast_path_and_matches_the_reference():
    cell = minimal_gated_unit(H)
    assert rnnjax.scan_path(cell) == "fused"
    params = cell.init(jax.random.key(0), I)
    params = {k: v + 0.1 * jax.random.normal(jax.random.key(5), v.shape) for k, v in params.items()}
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    lengths = jnp.array([T, 4, 0])
    carry = 0.5 * jax.random.normal(jax.random.key(2), (B, H))
    for reverse in (False, True):
        loss = lambda run: jax.jit(
            jax.value_and_grad(
                lambda p, x, c: _loss(run, cell, p, x, c, lengths, reverse, True), (0, 1, 2)
            )
        )(params, xs, carry)
        _close(loss(_fused()), loss(rnnjax.reference_scan))
    # the fast path really ran: its VJP is a custom one, the reference's is not
    jaxpr = str(jax.make_jaxpr(lambda p: rnnjax.scan(cell, p, xs[0], impl="auto"))(params))
    assert "custom_vjp_call" in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda p: rnnjax.scan(cell, p, xs[0], impl="reference"))(params))
    assert "custom_vjp_call" not in jaxpr


@pytest.mark.parametrize(
    "update", sorted(fused._HAND_WRITTEN_VJPS, key=lambda f: f.__name__), ids=lambda f: f.__name__
)
def test_hand_written_vjps_equal_autodiff_of_the_update_they_belong_to(update):
    hand = fused._HAND_WRITTEN_VJPS[update]
    cells = [c for c in (rnnjax.lstm(H), rnnjax.gru(H), rnnjax.elman(H)) if c.step.update is update]
    assert cells, "every hand-written VJP belongs to a built-in cell"
    eq = cells[0].step
    assert eq.additive
    carry = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(1), a.shape),
        cells[0].initial_carry(cells[0].init(jax.random.key(0), I)),
    )
    num_gates = cells[0].init(jax.random.key(0), I)["w_hh"].shape[1] // H
    z = 2.0 * jax.random.normal(jax.random.key(2), (num_gates * H,))
    d_new = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape), carry)
    dy = jax.random.normal(jax.random.key(4), (H,))

    def forward(c, z):
        new = update(c, z)
        return new, eq.hidden(new)

    _, vjp = jax.vjp(forward, carry, z)
    want_carry, want_z = vjp((d_new, dy))
    got_carry, got_z = hand(carry, z, d_new, dy)
    _close((got_carry, got_z), (want_carry, want_z), 1e-6)


def test_an_update_edited_without_its_derivative_is_caught():
    # The check above fails for a hand-written VJP that no longer matches its update: here
    # the LSTM's derivative paired with an edited LSTM update.
    edited = lambda carry, z: rnnjax._src.cells.lstm_update(carry, 1.5 * z)
    carry = (jnp.ones(H), jnp.ones(H))
    z = jnp.linspace(-1, 1, 4 * H)
    _, vjp = jax.vjp(lambda c, z: (edited(c, z), edited(c, z)[0]), carry, z)
    want = vjp(((jnp.ones(H), jnp.ones(H)), jnp.ones(H)))
    got = fused._lstm_vjp(carry, z, (jnp.ones(H), jnp.ones(H)), jnp.ones(H))
    with pytest.raises(AssertionError):
        _close(got, want, 1e-3)
    # while the fast path, which looks derivatives up by the update itself, uses autodiff
    # for the edited update and stays exact
    cell = rnnjax.lstm(H)
    edited_cell = cell._replace(step=cell.step._replace(update=edited))
    params = edited_cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    grad = lambda run: jax.grad(lambda p: jnp.sum(jnp.sin(run(edited_cell, p, xs, length=5)[1])))(
        params
    )
    _close(grad(_fused()), grad(rnnjax.reference_scan))


@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("masked", [False, True])
def test_bfloat16_fast_path_matches_the_reference(name, masked):
    cell = {"lstm": rnnjax.lstm, "gru": rnnjax.gru, "elman": rnnjax.elman}[name](
        H, param_dtype=jnp.bfloat16
    )
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I)).astype(jnp.bfloat16)
    length = 4 if masked else None

    def grad(run):
        loss = lambda p: jnp.sum(jnp.sin(run(cell, p, xs, length=length)[1].astype(jnp.float32)))
        return jax.value_and_grad(loss)(params)

    got, want = grad(_fused()), grad(rnnjax.reference_scan)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) + 1e-3
        # bfloat16 has 8 bits of mantissa: the two loops round in different places
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), atol=3e-2 * scale, rtol=3e-2
        )


def test_gradients_reach_the_values_an_update_closes_over():
    # An update may close over traced values (a hyperparameter being tuned, an int
    # permutation); the fast path's custom VJP must still give their gradients.
    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    lengths = jnp.array([T, 4, 0])

    def loss(alpha, perm, run):
        upd = cell.step.update
        edited = cell._replace(
            step=cell.step._replace(update=lambda c, z: upd(c, jnp.take(alpha * z, perm)))
        )
        return _loss(
            run,
            edited,
            params,
            xs,
            jax.tree.map(lambda a: jnp.zeros((B,) + a.shape), cell.initial_carry(params)),
            lengths,
            True,
            True,
        )

    perm = jnp.roll(jnp.arange(4 * H), H)
    for run in (_fused(), _fused(remat=3)):
        grad = lambda r: jax.jit(jax.value_and_grad(lambda a: loss(a, perm, r)))(1.3)
        _close(grad(run), grad(rnnjax.reference_scan))
        # and per-example hyperparameters: the closed-over value is batched by vmap
        batched = lambda r: jax.jit(jax.vmap(jax.grad(lambda a: loss(a, perm, r))))(
            jnp.array([0.5, 1.0, 2.0])
        )
        _close(batched(run), batched(rnnjax.reference_scan))
