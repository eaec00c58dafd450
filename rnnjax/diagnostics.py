"""Gradient-flow diagnostics: backpropagation through time made measurable.

The *state* of a cell is its whole carry flattened with ``jax.flatten_util.ravel_pytree``
(for an LSTM: ``h`` then ``c``), a vector of size ``n``. ``state_t`` is the carry that
step ``t`` hands to step ``t + 1`` (0-based: ``state_0`` is the carry after reading
``xs[0]``, ``state_{T-1}`` is the final carry). Every function acts on ONE sequence
``xs: (T, input_size)``, works for any :class:`rnnjax.Cell` (including ones written by
users), under ``jax.jit``, and batches with ``jax.vmap`` (a per-example ``length``
included). Padding follows :func:`rnnjax.scan`: steps ``t >= length`` leave the carry
unchanged, so they carry no gradient and their step Jacobian is the identity.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax.cells import Cell
from rnnjax.scan import check_carry, check_inputs, scan

Array = jax.Array
LossFn = Callable[[Any, Array], Array]


def _initial_carry(cell: Cell, params: Any, carry: Any) -> Any:
    if carry is None:
        return cell.initial_carry(params)
    check_carry(cell, params, carry)
    return carry


def _check_cell(cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")


def _probed_cell(cell: Cell, input_size: int, x_dtype: Any, unravel: Callable) -> Cell:
    """Returns ``cell`` reading ``[x_t, p_t]`` and adding the probe ``p_t`` to its new carry.

    With ``p = 0`` it computes exactly what ``cell`` computes, and the gradient of a loss
    with respect to ``p_t`` is the total derivative dL/d(state_t): every path from the
    carry leaving step ``t`` to the loss, in one backward pass (the probe trick).
    """

    def step(params, carry, x_and_probe):
        x = x_and_probe[:input_size].astype(x_dtype)
        new_carry, y = cell.step(params, carry, x)
        probe = unravel(x_and_probe[input_size:])
        new_carry = jax.tree.map(lambda c, p: c + p.astype(c.dtype), new_carry, probe)
        return new_carry, y

    return Cell(cell.init, cell.initial_carry, step, cell.hidden_size, ("probed", cell.kind))


def state_gradients(
    cell: Cell,
    params: Any,
    xs: Array,
    loss_fn: LossFn,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n)``: row ``t`` is dL/d(state_t), the gradient BPTT delivers to step ``t``.

    ``L = loss_fn(final_carry, ys)`` with ``(final_carry, ys) = rnnjax.scan(cell, params,
    xs, carry=carry, length=length)``. The derivative is total: it sums every path from
    the carry leaving step ``t`` to ``L`` (through later steps and their outputs and
    through the final carry),

        dL/dh_t = ∂L/∂h_T ∏_{s=t+1}^{T} ∂h_s/∂h_{s-1} + Σ_{s>t} ∂L/∂y_s ∂y_s/∂h_t

    (Pascanu, Mikolov & Bengio 2013, eqs. 3-5). The output ``y_t`` of step ``t`` is a
    sibling of ``state_t`` in the graph, not a function of it, so ∂L/∂y_t does not enter
    row ``t`` (it enters row ``t - 1``). Rows ``t >= length`` are zero.

    Cost: one forward and one backward pass. A zero probe ``p_t`` is added to the carry
    leaving each step and the loss is differentiated with respect to the ``(T, n)`` probe.

    Args:
      cell: a :class:`rnnjax.Cell`.
      params: the cell's parameters.
      xs: ``(T, input_size)``, one sequence (batch with ``jax.vmap``).
      loss_fn: ``loss_fn(final_carry, ys) -> scalar`` with ``ys: (T, hidden_size)``.
      carry: initial carry (default ``cell.initial_carry(params)``).
      length: number of valid steps, an int scalar in ``[0, T]`` (default ``T``).

    Returns:
      ``(T, n)`` with ``n`` the size of the flattened carry (``2 * hidden_size`` for LSTM,
      ``h`` before ``c``), in the dtype of the flattened carry (promoted with ``xs``).
    """
    _check_cell(cell)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(final_carry, ys), got {loss_fn!r}")
    check_inputs(cell, params, xs)
    carry = _initial_carry(cell, params, carry)
    flat, unravel = ravel_pytree(carry)
    num_steps, input_size = xs.shape
    dtype = jnp.result_type(xs, flat)
    probed = _probed_cell(cell, input_size, xs.dtype, unravel)

    def loss_of_probe(probe):
        inputs = jnp.concatenate([xs.astype(dtype), probe], axis=1)
        final, ys = scan(probed, params, inputs, carry=carry, length=length)
        return loss_fn(final, ys)

    return jax.grad(loss_of_probe)(jnp.zeros((num_steps, flat.size), dtype))


def state_gradient_norms(
    cell: Cell,
    params: Any,
    xs: Array,
    loss_fn: LossFn,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T,)``: the Euclidean norms ||dL/d(state_t)|| of :func:`state_gradients`."""
    grads = state_gradients(cell, params, xs, loss_fn, carry=carry, length=length)
    return jnp.linalg.norm(grads, axis=-1)
