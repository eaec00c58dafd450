"""The time loop: :func:`scan` runs a cell over one sequence, owning masking and reversal.

This is the one place that knows about padding. A cell never sees it: steps ``t >= length``
leave the carry unchanged and emit zeros, so the final carry is the carry after the last
valid step, and a reverse scan processes the valid prefix back to front while its outputs
stay aligned with their inputs and padding stays at the end.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.cells import Cell

Array = jax.Array


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: (tuple(jnp.shape(a)), jnp.result_type(a).name), tree)


def check_inputs(cell: Cell, params: Any, xs: Any, *, name: str = "xs") -> None:
    """Raises ValueError unless ``xs`` is ``(T, input_size)`` for this cell's ``params``."""
    shape = jnp.shape(xs)
    if len(shape) != 2:
        hint = " (batch with jax.vmap)" if len(shape) == 3 else ""
        raise ValueError(
            f"{name} must have shape (T, input_size) for one sequence{hint}; got shape {shape}"
        )
    if cell.input_size is not None:
        expected = cell.input_size(params)
        if shape[1] != expected:
            raise ValueError(
                f"{name} has feature size {shape[1]} but the parameters expect "
                f"input_size={expected}: expected shape (T, {expected}), got {shape}"
            )


def check_carry(cell: Cell, params: Any, carry: Any, *, name: str = "carry") -> None:
    """Raises TypeError/ValueError unless ``carry`` matches ``cell.initial_carry(params)``."""
    expected = jax.eval_shape(cell.initial_carry, params)
    exp_def, got_def = jax.tree.structure(expected), jax.tree.structure(carry)
    if exp_def != got_def:
        raise TypeError(
            f"{name} has the wrong structure: expected {exp_def} (the structure of "
            f"cell.initial_carry(params)), got {got_def}"
        )
    exp_shapes = [a.shape for a in jax.tree.leaves(expected)]
    got_shapes = [tuple(jnp.shape(a)) for a in jax.tree.leaves(carry)]
    if exp_shapes != got_shapes:
        hint = " (for a batch, vmap over the carry too)" if any(
            len(g) == len(e) + 1 for g, e in zip(got_shapes, exp_shapes)
        ) else ""
        raise ValueError(
            f"{name} has the wrong shapes{hint}: expected {exp_shapes}, got {got_shapes}"
        )


def check_length(length: Any, num_steps: int, *, name: str = "length") -> Array | None:
    """Returns ``length`` as an int32 scalar array, checking its range when it is static.

    A traced ``length`` (e.g. under ``vmap``) cannot be checked at trace time; values
    outside ``[0, T]`` then behave as if clipped to that range.
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
    return jnp.asarray(length, jnp.int32)


def _varying_axes(a: Any) -> frozenset:
    t = jax.typeof(a)
    manual = getattr(t, "manual_axis_type", None)  # jax >= 0.10; `vma` before
    return frozenset(manual.varying if manual is not None else getattr(t, "vma", ()))


def match_varying(carry: Any, *operands: Any) -> Any:
    """Returns ``carry`` cast to vary over every ``shard_map`` mesh axis ``operands`` vary over.

    Inside ``jax.shard_map`` a value's type says over which mesh axes it varies. A loop's
    output carry varies wherever its inputs do (a sharded batch, say), so ``lax.scan``
    rejects an initial carry built from replicated parameters; casting it first makes the
    loop well-typed. Outside ``shard_map`` nothing varies and ``carry`` comes back as is.
    """
    axes = frozenset().union(*(_varying_axes(a) for a in jax.tree.leaves(operands)))
    if not axes:
        return carry

    def cast(c):
        missing = tuple(sorted(axes - _varying_axes(c)))
        return jax.lax.pcast(c, missing, to="varying") if missing else c

    return jax.tree.map(cast, carry)


def initial_carry(cell: Cell, params: Any, carry: Any) -> Any:
    """Returns ``carry``, checked against the cell, or ``cell.initial_carry(params)`` if None."""
    if carry is None:
        return cell.initial_carry(params)
    check_carry(cell, params, carry)
    return carry


def check_scan_args(
    cell: Cell, params: Any, xs: Array, carry: Any, length: Any
) -> tuple[Any, Array | None]:
    """Checks the arguments of a scan of ``cell`` over ``xs``; returns ``(carry, length)``.

    The carry defaults to ``cell.initial_carry(params)`` and is cast to vary like the
    operands inside ``shard_map`` (:func:`match_varying`); ``length`` is an int32 scalar or
    None (see :func:`check_length`).
    """
    check_inputs(cell, params, xs)
    length = check_length(length, xs.shape[0])
    carry = initial_carry(cell, params, carry)
    return match_varying(carry, params, xs, length), length


def scan(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)``: ``cell.step`` run over one sequence with ``jax.lax.scan``.

    Args:
      cell: a :class:`rnnjax.Cell`.
      params: the cell's parameters.
      xs: ``(T, input_size)``, one sequence.
      carry: initial carry (default ``cell.initial_carry(params)``).
      length: number of valid steps, an int scalar in ``[0, T]`` (default ``T``). Steps
        ``t >= length`` leave the carry unchanged and emit zeros.
      reverse: process the valid prefix from step ``length - 1`` down to 0. Outputs stay
        aligned with their inputs (``ys[t]`` belongs to ``xs[t]``), padding stays at the
        end, and the final carry is the carry after step 0.
      unroll: passed to ``jax.lax.scan``.

    Returns:
      ``final_carry`` (a pytree like ``carry``) and ``ys: (T, hidden_size)``.
    """
    carry, length = check_scan_args(cell, params, xs, carry, length)
    num_steps = xs.shape[0]

    def cast_like(new, old):
        # lax.scan needs a fixed carry type; low-precision params may compute in float32.
        return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)

    if length is None:
        def body(h, x):
            new_h, y = cell.step(params, h, x)
            return cast_like(new_h, h), y

        return jax.lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)

    def masked_body(h, inputs):
        x, t = inputs
        new_h, y = cell.step(params, h, x)
        valid = t < length
        new_h = jax.tree.map(lambda new, old: jnp.where(valid, new, old), cast_like(new_h, h), h)
        return new_h, jnp.where(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(num_steps, dtype=jnp.int32)
    return jax.lax.scan(masked_body, carry, (xs, steps), reverse=reverse, unroll=unroll)


def reverse_valid(xs: Any, length: Any = None) -> Any:
    """Returns ``xs`` with its first ``length`` steps reversed and the padding left in place.

    ``reverse_valid(reverse_valid(xs, n), n) == xs``. Works on any pytree whose leaves have
    time as the leading axis. This is how a bidirectional layer feeds its backward
    direction through the same forward scan as its forward direction.
    """
    leaves = jax.tree.leaves(xs)
    num_steps = leaves[0].shape[0]
    if length is None:
        return jax.tree.map(lambda a: a[::-1], xs)
    t = jnp.arange(num_steps)
    index = jnp.where(t < length, length - 1 - t, t)
    return jax.tree.map(lambda a: jnp.take(a, index, axis=0), xs)
