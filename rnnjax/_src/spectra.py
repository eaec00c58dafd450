"""Jacobians, singular values and Lyapunov spectra of recurrent loops.

:func:`jacobian_norms` and :func:`lyapunov_spectrum` take a model's loss and its arguments
(``fn, *args``: every loop inside, labelled as :func:`rnnjax.diagnostics.gradient_flow` labels
them, each driven by the inputs it reads inside the model) or one cell (``cell, params, xs``:
the one loop of ``rnnjax.scan(cell, params, xs)``). The per-step quantities
(:func:`step_jacobians`, :func:`final_state_jacobians`) act on one cell. Conventions (the
flattened state, padding, one sequence at a time) are those of :mod:`rnnjax.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax._src import householder, padding, probes
from rnnjax._src.cells import ELMAN_UPDATES, Cell, GatedStep
from rnnjax._src.diagnostics import _check_cell, _probed_run, loops, on_one_cell
from rnnjax._src.scan import check_inputs, initial_carry, scan

Array = jax.Array


def jacobian_norms(
    fn_or_cell: Any,
    *args: Any,
    ord: int | str = 2,
    carry: Any = None,
    length: Any = None,
) -> Any:
    """Returns ||d state_last / d state_t|| for every step ``t``: per loop of a model, or of one cell.

    ``jacobian_norms(fn, *args)`` returns ``{label: (T,)}`` for every loop inside
    ``fn(*args)`` (labels of :func:`rnnjax.diagnostics.gradient_flow`; each loop measured on
    the inputs it reads there, in the order it reads them). ``jacobian_norms(cell, params,
    xs, carry=None, length=None)`` returns ``(T,)`` for the one loop of
    ``rnnjax.scan(cell, params, xs, carry=carry, length=length)``.

    For a linear RNN h_t = h_{t-1} (a Q) with Q orthogonal this is a^(T-1-t). The Jacobians
    come from :func:`final_state_jacobians` (``n`` vector-Jacobian products); ``ord=2`` takes
    their largest singular value, ``ord="fro"`` their Frobenius norm. Entries ``t >= length``
    are zero.
    """
    if on_one_cell("jacobian_norms", fn_or_cell, args, "params, xs", carry, length):
        params, xs = args
        return _jacobian_norms(_loop_of(fn_or_cell, params, xs, carry, length), ord)
    return layer_jacobian_norms(fn_or_cell, *args, ord=ord)


def lyapunov_spectrum(
    fn_or_cell: Any,
    *args: Any,
    k: int | None = None,
    reorth_every: int = 1,
    key: Array | None = None,
    carry: Any = None,
    length: Any = None,
) -> Any:
    """Returns the top-``k`` Lyapunov exponents (nats per step): per loop of a model, or of one cell.

    ``lyapunov_spectrum(fn, *args)`` returns ``{label: (k,)}`` for every loop inside
    ``fn(*args)``, each cell driven by the inputs it reads there (``k`` capped at each state's
    size); ``lyapunov_spectrum(cell, params, xs, carry=None, length=None)`` returns ``(k,)``
    for the input-driven cell.

    The QR method of Benettin et al. (1980), as Engelken, Wolf & Abbott (2020) apply it to
    RNNs: an orthonormal basis Q (n, k) is pushed through the step Jacobians,
    J_t Q_{t-1} = Q_t R_t (with ``jax.jvp``, no dense Jacobian), re-orthonormalised every
    ``reorth_every`` steps, and

        λ_i = (1 / T) Σ_t log |(R_t)_{ii}|,

    in the order of the QR decomposition, which converges to descending order as T grows
    (for short T it may not be sorted, and the top-``k`` exponents are the first ``k`` of the
    full spectrum only in this order). Steps ``t >= length`` are skipped and T is the number
    of valid steps. For a linear RNN with W_hh = a Q every exponent is log a.

    Args:
      k: number of exponents, ``1 <= k <= n`` (default ``n``).
      reorth_every: steps between QR decompositions (products of a few steps stay finite).
      key: draws a random initial basis; by default the first ``k`` unit vectors. Pass a
        key for cells whose step Jacobian can be singular along a unit vector (ReLU units
        that switch off, as in an IRNN): a zero diagonal entry of R gives an exponent of
        -inf for that direction and the basis loses its order.
    """
    if on_one_cell("lyapunov_spectrum", fn_or_cell, args, "params, xs", carry, length):
        params, xs = args
        return _lyapunov(_loop_of(fn_or_cell, params, xs, carry, length), k, reorth_every, key)
    return layer_lyapunov_spectra(fn_or_cell, *args, k=k, reorth_every=reorth_every, key=key)


def _forward_inputs(loop: probes.Loop) -> Array:
    """Returns the loop's inputs in the order it reads them (a backward direction reversed)."""
    return padding.reverse_valid(loop.xs, loop.length) if loop.reverse else loop.xs


