"""Gradient-flow diagnostics against brute force: jax.jacrev of Python-unrolled loops, NumPy
QR loops, and the closed form of a linear RNN with W_hh = a·Q."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from random_params import random_params as _random_params

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax._src import spectra

T, I, H = 6, 2, 3

random_params = functools.partial(_random_params, scale=0.6)
CELLS = {"elman": rnnjax.elman(H), "lstm": rnnjax.lstm(H), "gru": rnnjax.gru(H)}


def setup(name, seed=0):
    cell = CELLS[name]
    key = jax.random.PRNGKey(seed)
    params = random_params(cell, key, I)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (T, I))
    carry0 = cell.initial_carry(params)
    flat0, unravel = ravel_pytree(carry0)
    carry = unravel(0.5 * jax.random.normal(jax.random.fold_in(key, 2), flat0.shape))
    return cell, params, xs, carry


def loss_fn(final_carry, ys):
    """Reads both the final carry and every output, nonlinearly."""
    flat, _ = ravel_pytree(final_carry)
    w = jnp.linspace(-1.0, 1.0, flat.size)
    v = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * flat) ** 2 + jnp.sum(v * jnp.sin(ys))


def unrolled(cell, params, xs, carry, length):
    """Returns f(probe) -> (final_carry, ys): a Python loop that adds probe[t] to the state
    h_t leaving step t, whose output is y_t = h_t (the h of an LSTM's (h, c)), and skips
    steps t >= length (padding keeps the carry, emits zeros)."""
    _, unravel = ravel_pytree(carry)

    def f(probe):
        h, ys = carry, []
        for t in range(xs.shape[0]):
            if length is None or t < length:
                h, _ = cell.step(params, h, xs[t])
                h = jax.tree.map(jnp.add, h, unravel(probe[t]))
                y = jax.tree.leaves(h)[0]
            else:
                y = jnp.zeros((cell.hidden_size,))
            ys.append(y)
        return h, jnp.stack(ys)

    return f


def brute_force(cell, params, xs, carry, length):
    """Returns (dL/d state_t (T, n), d state_{T-1} / d state_t (T, n, n)) by one jacrev of
    the unrolled loop."""
    f = unrolled(cell, params, xs, carry, length)
    n = ravel_pytree(carry)[0].size

    def outputs(probe):
        final, ys = f(probe)
        return loss_fn(final, ys), ravel_pytree(final)[0]

    grads, jac = jax.jit(jax.jacrev(outputs))(jnp.zeros((xs.shape[0], n)))
    return grads, np.moveaxis(np.asarray(jac), 1, 0)  # (n_out, T, n_in) -> (T, n_out, n_in)


def brute_step_jacobians(cell, params, xs, carry, length=None):
    """Returns (T, n, n) float64: d state_t / d state_{t-1} by jacfwd along a Python loop."""
    flat, unravel = ravel_pytree(carry)
    step = jax.jit(jax.jacfwd(lambda h, x: ravel_pytree(cell.step(params, unravel(h), x)[0])[0]))
    next_state = jax.jit(lambda h, x: ravel_pytree(cell.step(params, unravel(h), x)[0])[0])
    jacobians = []
    for t in range(xs.shape[0]):
        if length is None or t < length:
            jacobians.append(np.asarray(step(flat, xs[t]), np.float64))
            flat = next_state(flat, xs[t])
        else:
            jacobians.append(np.eye(flat.size))
    return np.stack(jacobians)


def numpy_lyapunov(jacobians):
    """Benettin's QR loop in float64 NumPy, on given (T, n, n) step Jacobians (QR order)."""
    q, log_r = np.eye(jacobians.shape[1]), np.zeros(jacobians.shape[1])
    for j in jacobians:
        q, r = np.linalg.qr(j @ q)
        log_r += np.log(np.abs(np.diag(r)))
    return log_r / len(jacobians)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("length", [None, 4])
def test_state_gradients_and_jacobians_match_brute_force(name, length):
    cell, params, xs, carry = setup(name)
    got = dg.state_gradients(cell, params, xs, loss_fn, carry=carry, length=length)
    want, jac = brute_force(cell, params, xs, carry, length)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if length is not None:
        assert np.all(np.asarray(got[length:]) == 0.0)
    np.testing.assert_allclose(
        spectra.final_state_jacobians(cell, params, xs, carry=carry, length=length), jac, atol=1e-6
    )
    np.testing.assert_allclose(
        dg.jacobian_norms(cell, params, xs, carry=carry, length=length),
        np.linalg.norm(jac, ord=2, axis=(1, 2)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        dg.step_jacobians(cell, params, xs, carry=carry, length=length),
        brute_step_jacobians(cell, params, xs, carry, length),
        rtol=1e-5,
        atol=1e-6,
    )


def test_state_gradients_of_a_cell_whose_output_is_not_its_carry():
    """A user cell emitting y_t = 2 h_t computed apart from the carry: ∂L/∂y_t reaches
    the state through step t's input h_{t-1}, so it enters row t - 1, not row t."""
    base = CELLS["elman"]

    def step(params, h, x):
        h, _ = base.step(params, h, x)
        return h, 2.0 * h

    cell = base._replace(step=step, kind="doubled")
    _, params, xs, carry = setup("elman")

    def reference(probe):
        h, ys = carry, []
        for t in range(T):
            h, _ = base.step(params, h, xs[t])
            ys.append(2.0 * h)  # emitted before the probe: not the probed state
            h = h + probe[t]
        return loss_fn(h, jnp.stack(ys))

    want = jax.jit(jax.grad(reference))(jnp.zeros((T, H)))
    got = dg.state_gradients(cell, params, xs, loss_fn, carry=carry)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_state_gradients_under_jit_and_vmap_with_per_example_length():
    cell, params, _, carry = setup("lstm")
    xs = jax.random.normal(jax.random.PRNGKey(3), (3, T, I))
    lengths = jnp.array([T, 2, 0])
    batched = jax.jit(
        jax.vmap(lambda x, n: dg.state_gradients(cell, params, x, loss_fn, carry=carry, length=n))
    )
    got = batched(xs, lengths)
    for b in range(3):
        want, _ = brute_force(cell, params, xs[b], carry, int(lengths[b]))
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a", [0.9, 1.1])
def test_linear_orthogonal_rnn_is_exact(a):
    """h_t = h_{t-1} (a Q): every Jacobian product has all singular values a^(T-1-t),
    and every Lyapunov exponent is log a."""
    steps, n = 20, 4
    cell = rnnjax.elman(n, "identity", recurrent_init=rnnjax.initializers.orthogonal(a))
    params = cell.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (steps, I))
    powers = a ** (steps - 1 - np.arange(steps))
    u = jnp.array([1.0, -2.0, 0.5, 3.0])
    norms = dg.state_gradient_norms(cell, params, xs, lambda h, ys: jnp.dot(u, ys[-1]))
    np.testing.assert_allclose(norms, powers * np.linalg.norm(u), rtol=1e-4)
    np.testing.assert_allclose(dg.jacobian_norms(cell, params, xs), powers, rtol=1e-4)
    np.testing.assert_allclose(
        dg.jacobian_norms(cell, params, xs, ord="fro"), powers * np.sqrt(n), rtol=1e-4
    )
    np.testing.assert_allclose(dg.lyapunov_spectrum(cell, params, xs), np.log(a), atol=1e-4)
    np.testing.assert_allclose(
        dg.lyapunov_spectrum(cell, params, xs, k=2, reorth_every=3, key=jax.random.PRNGKey(2)),
        np.log(a),
        atol=1e-4,
    )
    np.testing.assert_allclose(spectra.step_singular_values(cell, params, xs), a, rtol=1e-5)
    bound = dg.pascanu_bound(params, cell)
    np.testing.assert_allclose(bound.sigma_max, a, rtol=1e-5)
    assert bool(bound.vanishing) == (a < 1.0)


def random_elman(scale=1.5, seed=0):
    cell = rnnjax.elman(5)
    params = cell.init(jax.random.PRNGKey(seed), I)
    params["w_hh"] = scale * params["w_hh"]
    xs = jax.random.normal(jax.random.PRNGKey(seed + 1), (12, I))
    return cell, params, xs


@pytest.mark.parametrize("length", [None, 9])
def test_lyapunov_spectrum_matches_numpy_qr_loop(length):
    cell, params, xs = random_elman()
    carry = cell.initial_carry(params)
    jacobians = brute_step_jacobians(cell, params, xs, carry, length)[: length or xs.shape[0]]
    want = numpy_lyapunov(jacobians)
    lyap = jax.jit(dg.lyapunov_spectrum, static_argnums=0, static_argnames=("k", "reorth_every"))
    np.testing.assert_allclose(lyap(cell, params, xs, length=length), want, atol=1e-4)
    # Four float32 steps between QRs squeeze the weakest direction by ~e^-8 first, which
    # costs it digits (1% here, and how many depends on how XLA orders the float32 sums);
    # the strong directions are unaffected.
    sparse = lyap(cell, params, xs, length=length, reorth_every=4)
    np.testing.assert_allclose(sparse[:-1], want[:-1], atol=2e-3)
    np.testing.assert_allclose(sparse[-1], want[-1], rtol=0.03)
    np.testing.assert_allclose(lyap(cell, params, xs, length=length, k=2), want[:2], atol=1e-4)
    # The exponents sum to the volume growth rate: log|det(J_T ... J_1)| / T.
    product = np.linalg.multi_dot(jacobians[::-1]) if len(jacobians) > 1 else jacobians[0]
    np.testing.assert_allclose(
        np.sum(want), np.linalg.slogdet(product)[1] / len(jacobians), atol=1e-6
    )


def test_lyapunov_spectrum_under_vmap_with_per_example_length():
    cell, params, xs = random_elman(seed=3)
    batch = jnp.stack([xs, xs[::-1]])
    lengths = jnp.array([12, 7])
    got = jax.jit(jax.vmap(lambda x, n: dg.lyapunov_spectrum(cell, params, x, length=n, k=3)))(
        batch, lengths
    )
    carry = cell.initial_carry(params)
    for b in range(2):
        jacobians = brute_step_jacobians(cell, params, batch[b], carry)[: int(lengths[b])]
        np.testing.assert_allclose(got[b], numpy_lyapunov(jacobians)[:3], atol=1e-4)


def test_weight_spectra_and_pascanu_bound():
    cell, params, xs = random_elman(scale=0.8)
    w = np.asarray(params["w_hh"], np.float64)
    bound = dg.pascanu_bound(params, "tanh")
    np.testing.assert_allclose(bound.sigma_max, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-5)
    assert bound.gamma == 1.0 and bool(bound.vanishing) == (bound.sigma_max < 1.0)
    np.testing.assert_allclose(
        dg.spectral_radius(w), np.max(np.abs(np.linalg.eigvals(w))), rtol=1e-5
    )
    # The bound bounds every step Jacobian's norm.
    step_norms = spectra.step_singular_values(cell, params, xs)[:, 0]
    assert np.all(np.asarray(step_norms) <= float(bound.bound) * (1 + 1e-6))
    assert dg.pascanu_bound(params, "sigmoid").gamma == 0.25

    lstm = rnnjax.lstm(3)
    lp = lstm.init(jax.random.PRNGKey(0), I)
    blocks = spectra.recurrent_matrices(lp)
    assert blocks.shape == (4, 3, 3)
    np.testing.assert_array_equal(blocks[1], lp["w_hh"][:, 3:6])  # the forget gate's block
    np.testing.assert_allclose(
        spectra.largest_singular_value(blocks),
        [np.linalg.norm(np.asarray(lp["w_hh"][:, 3 * g : 3 * g + 3]), 2) for g in range(4)],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="Elman"):
        dg.pascanu_bound(lp, lstm)
    with pytest.raises(ValueError, match="activation"):
        dg.pascanu_bound(params, "softplus")


def test_gradient_flow_hook_of_one_cell_records_norms_and_ratio():
    # The one hook, on one cell: its loss runs rnnjax.scan (label "scan") and reads the
    # final state through a readout kept in the training state beside the cell's params.
    from typing import NamedTuple

    class State(NamedTuple):
        params: dict
        readout: jnp.ndarray

    cell, params, _ = random_elman(scale=1.0)
    xs = jax.random.normal(jax.random.PRNGKey(5), (3, 12, I))
    lengths = jnp.array([12, 6, 9])
    state = State(params, jnp.arange(5.0))

    def loss(h, ys, w):
        return jnp.dot(w, h) ** 2

    def cell_loss(p, x, n):
        cell_params, w = p
        return loss(*rnnjax.scan(cell, cell_params, x, length=n), w)

    hook = dg.gradient_flow_hook(
        cell_loss, (xs, lengths), get_params=lambda s: (s.params, s.readout)
    )
    out = hook(state)
    assert set(out) == {"gradient_flow/scan", "gradient_ratio/scan"}
    norms = [
        np.asarray(
            dg.state_gradient_norms(
                cell,
                params,
                xs[b],
                lambda h, ys: loss(h, ys, state.readout),
                length=int(lengths[b]),
            )
        )
        for b in range(3)
    ]
    # step t averaged over the examples in which it is valid (padded rows left out)
    want = [np.mean([g[t] for g, m in zip(norms, lengths) if t < m]) for t in range(12)]
    np.testing.assert_allclose(out["gradient_flow/scan"], want, rtol=1e-5)
    ratios = [n[0] / n[int(m) - 1] for n, m in zip(norms, lengths)]
    np.testing.assert_allclose(out["gradient_ratio/scan"], np.mean(ratios), rtol=1e-5)
    assert isinstance(out["gradient_ratio/scan"], float)

    class RunsState(NamedTuple):  # two runs stacked, as a vmapped training state
        params: dict
        readout: jnp.ndarray
        step: jnp.ndarray

    runs = RunsState(
        jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params),
        jnp.stack([state.readout, state.readout]),
        jnp.zeros((2,), jnp.int32),
    )
    out_runs = hook(runs)
    assert out_runs["gradient_flow/scan"].shape == (2, 12)
    np.testing.assert_allclose(
        out_runs["gradient_flow/scan"][0], out["gradient_flow/scan"], rtol=1e-5
    )
    np.testing.assert_allclose(
        out_runs["gradient_ratio/scan"][0], out["gradient_ratio/scan"], rtol=1e-5
    )
    half = hook(State(jax.tree.map(lambda a: 0.5 * a, params), state.readout))
    np.testing.assert_allclose(
        out_runs["gradient_flow/scan"][1], half["gradient_flow/scan"], rtol=1e-5
    )


def test_state_gradients_bad_input_raises():
    cell, params, xs, _ = setup("elman")
    with pytest.raises(ValueError, match="xs"):
        dg.state_gradients(cell, params, xs[None], loss_fn)
    with pytest.raises(TypeError, match="loss_fn"):
        dg.state_gradients(cell, params, xs, None)
    with pytest.raises(TypeError, match="cell"):
        dg.state_gradients(params, params, xs, loss_fn)
    with pytest.raises(ValueError, match="k must"):
        dg.lyapunov_spectrum(cell, params, xs, k=H + 1)
    with pytest.raises(ValueError, match="reorth_every"):
        dg.lyapunov_spectrum(cell, params, xs, reorth_every=0)
    with pytest.raises(ValueError, match="ord"):
        dg.jacobian_norms(cell, params, xs, ord=1)
