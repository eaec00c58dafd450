"""The implementation of :mod:`rnnjax.parallel_in_time` (its docstring describes it)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax._src import checks, padding
from rnnjax._src.cells import Cell, GatedStep
from rnnjax._src.linear_scan import (
    combine_stabilised,
    linear_recurrence,
    stabilised_recurrence,
)

__all__ = [
    "METHODS",
    "Newton",
    "Report",
    "combine_stabilised",
    "evaluate",
    "linear_recurrence",
    "stabilised_recurrence",
]

Array = jax.Array

# ------------------------------------------------------------------------------ Newton

#: The Newton methods, by name: an ``impl`` of :func:`rnnjax.scan` or a :class:`Newton` ``method``.
METHODS = ("deer", "quasi-deer", "elk")
ON_FAILURE = ("fallback", "raise")


class Newton(NamedTuple):
    """How :func:`evaluate` solves for a trajectory; also an ``impl`` of :func:`rnnjax.scan` and the layers.

    Attributes:
      method: ``"deer"`` (dense Jacobians), ``"quasi-deer"`` (diagonal) or ``"elk"``
        (diagonal, damped); see the module docstring.
      tol: the largest residual accepted (relative, see :class:`Report`); None: 1e-5 in
        float32, 1e-10 in float64.
      max_iter: the most Newton updates before giving up.
      damping: ELK's λ (``"elk"`` only): the weight that holds each update near the previous
        iterate; larger is more damped. The default 1/4 is the least damping for which the
        damped recurrence provably has coefficients of modulus <= 1 (see :func:`_damped`).
      on_failure: what a run that has not converged after ``max_iter`` updates does:
        ``"fallback"`` computes the trajectory with the sequential scan instead (and the
        report says so); ``"raise"`` raises :class:`rnnjax.InvalidValueError` naming the
        residual, which needs the run wrapped in :func:`rnnjax.checked` (the residual is a
        run-time value).
    """

    method: str = "quasi-deer"
    tol: float | None = None
    max_iter: int = 100
    damping: float = 0.25
    on_failure: str = "fallback"


class Report(NamedTuple):
    """What a Newton solve did, for one sequence (batched like it under ``vmap``).

    Attributes:
      iterations: int32, Newton updates applied (each one linear-recurrence solve).
      residual: the Newton trajectory's ``max_t |s_t - f(s_{t-1}, x_t)| / (1 + |f(...)|)``,
        measured after the last update (NaN if the iteration overflowed).
      converged: ``residual <= tol``.
      fell_back: the trajectory returned was computed by the sequential scan because Newton
        had not converged (``on_failure="fallback"``).
      residuals: ``(max_iter + 1,)``, the residual of each Newton iterate: entry ``k`` is
        measured after ``k`` updates (entry 0 on the initial guess), up to entry
        ``iterations`` (= ``residual``); NaN after it.
    """

    iterations: Array
    residual: Array
    converged: Array
    fell_back: Array
    residuals: Array


def check_newton(newton: Any) -> Newton:
    """Returns ``newton`` as a :class:`Newton` (a method name is ``Newton(method)``); raises
    ValueError naming the field that is out of range."""
    if isinstance(newton, str):
        newton = Newton(newton)
    if not isinstance(newton, Newton):
        raise TypeError(
            f"expected a method name {METHODS} or a parallel_in_time.Newton, got {newton!r}"
        )
    if newton.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {newton.method!r}")
    if newton.on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {newton.on_failure!r}")
    checks.positive_int("max_iter", newton.max_iter)
    if newton.tol is not None and not newton.tol > 0:
        raise ValueError(f"tol must be > 0 or None, got {newton.tol}")
    if not newton.damping > 0:
        raise ValueError(f"damping must be > 0, got {newton.damping}")
    return newton


def _tolerance(newton: Newton, dtype: Any) -> float:
    if newton.tol is not None:
        return newton.tol
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


def _shift(states: Array, s0: Array) -> Array:
    """Returns ``(T, n)``: the state entering each step, ``[s0, s_0, ..., s_{T-2}]``."""
    return jnp.concatenate([s0[None], states[:-1]])


def _residual(states: Array, f_values: Array) -> Array:
    """Returns the largest relative error, NaN if any is NaN (an overflowed iterate)."""
    error = jnp.abs(states - f_values) / (1.0 + jnp.abs(f_values))
    # Explicitly: XLA:CPU's max reduction dropped the NaNs of an all-NaN (T=1000, H=8)
    # iterate and returned -inf, which passed `<= tol` as converged.
    return jnp.where(jnp.any(jnp.isnan(error)), jnp.nan, jnp.max(error))


class _Problem(NamedTuple):
    """A recurrence ``s_t = step(params, s_{t-1}, x_t)`` over flat states (static fields)."""

    step: Callable  # step(params, s, x) -> s'
    diagonal: Callable | None  # diagonal(params, s, x) -> (s', diag ∂s'/∂s); None: from jacfwd
    newton: Newton
    tol: float


def _masked(fn: Callable) -> Callable:
    """Returns ``fn(params, s, x)`` as ``masked(params, s, x, v)``: a padded step keeps ``s``."""

    def masked(params, s, x, v):
        return padding.keep_carry(v, fn(params, s, x), s)

    return masked


def _linearise(problem: _Problem, dense: bool) -> Callable:
    """Returns ``lin(params, s, x, v) -> (f(s), A)``: ``A`` is ∂f/∂s (dense) or its diagonal."""

    def lin(params, s, x, v):
        if dense or problem.diagonal is None:
            jac, value = jax.jacfwd(lambda u: (problem.step(params, u, x),) * 2, has_aux=True)(s)
            a = jac if dense else jnp.diagonal(jac)
        else:
            value, a = problem.diagonal(params, s, x)
        identity = jnp.eye(s.shape[0], dtype=a.dtype) if dense else jnp.ones_like(a)
        return padding.keep_carry(v, value, s), padding.keep_carry(v, a, identity)

    return lin


def _gated_diagonal(step: Callable, hidden: Callable, unravel: Callable, s0: Array) -> Callable:
    """Returns ``diagonal(params, s, x) -> (f(s), diag ∂f/∂s)`` for a GatedStep, one JVP per carry leaf.

    ``step(params, s, x)`` is the flat GatedStep and ``hidden`` its ``hidden``; ``params``
    is ``(cell params, closed-over arrays)``. With ``gh = h W_hh + b_hh``, ∂f/∂s is the
    update's own derivative plus its derivative through ``gh``. For an update acting unit by
    unit (every built-in cell) the diagonal keeps, of ``W_hh``, only entry ``(i, g H + i)``
    of each gate block ``g``: a JVP with carry tangent 1 on one leaf, and a ``b_hh`` tangent
    that replaces that leaf's ``W_hh`` term ``t_h W_hh`` by ``t_h ⊙ diag(W_hh)``, gives
    exactly that diagonal, derived from the step itself. (For an update that mixes units it
    is another approximation of the Jacobian; the fixed point, and so the answer, is the
    same.)
    """
    sizes = [leaf.size for leaf in jax.tree.leaves(unravel(s0))]
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    indicators = jnp.stack(
        [
            (jnp.arange(bounds[-1]) >= lo) & (jnp.arange(bounds[-1]) < hi)
            for lo, hi in itertools.pairwise(bounds)
        ]
    ).astype(s0.dtype)  # (leaves, n): 1 on each leaf's part of the flat state

    def diagonal(params, s, x):
        cell_params, consts = params
        w = cell_params["w_hh"]
        size, width = w.shape
        w_diag = jnp.diagonal(w.reshape(size, width // size, size), axis1=0, axis2=2).reshape(-1)
        b = cell_params.get("b_hh", jnp.zeros((width,), w.dtype))

        def f(s, b):
            return step(({**cell_params, "b_hh": b}, consts), s, x)

        def tangent(t):
            t_h = hidden(unravel(t)).astype(w.dtype)
            t_b = jnp.tile(t_h, width // size) * w_diag - t_h @ w
            return jax.jvp(f, (s, b), (t, t_b.astype(b.dtype)))[1]

        return f(s, b), jnp.sum(jax.vmap(tangent)(indicators) * indicators, axis=0)

    return diagonal


def _damped(a: Array, c: Array, observed: Array, damping: float) -> tuple[Array, Array]:
    """Returns ``(a', c')``: the Kalman-filter mean ``m_t = a'_t m_{t-1} + c'_t`` of ELK's step.

    The model (Gonzalez et al. 2024, per state dimension): ``z_t = a_t z_{t-1} + c_t`` plus
    unit-variance noise, observed as the previous iterate ``observed_t`` with variance
    ``σ² = 1/damping``; ``z_{-1}`` is known exactly. The filter's variance ``P_t`` does not
    depend on the data: ``P_t = σ²(a_t² P_{t-1} + 1) / (a_t² P_{t-1} + 1 + σ²)`` is a Möbius
    map of ``P_{t-1}``, so all ``P_t`` come from one scan of 2x2 matrix products. The mean is
    then ``m_t = (1 - K_t)(a_t m_{t-1} + c_t) + K_t observed_t`` with gain
    ``K_t = (a_t² P_{t-1} + 1) / (a_t² P_{t-1} + 1 + σ²)``: a linear recurrence again, whose
    coefficient ``|(1 - K_t) a_t| <= σ/2`` (since ``P_{t-1} >= σ²/(1 + σ²)``).
    """
    s2 = 1.0 / damping
    a2 = a * a
    one = jnp.ones_like(a2)
    maps = jnp.stack([jnp.stack([s2 * a2, s2 * one], -1), jnp.stack([a2, (1 + s2) * one], -1)], -2)

    def compose(first, then):  # Möbius maps are defined up to scale: keep products near 1
        m = then @ first
        return m / jnp.max(jnp.abs(m), axis=(-2, -1), keepdims=True)

    prod = jax.lax.associative_scan(compose, maps)
    variance = prod[..., 0, 1] / prod[..., 1, 1]  # P_t, from P_{-1} = 0
    predicted = a2 * _shift(variance, jnp.zeros_like(variance[0])) + 1.0
    gain = predicted / (predicted + s2)
    return (1.0 - gain) * a, (1.0 - gain) * c + gain * observed


def _newton(f: Callable, lin: Callable, newton: Newton, tol: float, params, inputs, s0):
    """Returns ``(states, iterations, residual, residuals)``: Newton's solution of
    ``s_t = f_t(s_{t-1})``, and the residual of every iterate (see :class:`Report`).

    ``f(params, prev, inputs) -> (T, n)`` and ``lin(params, prev, inputs) -> (f values, A)``
    act on all steps at once (``prev`` the state entering each step); ``A`` is ``(T, n, n)``
    for ``"deer"`` and ``(T, n)`` otherwise. The guess is ``s0`` at every step.
    """
    dense = newton.method == "deer"

    def body(state):
        states, _, k, history = state
        prev = _shift(states, s0)
        f_values, a = lin(params, prev, inputs)
        residual = _residual(states, f_values)
        c = f_values - (jnp.einsum("tij,tj->ti", a, prev) if dense else a * prev)
        if newton.method == "elk":
            a, c = _damped(a, c, states, newton.damping)
        new = linear_recurrence(a, c, s0, kind="dense" if dense else "diagonal")
        done = residual <= tol  # then keep the states the residual was measured on
        history = history.at[k].set(residual)
        return jnp.where(done, states, new), residual, k + jnp.where(done, 0, 1), history

    def cond(state):
        _, residual, k, _ = state
        return (k < newton.max_iter) & ~(residual <= tol) & ~jnp.isnan(residual)

    num_steps = jax.tree.leaves(inputs)[0].shape[0]
    guess = jnp.broadcast_to(s0, (num_steps,) + s0.shape)
    history = jnp.full((newton.max_iter + 1,), jnp.nan, s0.dtype)
    start = (guess, jnp.asarray(jnp.inf, s0.dtype), jnp.zeros((), jnp.int32), history)
    states, _, k, history = jax.lax.while_loop(cond, body, start)
    # Measured on what is returned (the loop may have stopped at max_iter after an update).
    residual = _residual(states, f(params, _shift(states, s0), inputs))
    return states, k, residual, history.at[k].set(residual)


def _sequential(step: Callable, inputs: Any, s0: Array, states: Array, needed: Array) -> Array:
    """Returns ``states`` recomputed one step after another when ``needed``, else as given.

    A ``while_loop`` that runs no step when not needed: under ``vmap`` it runs while any
    example needs it (a ``lax.cond`` would become a select and run the scan always).
    """
    num_steps = states.shape[0]

    def body(state):
        t, s, out = state
        s = step(s, jax.tree.map(lambda a: a[t], inputs))
        return t + 1, s, out.at[t].set(s)

    start = (jnp.zeros((), jnp.int32), s0, states)
    return jax.lax.while_loop(lambda st: needed & (st[0] < num_steps), body, start)[2]


def _forward_problem(problem: _Problem):
    step = _masked(problem.step)
    f = jax.vmap(lambda p, s, inp: step(p, s, *inp), (None, 0, 0))
    lin = jax.vmap(
        lambda p, s, inp: _linearise(problem, problem.newton.method == "deer")(p, s, *inp),
        (None, 0, 0),
    )
    return step, f, lin


def _solve(problem: _Problem, params, xs, valid, s0):
    """Returns ``(states, report)``: Newton, then the fallback or the check ``on_failure`` asks."""
    newton = problem.newton
    step, f, lin = _forward_problem(problem)
    states, k, residual, history = _newton(f, lin, newton, problem.tol, params, (xs, valid), s0)
    converged = residual <= problem.tol
    if newton.on_failure == "raise":
        if not checks.enabled():
            raise ValueError(
                "on_failure='raise' reports non-convergence as a run-time error: call the "
                "function through rnnjax.checked(...), or use on_failure='fallback'"
            )
        checks.check(
            converged,
            f"parallel_in_time: {newton.method} did not converge in "
            f"{newton.max_iter} iterations: residual {{residual}} > tol={problem.tol}",
            residual=residual,
        )
        return states, Report(k, residual, converged, jnp.zeros((), bool), history)
    states = _sequential(lambda s, inp: step(params, s, *inp), (xs, valid), s0, states, ~converged)
    return states, Report(k, residual, converged, ~converged, history)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _trajectory(problem: _Problem, params, xs, valid, s0) -> tuple[Array, Report]:
    """Returns ``(states: (T, n), report)``, the solution of the masked recurrence."""
    return _solve(problem, params, xs, valid, s0)


def _trajectory_fwd(problem, params, xs, valid, s0):
    states, report = _solve(problem, params, xs, valid, s0)
    return (states, report), (params, xs, valid, s0, states)


def _trajectory_bwd(problem, saved, cotangents):
    """Returns the cotangents of ``(params, xs, valid, s0)`` from the adjoint recurrence.

    ``λ_t = g_t + J_{t+1}^T λ_{t+1}`` (``g_t`` the cotangent of ``s_t``; no second term at the
    last step), solved in reversed time by the same Newton solve: the dense method solves it
    exactly in one update, the diagonal ones iterate (ELK's damping is not needed: the
    recurrence is linear). If that does not converge, the sequential adjoint runs (exact,
    slower). Then ``∂L/∂(params, x_t, s_{t-1}) = (∂f_t)^T λ_t``.
    """
    params, xs, valid, s0, states = saved
    g = cotangents[0]
    num_steps = states.shape[0]
    step = _masked(problem.step)
    v = jnp.ones((num_steps,), bool) if valid is None else valid
    # Reversed step r computes λ_t (t = T-1-r) from g_t and step t+1, which reads s_t.
    after = lambda a, fill: jnp.concatenate([a[1:], jnp.full_like(a[:1], fill)])
    rev = lambda a: a[::-1]
    inputs = (
        rev(g),
        rev(states),
        rev(after(xs, 0)),
        rev(after(v, False)),
        rev(jnp.arange(num_steps) < num_steps - 1),
    )
    dense = problem.newton.method == "deer"
    forward_lin = _linearise(problem, dense)

    def adjoint_step(p, lam, inp):
        g_t, s_t, x_next, v_next, has_next = inp
        _, vjp = jax.vjp(lambda s: step(p, s, x_next, v_next), s_t)
        return g_t + jnp.where(has_next, vjp(lam)[0], 0.0)

    def adjoint_lin(p, lam, inp):  # the adjoint step's Jacobian is J_{t+1}^T
        _, s_t, x_next, v_next, has_next = inp
        a = forward_lin(p, s_t, x_next, v_next)[1]
        return adjoint_step(p, lam, inp), jnp.where(has_next, a.T if dense else a, 0.0)

    newton = problem.newton._replace(method="deer" if dense else "quasi-deer")
    lam0 = jnp.zeros_like(s0)
    lam, _, residual, _ = _newton(
        jax.vmap(adjoint_step, (None, 0, 0)),
        jax.vmap(adjoint_lin, (None, 0, 0)),
        newton,
        problem.tol,
        params,
        inputs,
        lam0,
    )
    lam = _sequential(
        lambda l, inp: adjoint_step(params, l, inp), inputs, lam0, lam, ~(residual <= problem.tol)
    )[::-1]
    _, vjp = jax.vjp(
        lambda p, s, x: jax.vmap(step, (None, 0, 0, 0))(p, s, x, v), params, _shift(states, s0), xs
    )
    d_params, d_prev, d_xs = vjp(lam)
    return d_params, d_xs, None, d_prev[0]


_trajectory.defvjp(_trajectory_fwd, _trajectory_bwd)


def newton_scan(
    cell: Cell, params: Any, xs: Array, carry: Any, length: Array | None, newton: Newton | str
) -> tuple[Any, Array, Report]:
    """Returns ``(final_carry, ys, report)`` of ``cell`` by Newton's method (no checks).

    ``xs: (T, input_size)`` is read forward and its padded steps hold zeros
    (``rnnjax.scan`` and :func:`evaluate` do both). The carry is flattened with
    ``ravel_pytree`` into the state ``s`` (for an LSTM, ``h`` then ``c``); it must be real.
    """
    newton = check_newton(newton)
    s0, unravel = ravel_pytree(carry)
    if not jnp.issubdtype(s0.dtype, jnp.floating):
        raise TypeError(
            f"Newton's method needs a real floating carry, got dtype {s0.dtype} (cell kind "
            f"{cell.kind!r}); a cell linear in a complex state (rnnjax.lru) has impl='parallel'"
        )

    def flat_step(params, s, x):
        return ravel_pytree(cell.step(params, unravel(s), x)[0])[0].astype(s.dtype)

    # The solve has its own VJP, which returns cotangents for its inputs only: the arrays
    # the step closes over (a traced hyperparameter, say) become inputs, or their gradient
    # would silently be zero.
    converted, consts = jax.closure_convert(flat_step, params, s0, xs[0])
    if consts:
        step = lambda pk, s, x: converted(pk[0], s, x, *pk[1])
    else:  # run as written (a replayed trace would carry the example's types: shard_map)
        step = lambda pk, s, x: flat_step(pk[0], s, x)
    gated = cast(GatedStep, cell.step) if type(cell.step) is GatedStep else None
    diagonal = None if gated is None else _gated_diagonal(step, gated.hidden, unravel, s0)
    problem = _Problem(step, diagonal, newton, _tolerance(newton, s0.dtype))
    valid = padding.valid_steps(xs.shape[0], length)
    # (a custom_vjp: the type checker does not see through its __call__)
    states, report = cast(
        tuple[Array, Report], _trajectory(problem, (params, consts), xs, valid, s0)
    )
    ys = jax.vmap(lambda s, x: cell.step(params, unravel(s), x)[1])(_shift(states, s0), xs)
    return unravel(states[-1]), padding.zero_outputs(valid, ys), report


def evaluate(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    method: str = "quasi-deer",
    carry: Any = None,
    length: Any = None,
    reverse: bool = False,
    tol: float | None = None,
    max_iter: int = 100,
    damping: float = 0.25,
    on_failure: str = "fallback",
) -> tuple[Any, Array, Report]:
    """Returns ``(final_carry, ys, report)``: ``cell`` over ``xs`` by Newton's method, in parallel over time.

    Equal to :func:`rnnjax.reference_scan` (to ``tol``) for any cell with a real carry, with
    its :class:`Report` (``rnnjax.scan(..., impl=Newton(...))`` runs the same solve without
    the report). Differentiable in reverse mode (exact gradients, see the module
    docstring); not in forward mode (``jax.jvp``).

    Args:
      cell, params, xs, carry, length, reverse: as in :func:`rnnjax.scan`;
        ``xs: (T, input_size)`` is one sequence (batch with ``jax.vmap``).
      method, tol, max_iter, damping, on_failure: see :class:`Newton`.

    Returns:
      ``final_carry`` (like ``carry``), ``ys: (T, hidden_size)`` and the :class:`Report`.
    """
    from rnnjax._src.scan import check_args, match_varying  # (rnnjax.scan imports this module)

    newton = check_newton(Newton(method, tol, max_iter, damping, on_failure))
    carry, length = check_args(cell, params, xs, carry, length)
    carry = match_varying(carry, params, xs, length)
    if reverse:
        xs = padding.reverse_valid(xs, length)
    xs = padding.clean(xs, padding.valid_steps(xs.shape[0], length))
    final, ys, report = newton_scan(cell, params, xs, carry, length, newton)
    return final, padding.reverse_valid(ys, length) if reverse else ys, report
