"""The implementation of :mod:`rnnjax.padding` (its docstring describes it)."""

from __future__ import annotations

from typing import Any, overload

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks

__all__ = [
    "check_length",
    "last_valid",
    "masked_max",
    "masked_mean",
    "masked_softmax",
    "reverse_valid",
    "valid_steps",
]

Array = jax.Array


def check_length(length: Any, num_steps: int, *, name: str = "length") -> Array | None:
    """Returns ``length`` as an int32 scalar in ``[0, num_steps]``, or None if it is None.

    A concrete ``length`` outside the range raises ValueError. A traced one (under ``jit``
    or ``vmap``) cannot be checked when the function is traced: it is clipped to
    ``[0, T]``, so every path computes the same finite result (a length above T means the
    whole sequence, a negative one means none of it), and :func:`rnnjax.checked` turns it
    into an error naming the value and the batch element.
    """
    if length is None:
        return None
    if jnp.ndim(length) != 0:
        raise ValueError(
            f"{name} must be a scalar (one sequence; batch with jax.vmap), got shape "
            f"{jnp.shape(length)}"
        )
    if not jnp.issubdtype(jnp.result_type(length), jnp.integer):
        raise TypeError(f"{name} must be an integer, got dtype {jnp.result_type(length)}")
    if not isinstance(length, jax.core.Tracer):
        value = int(np.asarray(length))
        if not 0 <= value <= num_steps:
            raise ValueError(f"{name} must be in [0, T={num_steps}], got {value}")
        return jnp.asarray(value, jnp.int32)
    length = jnp.asarray(length, jnp.int32)
    checks.check(
        (length >= 0) & (length <= num_steps),
        f"{name} must be in [0, T={num_steps}], got {{{name}}}",
        **{name: length},
    )
    return jnp.clip(length, 0, num_steps)


@overload
def valid_steps(num_steps: int, length: None) -> None: ...
@overload
def valid_steps(num_steps: int, length: Array) -> Array: ...
def valid_steps(num_steps: int, length: Array | None) -> Array | None:
    """Returns ``(..., num_steps)`` bool, true at ``t < length``; None when ``length`` is None.

    ``length`` is an int scalar (one sequence: the mask is ``(num_steps,)``) or an int array
    ``(...)`` (a batch). The one place the library turns lengths into a mask.
    """
    if length is None:
        return None
    return jnp.arange(num_steps, dtype=jnp.int32) < jnp.asarray(length)[..., None]


def _broadcast_to(valid: Array, x: Array) -> Array:
    return valid.reshape(valid.shape + (1,) * (jnp.ndim(x) - valid.ndim))


def clean(xs: Any, valid: Array | None) -> Any:
    """Returns ``xs`` (a pytree, time leading) with the steps where ``valid`` is false set to 0."""
    if valid is None:
        return xs
    return jax.tree.map(lambda a: jnp.where(_broadcast_to(valid, a), a, jnp.zeros_like(a)), xs)


def zero_outputs(valid: Array | None, ys: Any) -> Any:
    """Returns ``ys`` with the steps (or the one step) where ``valid`` is false set to 0.

    ``valid`` is ``()`` for one step's output or ``(T,)`` for a sequence of them.
    """
    return clean(ys, valid)


def keep_carry(valid: Array | None, new: Any, old: Any) -> Any:
    """Returns ``new`` where ``valid``, else ``old``: padded steps keep the carry.

    ``valid`` is ``()`` for one step, or ``(T,)`` for stacked steps (broadcast over the
    trailing axes of each leaf).
    """
    if valid is None:
        return new
    return jax.tree.map(lambda n, o: jnp.where(_broadcast_to(valid, n), n, o), new, old)


