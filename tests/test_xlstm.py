"""The sLSTM and mLSTM of xLSTM (Beck et al. 2024): their steps against NumPy loops of the
paper's equations (without the stabiliser, in float64, at input gates that overflow float32),
their initialisation against the reference code, every path (layers, models, Flax modules,
``fit``, the fast path, the associative scan) against the reference scan with NaN padding,
float64 finite differences, and the diagnostics against autodiff of a plain loop.

Tolerances: float32 against float64 NumPy to 2e-5 relative; two float32 paths (a different
summation order) to 1e-5.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from finite_differences import assert_gradient_matches
from paths import I, assert_impl_equals_reference, paths
from random_params import random_params

import rnnjax
from rnnjax import diagnostics
from rnnjax._src import xlstm

B, T, H = 3, 6, 4
CELLS = {
    "slstm": lambda: rnnjax.slstm(H),  # one head: dense R, the gated form's fast path
    "slstm-heads": lambda: rnnjax.slstm(H, num_heads=2),  # block-diagonal R, run as written
    "mlstm": lambda: rnnjax.mlstm(H),
    "mlstm-heads": lambda: rnnjax.mlstm(H, num_heads=2),
}
# The loop each cell's layers run: the fast path, the reference, or the associative scan.
IMPL = {
    "slstm": "fused",
    "slstm-heads": "reference",
    "mlstm": "parallel",
    "mlstm-heads": "parallel",
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def slstm_numpy(params, xs, num_heads):
    """Returns (ys, (c, n), ms): the sLSTM of the paper, unstabilised, in float64, and the
    stabiliser m_t = max(log f_t + m_{t-1}, ĩ_t) (m_1 = ĩ_1) the paper carries beside it."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    d = H // num_heads
    if num_heads == 1:
        r = p["w_hh"]
    else:  # block-diagonal R: head k's h_k feeds gate g of head k's units
        r = np.zeros((H, 4 * H))
        for k in range(num_heads):
            for g in range(4):
                block = p["w_hh"][k][:, g * d : (g + 1) * d]
                r[k * d : (k + 1) * d, g * H + k * d : g * H + (k + 1) * d] = block
    h, c, n, m = np.zeros(H), np.zeros(H), np.zeros(H), None
    ys = []
    for x in np.asarray(xs, np.float64):
        i_pre, f_pre, z_pre, o_pre = np.split(x @ p["w_ih"] + h @ r + p["b_ih"], 4)
        i, f, z, o = np.exp(i_pre), sigmoid(f_pre), np.tanh(z_pre), sigmoid(o_pre)
        c = f * c + i * z
        n = f * n + i
        h = o * c / n
        m = i_pre if m is None else np.maximum(np.log(f) + m, i_pre)
        ys.append(h)
    return np.stack(ys), (c, n), m


