"""The time loop: :func:`scan` runs a cell over one sequence, step by step, as written.

This is the reference every faster path (``rnnjax.fused``) is tested against, and the loop
any cell without one runs. A cell never sees padding: :mod:`rnnjax.padding` cleans the
inputs of steps ``t >= length`` to zeros, those steps leave the carry unchanged and emit
zeros, so the final carry is the carry after the last valid step; a reverse scan processes
the valid prefix back to front while its outputs stay aligned with their inputs and padding
stays at the end.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax import padding, probes
from rnnjax.cells import Cell

Array = jax.Array


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: (tuple(jnp.shape(a)), jnp.result_type(a).name), tree)


def check_inputs(cell: Cell, params: Any, xs: Any, *, name: str = "xs") -> None:
    """Raises ValueError unless ``xs`` is ``(T, input_size)`` for this cell's ``params``."""
    shape, dtype = jnp.shape(xs), jnp.result_type(xs)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        raise TypeError(
            f"{name} must be floating point features of shape (T, input_size); got {dtype} "
            f"of shape {shape}. Integer tokens are embedded first: rnnjax.readouts.embedding, "
            f"or a model's embedding= option (many_to_one, many_to_many, one_to_many)"
        )
    if len(shape) != 2:
        hint = " (batch with jax.vmap)" if len(shape) == 3 else ""
        raise ValueError(
            f"{name} must have shape (T, input_size) for one sequence{hint}; got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} must have at least one time step (T >= 1), got shape {shape}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point features; got dtype {dtype}")
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
        hint = (
            " (for a batch, vmap over the carry too)"
            if any(len(g) == len(e) + 1 for g, e in zip(got_shapes, exp_shapes))
            else ""
        )
        raise ValueError(
            f"{name} has the wrong shapes{hint}: expected {exp_shapes}, got {got_shapes}"
        )


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
    length = padding.check_length(length, xs.shape[0])
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
        ``t >= length`` leave the carry unchanged and emit zeros, and whatever their
        inputs hold (NaN, inf) reaches no value and no gradient. A concrete length out of
        range raises ValueError; a traced one is clipped to ``[0, T]``, or raises under
        :func:`rnnjax.checked` (see :func:`rnnjax.padding.check_length`).
      reverse: process the valid prefix from step ``length - 1`` down to 0. Outputs stay
        aligned with their inputs (``ys[t]`` belongs to ``xs[t]``), padding stays at the
        end, and the final carry is the carry after step 0.
      unroll: passed to ``jax.lax.scan``.

    Returns:
      ``final_carry`` (a pytree like ``carry``) and ``ys: (T, hidden_size)``.
    """
    carry, length = check_scan_args(cell, params, xs, carry, length)
    num_steps = xs.shape[0]
    probe = None
    if probes.active():  # rnnjax.diagnostics.gradient_flow: a zero on every new state
        size, dtype = probes.state_size(carry)
        loop = probes.Loop(cell, params, xs, carry, length, reverse)
        probe = probes.take(loop, size, jnp.result_type(dtype, xs))
    if reverse:
        xs, probe = padding.reverse_valid((xs, probe), length)
    valid = padding.valid_steps(num_steps, length)
    xs = padding.clean(xs, valid)

    def body(h, inputs):
        x, v, p = inputs
        new_h, y = cell.step(params, h, x)
        if p is not None:
            new_h, y = probes.add(new_h, y, p)
        # lax.scan needs a fixed carry type; low-precision params may compute in float32.
        new_h = jax.tree.map(lambda n, o: n.astype(o.dtype), new_h, h)
        return padding.keep_carry(v, new_h, h), padding.zero_outputs(v, y)

    final, ys = jax.lax.scan(body, carry, (xs, valid, probe), unroll=unroll)
    return final, padding.reverse_valid(ys, length) if reverse else ys