def identity_steps(
    valid: Array | None, a: Array, b: Array, *, log_space: bool = False
) -> tuple[Array, Array]:
    """Returns the coefficients of ``h_t = a_t h_{t-1} + b_t`` with padded steps set to ``h_t = h_{t-1}``.

    ``a, b: (T, ...)``; where ``valid`` is false, ``a = 1`` and ``b = 0`` (in log space
    ``log a = 0`` and ``log b = -inf``): the way a parallel scan keeps the carry.
    """
    if valid is None:
        return a, b
    one, zero = (0.0, -jnp.inf) if log_space else (1.0, 0.0)
    return keep_carry(valid, (a, b), (jnp.full_like(a, one), jnp.full_like(b, zero)))


def reverse_valid(xs: Any, length: Any = None) -> Any:
    """Returns ``xs`` with its first ``length`` steps reversed and the padding left in place.

    ``reverse_valid(reverse_valid(xs, n), n) == xs``. Works on any pytree whose leaves have
    time as the leading axis. A reverse scan is a forward scan of ``reverse_valid(xs, n)``
    whose outputs are put back with ``reverse_valid``: this is how :func:`rnnjax.scan`,
    the fast path and a bidirectional layer all process the valid prefix back to front.
    A ``length`` outside ``[0, T]`` is clipped (see :func:`check_length`).
    """
    leaves = jax.tree.leaves(xs)
    num_steps = leaves[0].shape[0]
    if length is None:
        return jax.tree.map(lambda a: a[::-1], xs)
    length = jnp.clip(length, 0, num_steps)
    t = jnp.arange(num_steps)
    index = jnp.where(t < length, length - 1 - t, t)
    return jax.tree.map(lambda a: jnp.take(a, index, axis=0), xs)


def last_valid(ys: Array, length: Array | None) -> Array:
    """Returns ``ys[length - 1]`` (zeros when ``length == 0``); ``ys[-1]`` without length."""
    if length is None:
        return ys[-1]
    last = jnp.take(ys, jnp.maximum(length - 1, 0), axis=0)
    return zero_outputs(length > 0, last)


def masked_mean(ys: Array, length: Array | None) -> Array:
    """Returns the mean of ``ys: (T, ...)`` over its valid steps (zeros when there are none)."""
    if length is None:
        return jnp.mean(ys, axis=0)
    total = jnp.sum(clean(ys, valid_steps(ys.shape[0], length)), axis=0)
    return total / jnp.maximum(length, 1).astype(ys.dtype)


def masked_max(ys: Array, length: Array | None) -> Array:
    """Returns the max of ``ys: (T, ...)`` over its valid steps (zeros when there are none)."""
    if length is None:
        return jnp.max(ys, axis=0)
    valid = _broadcast_to(valid_steps(ys.shape[0], length), ys)
    pooled = jnp.max(jnp.where(valid, ys, -jnp.inf), axis=0)
    return zero_outputs(length > 0, pooled)


def masked_softmax(scores: Array, length: Array | None) -> Array:
    """Returns ``softmax(scores)`` over the valid steps ``t < length``, exactly 0 at the others.

    ``scores: (T,)`` (or ``(T, ...)``, normalised over the leading axis). Padded scores are
    replaced by 0 before anything reads them, so a NaN or inf there reaches neither the
    weights nor their gradient; with ``length == 0`` every weight is 0 (not NaN).
    """
    if length is None:
        return jax.nn.softmax(scores, axis=0)
    valid = _broadcast_to(valid_steps(scores.shape[0], length), scores)
    scores = jnp.where(valid, scores, jnp.zeros_like(scores))
    # Softmax is shift-invariant, so the shift (the largest valid score) needs no gradient.
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(valid, scores, -jnp.inf), axis=0))
    shift = jnp.where(jnp.isfinite(shift), shift, jnp.zeros_like(shift))
    exps = jnp.where(valid, jnp.exp(scores - shift), jnp.zeros_like(scores))
    # The largest valid score gives exp(0) = 1, so the total is >= 1 unless nothing is valid.
    total = jnp.sum(exps, axis=0)
    return exps / jnp.where(total > 0, total, jnp.ones_like(total))