def mlstm_numpy(params, xs, num_heads):
    """Returns (ys, (C, n), m): the mLSTM of the paper, unstabilised, in float64, per head,
    and the stabiliser m_t = max(log f_t + m_{t-1}, ĩ_t) from m_0 = 0."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    d = H // num_heads
    C, n, m = np.zeros((num_heads, d, d)), np.zeros((num_heads, d)), np.zeros(num_heads)
    ys = []
    for x in np.asarray(xs, np.float64):
        i_pre = x @ p["w_i"] + p["b_i"]
        f = sigmoid(x @ p["w_f"] + p["b_f"])
        o = sigmoid(x @ p["W_o"] + p["b_o"])
        q = x @ p["W_q"] + p["b_q"]
        k = x @ p["W_k"] / np.sqrt(d) + p["b_k"]
        v = x @ p["W_v"] + p["b_v"]
        y = np.zeros(H)
        for j in range(num_heads):
            s = slice(j * d, (j + 1) * d)
            C[j] = f[j] * C[j] + np.exp(i_pre[j]) * np.outer(v[s], k[s])
            n[j] = f[j] * n[j] + np.exp(i_pre[j]) * k[s]
            y[s] = o[s] * (C[j] @ q[s]) / max(abs(n[j] @ q[s]), 1.0)
        m = np.maximum(np.log(f) + m, i_pre)
        ys.append(y)
    return np.stack(ys), (C, n), m


def _overflowing_params(name, cell):
    """Random params whose input gates exp(ĩ) leave float32 range both ways (ĩ from -150 to 150:
    at -150 the first step, from the zero state, needs the weight 0 of an empty past)."""
    params = random_params(cell, jax.random.key(0), I)
    if name.startswith("slstm"):
        params["b_ih"] = params["b_ih"].at[:H].add(jnp.linspace(120.0, -150.0, H))
        params["w_ih"] = params["w_ih"].at[:, :H].multiply(20.0)
    else:  # one head's gate is huge, the other's small (the max(|n q|, 1) branch of 1)
        heads = params["b_i"].shape[0]
        params["b_i"] = params["b_i"] + jnp.linspace(120.0, -8.0, heads)
        params["w_i"] = params["w_i"] * 20.0
    return params


@pytest.mark.parametrize("name", sorted(CELLS))
def test_the_step_follows_the_papers_equations_where_exp_overflows_float32(name):
    cell = CELLS[name]()
    heads = 2 if name.endswith("heads") else 1
    params = _overflowing_params(name, cell)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    numpy_loop = slstm_numpy if name.startswith("slstm") else mlstm_numpy
    ys, state, m = numpy_loop(params, xs, heads)
    assert np.max(m) > np.log(np.finfo(np.float32).max)  # unstabilised float32 overflows
    run = jax.jit(lambda impl: rnnjax.scan(cell, params, xs, impl=impl), static_argnums=0)
    for impl in sorted({"reference", IMPL[name]}):
        final, got = run(impl)
        np.testing.assert_allclose(got, ys, rtol=2e-5, atol=1e-6, err_msg=impl)
        if name.startswith("slstm"):
            got_state, got_m = final[1:3], final[3]
        else:
            got_state, got_m = final
        np.testing.assert_allclose(got_m, m, rtol=1e-6, err_msg=impl)
        # the carry is the state scaled by exp(-m): C̃ = C exp(-m)
        for a, b in zip(got_state, state, strict=True):
            scale = np.exp(-np.asarray(got_m, np.float64))
            want = b * scale.reshape(scale.shape + (1,) * (b.ndim - scale.ndim))
            np.testing.assert_allclose(a, want, rtol=2e-5, atol=1e-6, err_msg=impl)


def test_which_loop_runs_each_cell():
    assert rnnjax.scan_path(CELLS["slstm"]()) == "fused"
    assert rnnjax.scan_path(CELLS["slstm-heads"]()) == "reference"  # h R head by head: as written
    for name in ("mlstm", "mlstm-heads"):
        assert rnnjax.scan_path(CELLS[name](), "parallel") == "parallel"
        assert rnnjax.scan_path(CELLS[name]()) == "reference"  # "auto": not measured faster
    with pytest.raises(ValueError, match="impl='parallel' needs a cell whose step"):
        rnnjax.scan(CELLS["slstm"](), None, jnp.zeros((T, I)), impl="parallel")
    with pytest.raises(ValueError, match="hidden_size must be a multiple of num_heads=3, got 4"):
        rnnjax.mlstm(4, num_heads=3)
    with pytest.raises(ValueError, match="forget_bias must be 'powerlaw' or 'linspace'"):
        rnnjax.slstm(4, forget_bias="chrono")


def test_an_edited_mlstm_coefficient_moves_the_step_and_the_scan():
    # One definition: the associative scan is derived from the step's own coefficients.
    cell = rnnjax.mlstm(H, num_heads=2)
    params = random_params(cell, jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))

    def doubled(params, x):  # an edited equation: the input gate twice as large
        log_f, i_pre, b = xlstm.mlstm_coefficients(params, x)
        return log_f, i_pre + jnp.log(2.0), b

    edited = cell._replace(step=cell.step._replace(coefficients=doubled))
    want = rnnjax.reference_scan(edited, params, xs)[1]
    parallel = lambda c: rnnjax.recurrent(c, impl="parallel").apply(params, xs)[1]
    np.testing.assert_allclose(parallel(edited), want, rtol=1e-5, atol=1e-6)
    assert np.abs(parallel(cell) - want).max() > 1e-3


def test_initialisation_follows_the_reference_code():
    input_size, heads, d = 50, 400, 5
    m = rnnjax.mlstm(heads * d, num_heads=heads).init(jax.random.key(0), input_size)
    np.testing.assert_allclose(m["b_f"], np.linspace(3.0, 6.0, heads), rtol=1e-6)
    np.testing.assert_allclose(np.std(m["b_i"]), 0.1, rtol=0.1)
    assert not np.any(m["w_i"]) and not np.any(m["w_f"])
    for w in ("W_q", "W_k", "W_v", "W_o"):  # small init, N(0, 2 / (5 I))
        np.testing.assert_allclose(np.std(m[w]), np.sqrt(2 / (5 * input_size)), rtol=0.02)
        assert not np.any(m["b" + w[1:]])
    s = rnnjax.slstm(heads * d, num_heads=heads).init(jax.random.key(0), input_size)
    biases = np.asarray(s["b_ih"]).reshape(4, heads, d)  # gates i, f, z, o; then head, unit
    powerlaw = -(-5.0 + 12.0 * (np.arange(d) / (d - 1)) ** 0.3)  # the reference's expression
    np.testing.assert_allclose(biases[1], np.tile(powerlaw, (heads, 1)), rtol=1e-6, atol=1e-6)
    assert not np.any(biases[[0, 2, 3]]) and not np.any(s["w_hh"])
    assert s["w_hh"].shape == (heads, d, 4 * d)
    np.testing.assert_allclose(np.std(s["w_ih"]), np.sqrt(2 / (5 * input_size)), rtol=0.02)
    one = rnnjax.slstm(8, forget_bias="linspace").init(jax.random.key(0), 3)
    np.testing.assert_allclose(one["b_ih"][8:16], np.linspace(3.0, 6.0, 8), rtol=1e-6)
    assert one["w_hh"].shape == (8, 32)


# Each path once over the cells (compiles dominate the suite's time): a bidirectional layer,
# a reverse layer with remat, models that take a length, both Flax modules, and fit (a
# many-to-one model on a stack of a bidirectional and a forward layer).
# (one_to_many reads only xs[0], NaN for the empty sequence, and takes no length; its decoder
# is encoder_decoder's.) The slow test runs every path and fit on the one-head cells.
PATHS = {
    "mlstm": ("bidirectional",),
    "mlstm-heads": ("recurrent-reverse-remat",),
    "slstm": ("many_to_many", "nnx"),
    "slstm-heads": ("encoder_decoder", "linen"),
}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_path_equals_the_reference_scan_with_nan_padding(name):
    _check_paths(name, PATHS[name], fit=name == "slstm")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlstm", "slstm"])
def test_every_path_equals_the_reference_scan_with_nan_padding(name):
    every = tuple(k for k in paths(CELLS[name]()) if k != "one_to_many")
    _check_paths(name, every, fit=True)


def _check_paths(name, keep, fit):
    # A vmapped batch with lengths T, 2 and 0 whose padding is NaN, against cell.step in
    # lax.scan on zero padding; values and gradients (parameters and inputs): tests/paths.py.
    impl = "auto" if IMPL[name] != "parallel" else "parallel"
    assert_impl_equals_reference(CELLS[name](), keep, impl=impl, batch=B, steps=T, fit=fit)


@pytest.mark.parametrize("name", ["slstm", "slstm-heads", "mlstm-heads"])
def test_gradients_match_finite_differences_in_float64(name):
    # A bidirectional layer on the cell's own loop, with lengths, under jit and vmap.
    with jax.enable_x64(True):
        cell = CELLS[name]()
        layer = rnnjax.bidirectional(cell, impl=IMPL[name])
        params = random_params(layer, jax.random.key(0), 2)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        xs = jax.random.normal(jax.random.key(1), (2, 5, 2), jnp.float64)
        lengths = jnp.array([5, 3])

        @jax.jit
        def loss(p):
            final, ys = jax.vmap(lambda x, n: layer.apply(p, x, length=n))(xs, lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final))

        assert_gradient_matches(loss, params)


def _probed_loop(cell, params, xs, probes):
    """Returns (final, ys) of a Python loop of cell.step with probes[t] added to carry t
    (and to y_t where y_t is the carry's h: the sLSTM)."""
    flat0, unravel = jax.flatten_util.ravel_pytree(cell.initial_carry(params))
    s, ys = flat0, []
    for t in range(xs.shape[0]):
        carry, y = cell.step(params, unravel(s), xs[t])
        s = jax.flatten_util.ravel_pytree(carry)[0] + probes[t]
        ys.append(unravel(s)[0] if cell.kind[0] == "slstm" else y)
    return s, jnp.stack(ys)


@pytest.mark.parametrize("name", ["slstm-heads", "mlstm"])
def test_diagnostics_equal_autodiff_of_a_plain_loop(name):
    cell = CELLS[name]()
    params = random_params(cell, jax.random.key(0), I)
    # input gates small and forget gates open: after the first step the stabiliser follows
    # the forget gate (m' = log f + m), so no step Jacobian is singular along m
    if name.startswith("slstm"):
        params["b_ih"] = params["b_ih"].at[:H].add(-10.0).at[H : 2 * H].add(5.0)
    else:
        params["b_i"], params["b_f"] = params["b_i"] - 10.0, params["b_f"] + 5.0
    xs = jax.random.normal(jax.random.key(1), (T, I))
    size = jax.flatten_util.ravel_pytree(cell.initial_carry(params))[0].size
    zeros = jnp.zeros((T, size))

    def loss(final, ys):
        return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(jax.flatten_util.ravel_pytree(final)[0]))

    want = jax.jit(jax.grad(lambda p: loss(*_probed_loop(cell, params, xs, p))))(zeros)
    got = diagnostics.state_gradients(cell, params, xs, loss)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    jac = jax.jit(jax.jacrev(lambda p: _probed_loop(cell, params, xs, p)[0]))(zeros)  # (n, T, n)
    want = [np.linalg.norm(jac[:, t], 2) for t in range(T)]
    np.testing.assert_allclose(diagnostics.jacobian_norms(cell, params, xs), want, rtol=1e-4)

    # The whole Lyapunov spectrum sums to the mean log |det| of the step Jacobians. From a
    # carry of ones (n > 0, m = 1, so m' = log f + m: no step is singular along m), in
    # float64: the sLSTM's h reads its past through the gates alone, and float32 QR loses
    # directions that contract by ~e^-8 a step.
    with jax.enable_x64(True):
        params, xs = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, xs))
        start = jax.tree.map(jnp.ones_like, cell.initial_carry(params))
        s, unravel = jax.flatten_util.ravel_pytree(start)

        @jax.jit
        def f(u, x):
            return jax.flatten_util.ravel_pytree(cell.step(params, unravel(u), x)[0])[0]

        jacobian = jax.jit(jax.jacfwd(f))
        logdets = []
        for t in range(T):
            logdets.append(np.linalg.slogdet(np.asarray(jacobian(s, xs[t])))[1])
            s = f(s, xs[t])
        spectrum = diagnostics.lyapunov_spectrum(cell, params, xs, carry=start)
        np.testing.assert_allclose(np.sum(spectrum), np.mean(logdets), rtol=1e-6, atol=1e-8)


def test_gradient_flow_of_a_parallel_layer_is_the_reference_layers():
    # Probes ride on the reference loop: a layer asking for the associative scan (or the
    # fast path) is probed through cell.step, with the same labels and numbers.
    xs = jax.random.normal(jax.random.key(1), (T, I))
    for name in ("mlstm", "slstm"):
        cell = CELLS[name]()
        params = random_params(cell, jax.random.key(0), I)
        params = {"forward": params, "backward": params}

        def flow(impl, cell=cell, params=params):
            layer = rnnjax.bidirectional(cell, impl=impl)
            return diagnostics.gradient_flow(
                lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)[1])), params, xs
            )

        got, want = flow(IMPL[name]), flow("reference")
        assert sorted(got) == sorted(want) and len(got) == 2 * len(cell.carry_names)
        for label in want:
            np.testing.assert_allclose(got[label], want[label], rtol=1e-6, err_msg=label)
