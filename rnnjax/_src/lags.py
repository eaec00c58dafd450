"""The parameter gradient decomposed by time lag (Pascanu, Mikolov & Bengio 2013, §2).

Backpropagation through time sums, over every output step ``t`` and every earlier step
``k``, the effect of the parameters acting at step ``k`` on the loss read at step ``t``
(Pascanu et al. 2013, eqs. 3-5):

    ∂L/∂θ = Σ_t Σ_{k≤t} (∂L_t/∂h_t) (∂h_t/∂h_k) (∂⁺h_k/∂θ),

where ∂⁺h_k/∂θ is the "immediate" derivative, θ perturbed at step ``k`` only. Grouping the
terms by their lag ``d = t - k`` gives one parameter-shaped component per lag; they sum to
the full gradient. Vanishing gradients mean the components of long lags are negligible
next to the short ones, whatever the total looks like. ``dL/dh_t``
(:func:`rnnjax.diagnostics.state_gradients`) mixes all lags.

The computation is one forward pass and one backward pass whose adjoint keeps one row per
lag: row ``d`` at step ``k`` is the gradient that outputs ``d`` steps later send to the
carry leaving step ``k``. Each backward step applies the step's vector-Jacobian product to
every row (vmapped), adds the parameter part of row ``d`` to component ``d`` and shifts the
rows by one lag. Cost: ``T`` vector-Jacobian products per step (``T²`` in all), memory
``T`` copies of the parameters.

The loss reads the outputs ``ys`` and the final carry: ``L = loss_fn(final_carry, ys)``
as in :func:`rnnjax.diagnostics.state_gradients`. Output ``y_t`` is read at step ``t`` and
the final carry at the last valid step. A parameter-dependent initial carry
(``cell.initial_carry(params)``) counts with step 0. Padding follows :func:`rnnjax.scan`:
steps ``t >= length`` contribute exactly zero, whatever their inputs hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax._src import padding
from rnnjax._src.cells import Cell
from rnnjax._src.diagnostics import _whole_state_flow, loops, on_one_cell
from rnnjax._src.scan import check_inputs, initial_carry

__all__ = ["gradient_by_lag", "lag_gradients", "layer_gradient_by_lag", "layer_lag_gradients"]

Array = jax.Array


def _check_cell(cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")


def _step_fn(cell: Cell) -> Callable[[Any, Any, Array], tuple[Any, Array]]:
    """Returns ``cell.step`` with the new carry cast to the old one's dtypes, as in the scan."""

    def step(params, carry, x):
        new_carry, y = cell.step(params, carry, x)
        return jax.tree.map(lambda n, o: n.astype(o.dtype), new_carry, carry), y

    return step


def _trajectory(cell: Cell, params: Any, xs: Array, carry: Any, valid: Array | None):
    """Returns ``(final_carry, carries entering each step (T, ...), ys (T, ...))``."""
    step = _step_fn(cell)

    def body(c, inputs):
        x, v = inputs
        new_c, y = step(params, c, x)
        return padding.keep_carry(v, new_c, c), (c, padding.zero_outputs(v, y))

    final, (previous, ys) = jax.lax.scan(body, carry, (xs, valid))
    return final, previous, ys


def _lag_components(
    cell: Cell,
    params: Any,
    xs: Array,
    previous: Any,
    valid: Array,
    direct_carry: Any,
    direct_y: Any,
    initial_cotangent: Any,
    carry_fn: Callable[[Any], Any] | None,
) -> Any:
    """Returns the params-like tree with a leading lag axis ``(T, ...)``.

    ``direct_carry`` / ``direct_y`` (time leading) are the gradients the loss sends to the
    carry leaving step ``t`` and to ``y_t`` by paths that do not run through a later step
    of this loop: they enter the adjoint at lag 0 at step ``t``. ``initial_cotangent`` is the
    lag-indexed gradient on the initial carry when no step is valid (length 0), and
    ``carry_fn(params)`` the initial carry when it depends on the parameters (else None).
    """
    num_steps = xs.shape[0]
    step = _step_fn(cell)
    zeros_like_lags = lambda tree: jax.tree.map(
        lambda a: jnp.zeros((num_steps, *a.shape), a.dtype), tree
    )
    at_lag_0 = lambda rows, row: jax.tree.map(lambda r, a: r.at[0].add(a), rows, row)

    def body(state, inputs):
        adjoint, acc, carry_cotangent = state
        c_prev, x, v, dc, dy = inputs
        adjoint = at_lag_0(adjoint, dc)
        y_rows = at_lag_0(zeros_like_lags(dy), dy)
        _, vjp = jax.vjp(lambda p, c: step(p, c, x), params, c_prev)
        d_params, d_carry = jax.vmap(vjp)((adjoint, y_rows))
        acc = padding.keep_carry(v, jax.tree.map(jnp.add, acc, d_params), acc)
        # The carry entering step k is d + 1 steps before an output d steps after step k.
        shifted = jax.tree.map(lambda g: jnp.roll(g, 1, axis=0).at[0].set(0), d_carry)
        new_state = (shifted, acc, d_carry)
        return padding.keep_carry(v, new_state, (adjoint, acc, carry_cotangent)), None

    carry0 = jax.tree.map(lambda a: a[0], previous)
    init = (zeros_like_lags(carry0), zeros_like_lags(params), initial_cotangent)
    (_, acc, carry_cotangent), _ = jax.lax.scan(
        body, init, (previous, xs, valid, direct_carry, direct_y), reverse=True
    )
    if carry_fn is not None:
        _, vjp = jax.vjp(carry_fn, params)
        (d_params,) = jax.vmap(vjp)(carry_cotangent)
        acc = jax.tree.map(jnp.add, acc, d_params)
    return acc