def _loop_of(cell: Cell, params: Any, xs: Array, carry: Any, length: Any) -> probes.Loop:
    """Returns the one loop of ``rnnjax.scan(cell, params, xs, ...)``, its inputs checked."""
    _check_cell(cell)
    check_inputs(cell, params, xs)
    return probes.Loop(cell, params, xs, carry, length, reverse=False)


def layer_lyapunov_spectra(
    fn: Callable[..., Any],
    *args: Any,
    k: int | None = None,
    reorth_every: int = 1,
    key: Array | None = None,
) -> dict[str, Array]:
    """Returns ``{label: (k,)}``: the Lyapunov spectrum of every loop in ``fn(*args)``.

    Each loop's cell is driven by the inputs it reads inside the model (see :func:`loops`);
    ``k``, ``reorth_every`` and ``key`` as in :func:`lyapunov_spectrum` (``k`` is capped at
    each state's size).
    """
    spectra = {}
    for label, loop in loops(fn, *args).items():
        size = ravel_pytree(initial_carry(loop.cell, loop.params, loop.carry))[0].size
        spectra[label] = _lyapunov(loop, None if k is None else min(k, size), reorth_every, key)
    return spectra


def layer_jacobian_norms(
    fn: Callable[..., Any], *args: Any, ord: int | str = 2
) -> dict[str, Array]:
    """Returns ``{label: (T,)}``: ||d state_last / d state_t|| of every loop in ``fn(*args)``,
    in the order each loop reads its inputs (see :func:`jacobian_norms`)."""
    return {label: _jacobian_norms(loop, ord) for label, loop in loops(fn, *args).items()}


def _flat_step(cell: Cell, params: Any, unravel: Callable) -> Callable[[Array, Array], Array]:
    """Returns ``f(state, x) -> next_state``: one step of ``cell`` on flattened carries."""

    def f(state, x):
        new_carry, _ = cell.step(params, unravel(state), x)
        return ravel_pytree(new_carry)[0].astype(state.dtype)

    return f


def final_state_jacobians(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n, n)``: entry ``t`` is d(state_{T-1}) / d(state_t), the Jacobian product.

    d h_T / d h_t = ∏_{s=t+1}^{T} ∂h_s/∂h_{s-1}, rows index the final state and columns
    state_t; entry ``T - 1`` is the identity, entries ``t >= length`` are zero (padding
    steps do not exist). Computed with one forward pass and ``n`` vector-Jacobian products
    (one per row, vmapped), never by multiplying dense per-step Jacobians; memory is
    ``T * n * n``.
    """
    _check_cell(cell)
    check_inputs(cell, params, xs)
    run, zeros, _ = _probed_run(lambda: scan(cell, params, xs, carry=carry, length=length)[0], ())
    ((label, zero_probe),) = zeros.items()
    dtype, size = zero_probe.dtype, zero_probe.shape[1]
    final_of_probe = lambda probe: ravel_pytree(run({label: probe})[0])[0].astype(dtype)
    _, vjp = jax.vjp(final_of_probe, zero_probe)
    (rows,) = jax.vmap(vjp)(jnp.eye(size, dtype=dtype))  # (n_out, T, n_in)
    return jnp.moveaxis(rows, 0, 1)


def _jacobian_norms(loop: probes.Loop, ord: int | str) -> Array:
    """Returns ``(T,)``: :func:`jacobian_norms` of one loop, on the inputs in reading order."""
    if ord not in (2, "fro"):
        raise ValueError(f"ord must be 2 (spectral) or 'fro' (Frobenius), got {ord!r}")
    jacobians = final_state_jacobians(
        loop.cell, loop.params, _forward_inputs(loop), carry=loop.carry, length=loop.length
    )
    if ord == "fro":
        return jnp.sqrt(jnp.sum(jnp.square(jacobians), axis=(-2, -1)))
    return singular_values(jacobians)[..., 0]


def step_jacobians(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n, n)``: entry ``t`` is d(state_t) / d(state_{t-1}) along the trajectory.

    ``state_{-1}`` is the initial carry. Rows index state_t, columns state_{t-1}; for an
    Elman cell h_t = act(x_t W_ih + h_{t-1} W_hh + b) this is diag(act'(·)) W_hh^T.
    Entries ``t >= length`` are the identity (padding keeps the carry).
    """
    _check_cell(cell)
    check_inputs(cell, params, xs)
    carry = initial_carry(cell, params, carry)
    flat, unravel = ravel_pytree(carry)
    step = _flat_step(cell, params, unravel)

    def emit_previous(params_, carry_, x):  # the state entering each step, as the output
        new_carry, _ = cell.step(params_, carry_, x)
        return new_carry, ravel_pytree(carry_)[0]

    tracer = Cell(cell.init, cell.initial_carry, emit_previous, flat.size, ("previous", cell.kind))
    _, previous = scan(tracer, params, xs, carry=carry, length=length)
    previous = previous.astype(flat.dtype)
    length = padding.check_length(length, xs.shape[0])
    valid = padding.valid_steps(xs.shape[0], length)
    jacobians = jax.vmap(jax.jacfwd(step))(previous, padding.clean(xs, valid))
    eye = jnp.broadcast_to(jnp.eye(flat.size, dtype=jacobians.dtype), jacobians.shape)
    return padding.keep_carry(valid, jacobians, eye)


