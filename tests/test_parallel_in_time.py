"""DEER, quasi-DEER and ELK (rnnjax.parallel_in_time) against the sequential scan.

Newton's method evaluates a nonlinear cell in parallel over time; its answer and its
gradients (a custom VJP: one linear recurrence in the transposed Jacobians) are checked
against ``cell.step`` in ``lax.scan`` and autodiff of it. Tolerances: float32 throughout;
the Newton residual is at most 1e-5 (relative), values and gradients agree to 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from paths import I

import rnnjax
from rnnjax._src import parallel_in_time
from rnnjax._src.registry import CELLS as CELL_SPECS

B, T, H = 3, 7, 3
CELLS = {name: CELL_SPECS[name].make for name in ("elman", "gru", "lstm")}
TOL = dict(rtol=1e-4, atol=1e-4)


def _layer_loss(layer):
    def loss(params, xs, lengths):
        final, ys = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final))

    return loss


# DEER on every cell; quasi-DEER and ELK once or twice (each adds a compile of a
# bidirectional layer's gradient; ELK is also checked below, on a GRU and a chaotic Elman).
METHODS_CHECKED = {
    "elman": ("deer", "elk"),
    "gru": ("deer", "quasi-deer"),
    "lstm": ("deer", "quasi-deer"),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_newton_equals_the_sequential_scan_in_values_and_gradients(name):
    # A bidirectional layer (the reverse direction reverses the valid prefix), vmapped over a
    # batch with lengths T, 2 and 0 whose padding is NaN; gradients with respect to the
    # parameters and the inputs. One jitted program per cell.
    cell = CELLS[name](H)
    params = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape),
        rnnjax.bidirectional(cell).init(jax.random.key(1), I),
    )
    xs = jax.random.normal(jax.random.key(3), (B, T, I))
    lengths = jnp.array([T, 2, 0])
    dirty = jnp.where(jnp.arange(T)[None, :, None] < lengths[:, None, None], xs, jnp.nan)
    impls = ("reference",) + METHODS_CHECKED[name]
    for impl in parallel_in_time.METHODS:
        assert rnnjax.scan_path(cell, impl) == impl

    @jax.jit
    def run(params, xs):
        return {
            impl: jax.value_and_grad(
                _layer_loss(rnnjax.bidirectional(cell, impl=impl)), argnums=(0, 1)
            )(params, xs, lengths)
            for impl in impls
        }

    got = run(params, dirty)
    want = got.pop("reference")
    want_clean = run(params, jnp.nan_to_num(dirty))["reference"]
    for impl in got:
        for a, b, c in zip(
            jax.tree.leaves(got[impl]),
            jax.tree.leaves(want),
            jax.tree.leaves(want_clean),
            strict=True,
        ):
            assert np.all(np.isfinite(a)), impl
            np.testing.assert_allclose(a, c, **TOL, err_msg=impl)
            np.testing.assert_allclose(b, c, **TOL, err_msg=impl)


def test_deer_makes_one_more_step_exact_per_iteration():
    # Lim et al. 2024: Newton from any guess is exact at step t after t + 1 updates, so DEER
    # converges in at most T updates (and the report counts them); quasi-DEER and ELK reach
    # the same trajectory. Against the sequential scan, with a length and reverse.
    cell = rnnjax.gru(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (12, I))

    @jax.jit
    def run(params, xs):
        want = rnnjax.reference_scan(cell, params, xs, length=10, reverse=True)
        got = {
            m: parallel_in_time.evaluate(cell, params, xs, method=m, length=10, reverse=True)
            for m in parallel_in_time.METHODS
        }
        # stopped after k updates: the residual of iterate k, by a loop that ran k times only
        stopped = [
            parallel_in_time.evaluate(
                cell, params, xs, method="quasi-deer", length=10, reverse=True, max_iter=k
            )[2].residual
            for k in (1, 2)
        ]
        return want, got, stopped

    want, got, stopped = run(params, xs)
    for method, (final, ys, report) in got.items():
        np.testing.assert_allclose(ys, want[1], **TOL, err_msg=method)
        np.testing.assert_allclose(final, want[0], **TOL, err_msg=method)
        assert bool(report.converged) and not bool(report.fell_back), method
        assert float(report.residual) <= 1e-5
        # the history: every iterate before the last above tol, the last one the residual
        k = int(report.iterations)
        assert report.residuals.shape == (101,)
        assert np.all(report.residuals[:k] > 1e-5), method
        assert float(report.residuals[k]) == float(report.residual)
        assert np.all(np.isnan(report.residuals[k + 1 :])), method
    assert 1 <= int(got["deer"][2].iterations) <= 12
    residuals = got["quasi-deer"][2].residuals
    assert int(got["quasi-deer"][2].iterations) > 2
    np.testing.assert_allclose([residuals[1], residuals[2]], stopped, rtol=1e-6)


def _chaotic_elman():
    # An Elman cell with recurrent gain 3 (chaotic; Sompolinsky et al. 1988): undamped Newton's
    # linear recurrences multiply Jacobians of norm ~3 and overflow over a long sequence.
    cell = rnnjax.elman(8)
    params = cell.init(jax.random.key(0), 2)
    w_hh = 3.0 * jax.random.normal(jax.random.key(3), params["w_hh"].shape) / np.sqrt(8)
    xs = jax.random.normal(jax.random.key(1), (CHAOTIC_T, 2))
    return cell, {**params, "w_hh": w_hh}, xs


CHAOTIC_T = 300


def test_undamped_newton_diverges_on_a_chaotic_cell_and_elk_converges():
    cell, params, xs = _chaotic_elman()

    @jax.jit
    def run(params, xs):
        want = rnnjax.reference_scan(cell, params, xs)[1]
        no_fallback = {
            m: parallel_in_time.evaluate(cell, params, xs, method=m, max_iter=CHAOTIC_T)
            for m in parallel_in_time.METHODS
        }
        return want, no_fallback

    want, got = run(params, xs)
    for method in ("deer", "quasi-deer"):
        _, ys, report = got[method]
        assert not bool(report.converged), method
        assert bool(report.fell_back), method
        np.testing.assert_allclose(ys, want, **TOL, err_msg=method)  # the sequential fallback
    _, ys, report = got["elk"]
    assert bool(report.converged) and not bool(report.fell_back)
    assert int(report.iterations) < CHAOTIC_T
    np.testing.assert_allclose(ys, want, **TOL)

    # on_failure="raise": a run-time error, through rnnjax.checked
    def raising(params, xs):
        return parallel_in_time.evaluate(
            cell, params, xs, method="quasi-deer", max_iter=5, on_failure="raise"
        )[1]

    with pytest.raises(rnnjax.InvalidValueError, match="quasi-deer did not converge in 5"):
        rnnjax.checked(jax.jit(raising))(params, xs)
    with pytest.raises(ValueError, match=r"rnnjax.checked"):
        raising(params, xs)


def test_a_closed_over_value_gets_its_gradient_through_the_newton_solve():
    # A gated cell whose update closes over a traced scale: the solve's custom VJP takes it
    # as an input (closure conversion), so its gradient is that of the sequential scan.
    def loss(scale, impl):
        cell = rnnjax.gated(H, 1, lambda h, z: jnp.tanh(scale * z), additive=True)
        params = cell.init(jax.random.key(0), I)
        xs = jax.random.normal(jax.random.key(1), (5, I))
        return jnp.sum(jnp.sin(rnnjax.recurrent(cell, impl=impl).apply(params, xs)[1]))

    grads = jax.jit(lambda s: [jax.grad(loss)(s, impl) for impl in ("reference", "quasi-deer")])(
        1.3
    )
    assert abs(float(grads[0])) > 1e-3
    np.testing.assert_allclose(grads[1], grads[0], **TOL)


def test_newton_options_are_checked():
    with pytest.raises(ValueError, match="method must be one of"):
        parallel_in_time.check_newton(parallel_in_time.Newton("newton"))
    with pytest.raises(ValueError, match="damping must be > 0, got 0"):
        rnnjax.recurrent(rnnjax.gru(2), impl=parallel_in_time.Newton("elk", damping=0))
    with pytest.raises(ValueError, match="impl must be"):
        rnnjax.recurrent(rnnjax.gru(2), impl="newton")
    cell = rnnjax.lru(2)
    with pytest.raises(TypeError, match="real floating carry, got dtype complex64"):
        parallel_in_time.evaluate(cell, cell.init(jax.random.key(0), 1), jnp.ones((3, 1)))


def test_an_overflowed_iterate_is_never_reported_converged():
    # Regression: on this chaotic Elman (gain 3, T=1000), DEER's first update overflows to an
    # all-NaN trajectory, whose residual XLA:CPU's max reduction returned as -inf, which
    # passed `<= tol`: converged, no fallback, NaN outputs. Now the residual is NaN, the run
    # is reported unconverged and falls back to the sequential scan (the reference here).
    cell = rnnjax.elman(8)
    params = cell.init(jax.random.key(5), 2)
    params = {**params, "w_hh": 3.0 * jax.random.normal(jax.random.key(6), (8, 8)) / np.sqrt(8)}
    xs = jax.random.normal(jax.random.key(7), (1000, 2))
    run = jax.jit(
        lambda p, x: (
            rnnjax.reference_scan(cell, p, x)[1],
            parallel_in_time.evaluate(cell, p, x, method="deer"),
        )
    )
    want, (_, ys, report) = run(params, xs)
    assert not bool(report.converged) and bool(report.fell_back)
    assert np.isnan(float(report.residual))
    np.testing.assert_allclose(ys, want, **TOL)