def lag_gradients(
    cell: Cell,
    params: Any,
    xs: Array,
    loss_fn: Callable[[Any, Array], Array],
    *,
    carry: Any = None,
    length: Any = None,
) -> Any:
    """Returns a tree like ``params`` whose leaves have a leading lag axis ``(T, ...)``.

    Entry ``d`` of each leaf is the component of dL/dθ from time lag ``d``: the sum over
    steps ``k`` of the effect of θ acting at step ``k`` on the loss read at step ``k + d``
    (see the module docstring). Summed over the lag axis it is ``jax.grad`` of
    ``L = loss_fn(*rnnjax.scan(cell, params, xs, carry=carry, length=length))``; it is linear
    in the loss, so the components of a batch-mean loss are the batch mean of these.

    Args:
      cell: a :class:`rnnjax.Cell`.
      params: the cell's parameters.
      xs: ``(T, input_size)``, one sequence (batch with ``jax.vmap``).
      loss_fn: ``loss_fn(final_carry, ys) -> scalar`` with ``ys: (T, hidden_size)``.
      carry: initial carry (default ``cell.initial_carry(params)``, whose dependence on the
        parameters counts with step 0).
      length: number of valid steps, an int scalar in ``[0, T]`` (default ``T``); steps
        ``t >= length`` contribute exactly zero.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(final_carry, ys), got {loss_fn!r}")
    _check_cell(cell)
    check_inputs(cell, params, xs)
    num_steps = xs.shape[0]
    length = padding.check_length(length, num_steps)
    valid = padding.valid_steps(num_steps, length)
    valid = jnp.ones((num_steps,), bool) if valid is None else valid
    xs = padding.clean(xs, valid)
    carry_fn = cell.initial_carry if carry is None else None
    carry = initial_carry(cell, params, carry)
    final, previous, ys = _trajectory(cell, params, xs, carry, valid)
    d_final, d_ys = jax.grad(loss_fn, argnums=(0, 1))(final, ys)
    # Padded outputs are constant zeros: whatever the loss sends them reaches no parameter.
    d_ys = padding.clean(d_ys, valid)
    last = num_steps - 1 if length is None else length - 1
    is_last = jnp.arange(num_steps) == last
    direct_carry = jax.tree.map(
        lambda g: jnp.where(is_last.reshape((-1,) + (1,) * g.ndim), g, jnp.zeros_like(g)),
        d_final,
    )
    # With no valid step the final carry is the initial one: its gradient is at lag 0.
    none_valid = jnp.asarray(last < 0)
    initial_cotangent = jax.tree.map(
        lambda g: jnp.zeros((num_steps, *g.shape), g.dtype).at[0].set(jnp.where(none_valid, g, 0)),
        d_final,
    )
    return _lag_components(
        cell, params, xs, previous, valid, direct_carry, d_ys, initial_cotangent, carry_fn
    )


def _norms(components: Any, per_leaf: bool) -> Array | dict[str, Array]:
    """Returns the per-lag norms ``(T,)`` of a lag-leading tree, over all leaves or per leaf."""
    squares = jax.tree.map(
        lambda a: jnp.sum(jnp.square(a.reshape(a.shape[0], -1)), axis=1), components
    )
    if not per_leaf:
        return jnp.sqrt(sum(jax.tree.leaves(squares)))
    flat, _ = jax.tree_util.tree_flatten_with_path(squares)
    return {_path_label(path): jnp.sqrt(s) for path, s in flat}


def _path_label(path: tuple) -> str:
    """Returns ``"wh/kernel"``-style labels for a tree path (dict keys, indices, attributes)."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def gradient_by_lag(
    fn_or_cell: Any,
    *args: Any,
    per_leaf: bool = False,
    carry: Any = None,
    length: Any = None,
) -> Any:
    """Returns the norm of the parameter gradient's component from each time lag ``d``.

    ``gradient_by_lag(cell, params, xs, loss_fn, carry=None, length=None)`` returns ``(T,)``
    for ``L = loss_fn(*rnnjax.scan(cell, params, xs, carry=carry, length=length))``: entry
    ``d`` is ||Σ_k (∂L_{k+d}/∂h_{k+d}) (∂h_{k+d}/∂h_k) (∂⁺h_k/∂θ)|| (Pascanu, Mikolov &
    Bengio 2013, eqs. 3-5; the components themselves, which sum to dL/dθ, are
    :func:`lag_gradients`). ``gradient_by_lag(fn, *args)`` returns ``{label: (T,)}`` for
    every loop inside the scalar loss ``fn(*args)`` (labels of
    :func:`rnnjax.diagnostics.gradient_flow`), each loop's own parameters decomposed by the
    lag between the step they act at and the step whose state carries their effect out of
    the loop. With ``per_leaf=True``, each ``(T,)`` becomes ``{leaf path: (T,)}``, one norm
    per parameter leaf (paths like ``"wh"`` or ``"0/kernel"``).
    """
    if on_one_cell("gradient_by_lag", fn_or_cell, args, "params, xs, loss_fn", carry, length):
        components = lag_gradients(fn_or_cell, *args, carry=carry, length=length)
        return _norms(components, per_leaf)
    return layer_gradient_by_lag(fn_or_cell, *args, per_leaf=per_leaf)