def singular_values(matrices: Array) -> Array:
    """Returns ``(..., min(m, n))``: the singular values of ``matrices: (..., m, n)``, descending."""
    matrices = jnp.asarray(matrices)
    if matrices.ndim < 2:
        raise ValueError(f"matrices must have shape (..., m, n), got shape {matrices.shape}")
    return jnp.linalg.svd(matrices, compute_uv=False)


def step_singular_values(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n)``: the singular values of each step Jacobian (:func:`step_jacobians`)."""
    return singular_values(step_jacobians(cell, params, xs, carry=carry, length=length))


def recurrent_matrices(params: Any) -> Array:
    """Returns ``(G, H, H)``: the recurrent weight block of each gate, from ``w_hh: (H, G*H)``.

    Block ``g`` is the matrix the cell multiplies ``h`` by (``h @ W``) for gate ``g`` in
    PyTorch's order: one block for Elman, (i, f, g, o) for LSTM, (r, z, n) for GRU.
    """
    if not isinstance(params, dict) or "w_hh" not in params:
        raise TypeError(
            "params must be a dict with a 'w_hh' entry of shape (H, G*H), as made by "
            f"rnnjax.elman/lstm/gru; got {type(params).__name__}"
        )
    w = jnp.asarray(params["w_hh"])
    h = w.shape[0]
    if w.ndim != 2 or w.shape[1] % h:
        raise ValueError(f"params['w_hh'] must have shape (H, G*H), got {w.shape}")
    return jnp.moveaxis(w.reshape(h, w.shape[1] // h, h), 1, 0)


def largest_singular_value(matrices: Array) -> Array:
    """Returns ``(...)``: σ_max of each ``(..., m, n)`` matrix (its spectral norm)."""
    return singular_values(matrices)[..., 0]


def spectral_radius(matrices: Array) -> Array:
    """Returns ``(...)``: max ``|λ|`` over the eigenvalues of each square ``(..., n, n)`` matrix.

    Uses ``jnp.linalg.eigvals`` (general, non-symmetric eigenvalues), which JAX computes
    on the CPU.
    """
    matrices = jnp.asarray(matrices)
    if matrices.ndim < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"matrices must have shape (..., n, n), got shape {matrices.shape}")
    return jnp.max(jnp.abs(jnp.linalg.eigvals(matrices)), axis=-1)


class PascanuBound(NamedTuple):
    """The sufficient condition for vanishing gradients of Pascanu, Mikolov & Bengio (2013).

    For h_t = σ(W_hh^T h_{t-1} + W_ih^T x_t + b) with ``|σ'| ≤ γ``,
    ||∂h_t/∂h_{t-1}|| ≤ ||W_hh|| ||diag σ'|| ≤ σ_max(W_hh) γ = ``bound``, so
    σ_max(W_hh) < 1/γ (``vanishing``) makes ||∂h_T/∂h_t|| ≤ bound^(T-t) → 0 (their eq. 7
    and Section 3.1). Its converse, σ_max > 1/γ, is only necessary for exploding.

    Attributes:
      sigma_max: largest singular value of W_hh.
      gamma: bound on the derivative of the nonlinearity.
      bound: ``sigma_max * gamma``, a bound on the norm of every step Jacobian.
      vanishing: ``sigma_max < 1 / gamma``.
    """

    sigma_max: Array
    gamma: float
    bound: Array
    vanishing: Array


_DERIVATIVE_BOUNDS = {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25}


def pascanu_bound(params: Any, activation: str | Cell = "tanh") -> PascanuBound:
    """Returns the :class:`PascanuBound` of an Elman cell's ``params``.

    Args:
      params: Elman parameters with ``w_hh: (H, H)``.
      activation: the nonlinearity's name (``"tanh"``, ``"relu"``, ``"identity"``,
        ``"sigmoid"``; γ = 1, 1, 1, 1/4) or the :func:`rnnjax.elman` cell itself.
    """
    if isinstance(activation, Cell):
        step = activation.step
        names = [
            name
            for name, update in ELMAN_UPDATES.items()
            if type(step) is GatedStep and getattr(step, "update", None) is update
        ]
        if not names:
            raise ValueError(
                f"pascanu_bound needs an Elman cell (its bound is for h = σ(W h + ...)), got a "
                f"cell of kind {activation.kind!r} whose step is not an Elman step"
            )
        activation = names[0]
    if activation not in _DERIVATIVE_BOUNDS:
        raise ValueError(
            f"activation must be one of {sorted(_DERIVATIVE_BOUNDS)}, got {activation!r}"
        )
    blocks = recurrent_matrices(params)
    if blocks.shape[0] != 1:
        raise ValueError(
            f"pascanu_bound needs Elman params with w_hh of shape (H, H), got "
            f"{tuple(params['w_hh'].shape)} ({blocks.shape[0]} gate blocks)"
        )
    gamma = _DERIVATIVE_BOUNDS[activation]
    sigma_max = largest_singular_value(blocks[0])
    return PascanuBound(sigma_max, gamma, sigma_max * gamma, sigma_max < 1.0 / gamma)


def _lyapunov(loop: probes.Loop, k: int | None, reorth_every: int, key: Array | None) -> Array:
    """Returns ``(k,)``: :func:`lyapunov_spectrum` of one loop, on the inputs in reading order."""
    cell, params, xs, length = loop.cell, loop.params, _forward_inputs(loop), loop.length
    carry = initial_carry(cell, params, loop.carry)
    flat, unravel = ravel_pytree(carry)
    n, num_steps = flat.size, xs.shape[0]
    k = n if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if not isinstance(reorth_every, int) or isinstance(reorth_every, bool) or reorth_every < 1:
        raise ValueError(f"reorth_every must be a positive int, got {reorth_every!r}")
    if key is None:
        basis = jnp.eye(n, k, dtype=flat.dtype)
    else:
        basis = householder.qr(jax.random.normal(key, (n, k), flat.dtype))[0]
    step = _flat_step(cell, params, unravel)
    length = padding.check_length(length, num_steps)
    valid_steps = padding.valid_steps(num_steps, length)
    xs = padding.clean(xs, valid_steps)
    num_valid = num_steps if length is None else length
    last = num_valid - 1

    def orthonormalise(q, log_r):
        q, r = householder.qr(q)  # no LAPACK: see rnnjax.householder
        d = jnp.diagonal(r)
        # Positive diagonal keeps Q continuous from one step to the next.
        return q * jnp.where(d < 0, -1.0, 1.0).astype(q.dtype), log_r + jnp.log(jnp.abs(d))

    def body(state, inputs):
        h, q, log_r = state
        x, t = inputs
        new_h, jq = jax.vmap(
            lambda v: jax.jvp(lambda s: step(s, x), (h,), (v,)), in_axes=1, out_axes=(None, 1)
        )(q)
        valid = t < num_valid
        new_h, jq = padding.keep_carry(valid, (new_h, jq), (h, q))
        due = valid & (((t + 1) % reorth_every == 0) | (t == last))
        q, log_r = jax.lax.cond(due, orthonormalise, lambda a, b: (a, b), jq, log_r)
        return (new_h, q, log_r), None

    init = (flat, basis, jnp.zeros((k,), flat.dtype))
    steps = jnp.arange(num_steps)
    (_, _, log_r), _ = jax.lax.scan(body, init, (xs, steps))
    return log_r / jnp.maximum(num_valid, 1)
