"""Linear recurrences ``h_t = a_t h_{t-1} + b_t`` as one associative scan over time.

Applying ``(a1, b1)`` then ``(a2, b2)`` is ``(a2 a1, a2 b1 + b2)``, an associative operator,
so ``jax.lax.associative_scan`` computes every ``h_t`` in O(log T) depth (Blelloch 1990;
Martin & Cundy 2018): the whole forward pass of the cells linear in their state
(``scan(..., impl="parallel")``), and the inner solve of Newton's method
(:mod:`rnnjax.parallel_in_time`). Diagonal, dense and log-space coefficients, and the
stabilised exponential gates of the mLSTM.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import padding
from rnnjax._src.linear_cells import LinearStep, scale_leading

Array = jax.Array


def combine_diagonal(first: tuple[Array, Array], then: tuple[Array, Array]) -> tuple[Array, Array]:
    """Returns ``(a, b)`` of the map ``h -> a h + b`` that applies ``first``, then ``then``
    (element-wise ``a``, real or complex)."""
    a1, b1 = first
    a2, b2 = then
    return a2 * a1, a2 * b1 + b2


def combine_dense(first: tuple[Array, Array], then: tuple[Array, Array]) -> tuple[Array, Array]:
    """Returns ``(A, b)`` of ``h -> A h + b`` applying ``first`` then ``then`` (matrices ``A``)."""
    a1, b1 = first
    a2, b2 = then
    return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2


def combine_log(first: tuple[Array, Array], then: tuple[Array, Array]) -> tuple[Array, Array]:
    """Returns ``(log a, log b)`` of the composition, for positive ``a`` and ``b`` (log space)."""
    la1, lb1 = first
    la2, lb2 = then
    return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)


def combine_stabilised(first: tuple, then: tuple) -> tuple:
    """Returns ``(log a, log s, b)`` of ``h -> a h + s b`` applying ``first`` then ``then``,
    in the stabilised form of :class:`~rnnjax.LinearStep` (``stabilised``).

    The composition is ``(a1 a2, ·, a2 s1 b1 + s2 b2)``; its scale ``s`` is the larger of
    ``a2 s1`` and ``s2``, taken out of ``b``, so that every ``exp`` has an argument <= 0:
    the max-plus recursion of the stabiliser ``m_t``, which the scan therefore reproduces.
    ``b`` may be a pytree; ``log s = -inf`` (``b = 0``, a padded step) is allowed.
    """
    la1, ls1, b1 = first
    la2, ls2, b2 = then
    log_s = jnp.maximum(la2 + ls1, ls2)
    # two padded steps: both scales -inf, both weights 0 (not exp(-inf + inf) = NaN)
    shift = jnp.where(jnp.isneginf(log_s), jnp.zeros_like(log_s), log_s)
    w1, w2 = jnp.exp(la2 + ls1 - shift), jnp.exp(ls2 - shift)
    b = jax.tree.map(lambda u, v: scale_leading(w1, u) + scale_leading(w2, v), b1, b2)
    return la1 + la2, log_s, b


def stabilised_recurrence(log_a: Array, log_s: Array, b: Any, carry: tuple[Any, Array]):
    """Returns ``(hs, ms)``: every carry ``(h̃_t, m_t)`` of :func:`~rnnjax.linear_cells.stabilised_update`, by one scan.

    Args:
      log_a, log_s: ``(T, ...)``, the leading axes of every leaf of ``b``.
      b: a pytree of ``(T, ...)`` leaves.
      carry: ``(h̃, m)`` before the first step (``m`` finite).
    """
    h0, m0 = carry
    first = jax.tree.map(lambda a: a[0], (log_a, log_s, b))
    start = combine_stabilised((jnp.zeros_like(m0), m0, h0), first)  # the carry folded in
    steps = jax.tree.map(lambda a, a0: a.at[0].set(a0), (log_a, log_s, b), start)
    _, ms, hs = jax.lax.associative_scan(combine_stabilised, steps)
    return hs, ms


def linear_recurrence(a: Array, b: Array, h0: Array, *, kind: str = "diagonal") -> Array:
    """Returns ``hs: (T, n)`` with ``h_t = a_t h_{t-1} + b_t`` and ``h_{-1} = h0``, by one scan.

    Args:
      a: ``(T, n)`` element-wise coefficients (``kind="diagonal"``), ``(T, n, n)`` matrices
        (``"dense"``), or ``log a_t`` of positive coefficients (``"log"``).
      b: ``(T, n)``, or ``log b_t`` of positive ``b_t`` (``"log"``; ``-inf`` is ``b_t = 0``).
      h0: ``(n,)``, the state before the first step; any sign, also in log space, where
        ``h_t = (a_0 ... a_t) h0 + exp(LB_t)`` and only the second term is summed in logs
        (Feng et al. 2024 evaluate ``log h`` and need ``h0 > 0``).
    """
    if kind == "log":
        log_prod, log_h = jax.lax.associative_scan(combine_log, (a, b))
        return jnp.exp(log_prod) * h0 + jnp.exp(log_h)
    if kind == "dense":
        b = b.at[0].add(a[0] @ h0)
        return jax.lax.associative_scan(combine_dense, (a, b))[1]
    if kind != "diagonal":
        raise ValueError(f"kind must be 'diagonal', 'dense' or 'log', got {kind!r}")
    b = b.at[0].add(a[0] * h0)
    return jax.lax.associative_scan(combine_diagonal, (a, b))[1]


def linear_scan(step: LinearStep, params: Any, xs: Array, carry: Any, length: Array | None):
    """Returns ``(final_carry, ys)`` of a :class:`~rnnjax.LinearStep` cell, in parallel.

    The coefficients of all T steps come from ``step.coefficients`` at once (vmapped), the
    states from one associative scan, the outputs from ``step.output``. No checks: ``xs:
    (T, input_size)`` is read forward and its padded steps already hold zeros
    (``rnnjax.scan`` does both).
    """
    valid = padding.valid_steps(xs.shape[0], length)
    if step.stabilised:
        coefficients = jax.vmap(step.coefficients, (None, 0))(params, xs)
        identity = jax.tree.map(jnp.zeros_like, coefficients)  # a padded step: a = 1, s b = 0
        identity = (identity[0], jnp.full_like(identity[1], -jnp.inf), identity[2])
        log_a, log_s, b = padding.keep_carry(valid, coefficients, identity)
        hs, ms = stabilised_recurrence(log_a, log_s, b, carry)
        carries = (jax.tree.map(lambda a, c: a.astype(c.dtype), hs, carry[0]), ms)
        ys = jax.vmap(step.output, (None, 0, 0))(params, carries, xs)
        return jax.tree.map(lambda a: a[-1], carries), padding.zero_outputs(valid, ys)
    a, b = jax.vmap(step.coefficients, (None, 0))(params, xs)
    shape = (xs.shape[0],) + jnp.shape(carry)
    a, b = jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape)
    a, b = padding.identity_steps(valid, a, b, log_space=step.log_space)
    hs = linear_recurrence(a, b, carry, kind="log" if step.log_space else "diagonal")
    hs = hs.astype(jnp.result_type(carry))
    ys = jax.vmap(step.output, (None, 0, 0))(params, hs, xs)
    return hs[-1], padding.zero_outputs(valid, ys)