def layer_lag_gradients(fn: Callable[..., Array], *args: Any) -> dict[str, Any]:
    """Returns ``{label: tree (T, ...)}``: the lag components of every loop inside ``fn``.

    ``L = fn(*args)`` is a scalar loss of ONE example computed with any rnnjax layer or
    model, as for :func:`rnnjax.diagnostics.gradient_flow`, whose labels these are. For each
    loop, the component at lag ``d`` is the part of dL/d(that loop's cell parameters) that
    the parameters acting at step ``k`` send through ``d`` steps of the loop's own
    recurrence to its state at step ``k + d``, from where it leaves the loop (to the
    readout, the layer above, the final carry). Summed over lags it is that loop's
    parameter gradient. Steps are counted in the order the loop reads its inputs (a
    backward direction from its last valid step). The step's output must be (a leaf of)
    its new carry, as in every built-in cell; for other cells use :func:`lag_gradients`.
    """
    flows = _whole_state_flow(fn, args)
    out = {}
    for label, loop in loops(fn, *args).items():
        out[label] = _loop_lag_gradients(loop, flows[label])
    return out


def _loop_lag_gradients(loop: Any, flow: Array) -> Any:
    """Returns the lag components of one probed loop, given its total state gradients."""
    cell, params = loop.cell, loop.params
    num_steps = loop.xs.shape[0]
    length = loop.length
    xs, flow = padding.reverse_valid((loop.xs, flow), length) if loop.reverse else (loop.xs, flow)
    valid = padding.valid_steps(num_steps, length)
    valid = jnp.ones((num_steps,), bool) if valid is None else valid
    xs = padding.clean(xs, valid)
    carry_fn = cell.initial_carry if loop.carry is None else None
    carry = initial_carry(cell, params, loop.carry)
    flat0, unravel = ravel_pytree(carry)
    _check_output_in_carry(cell, params, carry, xs[0])
    _, previous, _ = _trajectory(cell, params, xs, carry, valid)
    step = _step_fn(cell)
    flow = flow.astype(flat0.dtype)

    # The probe gradient is total: dL/dh_t = D_t + dL/dh_{t+1} ∂h_{t+1}/∂h_t. Its direct
    # part D_t is what leaves the loop at step t, the lag-0 input of the decomposition.
    def through_next_step(c_prev, x, g_next):
        _, vjp = jax.vjp(lambda c: step(params, c, x)[0], c_prev)
        (d_c,) = vjp(unravel(g_next))
        return ravel_pytree(d_c)[0]

    later = jax.tree.map(lambda a: a[1:], previous)
    carried = jax.vmap(through_next_step)(later, xs[1:], flow[1:])
    carried = jnp.where(valid[1:, None], carried, 0)
    direct = flow - jnp.concatenate([carried, jnp.zeros_like(flow[:1])])
    direct_carry = jax.vmap(unravel)(jnp.where(valid[:, None], direct, 0))
    y_shape = jax.eval_shape(lambda: step(params, carry, xs[0])[1])
    direct_y = jnp.zeros((num_steps, *y_shape.shape), y_shape.dtype)
    initial_cotangent = jax.tree.map(lambda a: jnp.zeros((num_steps, *a.shape), a.dtype), carry)
    return _lag_components(
        cell, params, xs, previous, valid, direct_carry, direct_y, initial_cotangent, carry_fn
    )


def _check_output_in_carry(cell: Cell, params: Any, carry: Any, x: Array) -> None:
    """Raises ValueError unless the step's output is one of its new carry's leaves."""

    def check(c, x_):
        new_carry, y = cell.step(params, c, x_)
        if not any(y is leaf for leaf in jax.tree.leaves(new_carry)):
            raise ValueError(
                f"layer_lag_gradients needs a cell whose output y is (a leaf of) its new carry; "
                f"the cell {cell.kind!r} computes y apart from it: use lag_gradients(cell, ...)"
            )
        return y

    jax.eval_shape(check, carry, x)


def layer_gradient_by_lag(
    fn: Callable[..., Array], *args: Any, per_leaf: bool = False
) -> dict[str, Any]:
    """Returns ``{label: (T,)}``: per loop in ``fn(*args)``, the norms of
    :func:`layer_lag_gradients` (``{label: {leaf path: (T,)}}`` with ``per_leaf=True``)."""
    return {
        label: _norms(components, per_leaf)
        for label, components in layer_lag_gradients(fn, *args).items()
    }
