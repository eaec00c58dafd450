"""The implementation of :mod:`rnnjax.diagnostics` (its docstring describes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import probes
from rnnjax._src.cells import Cell
from rnnjax._src.scan import check_inputs, scan

__all__ = [
    "gradient_flow",
    "gradient_flow_hook",
    "gradient_flow_norms",
    "loops",
    "state_gradient_norms",
    "state_gradients",
]

Array = jax.Array
LossFn = Callable[[Any, Array], Array]


def _check_cell(cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")


def on_one_cell(
    name: str, fn_or_cell: Any, args: tuple, cell_args: str, carry: Any, length: Any
) -> bool:
    """Returns whether ``name(fn_or_cell, *args)`` is a call on one cell (an rnnjax.Cell, then
    ``cell_args``) rather than on a model's scalar loss ``fn(*args)``; raises TypeError naming
    what is wrong with either (``carry`` and ``length`` belong to a call on one cell)."""
    if isinstance(fn_or_cell, Cell):
        if len(args) != len(cell_args.split(", ")):
            raise TypeError(
                f"{name}(cell, {cell_args}, ...) takes {cell_args} after the cell, got "
                f"{len(args)} positional arguments after it"
            )
        return True
    if not callable(fn_or_cell):
        raise TypeError(
            "cell must be an rnnjax.Cell (or, for a model, a scalar loss fn(*args)), got "
            f"{fn_or_cell!r}"
        )
    if carry is not None or length is not None:
        raise TypeError(
            f"{name}(fn, *args): carry and length belong to a call on one cell; pass them to "
            "the model inside fn"
        )
    return False


def _probed_run(fn: Callable, args: tuple) -> tuple[Callable, dict[str, Array], dict]:
    """Returns ``(run, zeros, leaves)``: ``run(probes) = (fn(*args), lengths)`` with
    ``probes`` added to the state of every loop inside it, the zero probes (``{label: (T,
    n)}``) at which ``run`` equals ``fn(*args)`` (derivatives there are dL/d(state_t)), and
    ``{label: ((leaf name, leaf size), ...)}``; ``lengths`` holds each loop's valid steps."""
    # fn closes over args (not handed to eval_shape) so that modules keep their identity
    with probes.probing(modules=args) as context:
        jax.eval_shape(lambda: fn(*args))
    if not context.shapes:
        raise ValueError(
            "fn ran no recurrent loop (rnnjax.scan, a layer or a model): there is no state to probe"
        )
    zeros = {label: jnp.zeros(s.shape, s.dtype) for label, s in context.shapes.items()}

    def run(probe_values):
        with probes.probing(probe_values, modules=args) as ran:
            value = fn(*args)
        lengths = {
            label: jnp.asarray(loop.xs.shape[0] if loop.length is None else loop.length)
            for label, loop in ran.loops.items()
        }
        return value, lengths

    return run, zeros, dict(context.leaves)


def _flow(fn: Callable[..., Array], args: tuple) -> tuple[dict[str, Array], dict[str, Array]]:
    """Returns ``({label: (T, n)}, {label: length})``: :func:`gradient_flow` and the number
    of valid steps of the loop each row belongs to."""
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(*args) -> scalar loss, got {fn!r}")
    run, zeros, leaves = _probed_run(fn, args)
    grads, lengths = jax.grad(run, has_aux=True)(zeros)
    flow, flow_lengths = {}, {}
    for label, g in grads.items():
        if len(leaves[label]) == 1:
            flow[label], flow_lengths[label] = g, lengths[label]
            continue
        start = 0
        for name, size in leaves[label]:
            flow[f"{label}/{name}"] = g[:, start : start + size]
            flow_lengths[f"{label}/{name}"] = lengths[label]
            start += size
    return flow, flow_lengths


def _whole_state_flow(fn: Callable[..., Array], args: tuple) -> dict[str, Array]:
    """Returns ``{label: (T, n)}``: :func:`gradient_flow` with a loop's carry leaves side by
    side in one row (the order of ``ravel_pytree``), as :func:`rnnjax.lags` needs them."""
    run, zeros, _ = _probed_run(fn, args)
    return jax.grad(run, has_aux=True)(zeros)[0]


def gradient_flow(fn: Callable[..., Array], *args: Any) -> dict[str, Array]:
    """Returns ``{label: (T, n)}``: dL/d(state_t) of every recurrent loop inside ``fn``.

    ``L = fn(*args)`` is a scalar loss of ONE example computed with any rnnjax layer,
    model or Flax module (a stack, a bidirectional layer, an encoder–decoder, ...); batch
    with ``jax.vmap``. Each loop (each layer, and each direction of a bidirectional layer)
    is labelled by the path of its parameters in the model's parameter tree, e.g.
    ``"rnn/0/forward"`` and ``"rnn/0/backward"`` for the first layer of a
    ``many_to_one(stack(bidirectional(...), ...))``; ``"scan"`` for a bare
    :func:`rnnjax.scan`. Flax modules add their names: ``"RNN_0/forward"`` for a
    :class:`rnnjax.linen.RNN` submodule, ``"encoder/forward"`` for a
    :class:`rnnjax.nnx.RNN` held as ``self.encoder`` by an nnx module passed in ``args``.
    A carry of several leaves is reported leaf by leaf, its label ending in the leaf's
    name (``"rnn/0/forward/h"`` and ``"rnn/0/forward/c"`` for an LSTM's ``(h, c)``; see
    :class:`rnnjax.Cell`'s ``carry_names``). Row ``t`` belongs to input step ``t`` in every
    direction (for a backward direction, the state after reading ``xs[t]``); rows of
    padded steps are 0.

    A loss over a batch (a model or Flax module applied to ``xs: (B, T, I)``, vmapped
    inside ``fn``) raises ValueError: one probe would be shared by the batch. Write the
    loss for one example (rnnjax.linen/nnx modules take inputs without batch axes) and
    ``jax.vmap`` this function instead. A batch looped over inside ``fn`` by ``lax.map``
    or ``lax.scan`` shares the probe in the same way and is not detected: don't.

    The derivative is total, as in :func:`state_gradients`: a zero probe is added to the
    state leaving every step of every loop and ``L`` is differentiated with respect to all
    of them in one forward and one backward pass. While probed, every loop runs
    ``cell.step`` in ``lax.scan`` (the reference; the fast path computes the same values).

    Example::

        loss = lambda p, x, n, label: losses.masked_cross_entropy(
            model.apply(p, x, length=n), label)
        flow = jax.vmap(lambda x, n, y: gradient_flow(loss, params, x, n, y))(xs, lengths, ys)
        norms = {k: jnp.linalg.norm(g, axis=-1).mean(0) for k, g in flow.items()}
        rnnjax.plots.gradient_norms(norms)
    """
    return _flow(fn, args)[0]


def gradient_flow_norms(fn: Callable[..., Array], *args: Any) -> dict[str, Array]:
    """Returns ``{label: (T,)}``: the norms ||dL/d(state_t)|| of :func:`gradient_flow`."""
    return {k: jnp.linalg.norm(g, axis=-1) for k, g in gradient_flow(fn, *args).items()}


def loops(fn: Callable[..., Any], *args: Any) -> dict[str, probes.Loop]:
    """Returns ``{label: Loop}``: every recurrent loop ``fn(*args)`` runs, with its inputs.

    Each :class:`rnnjax.probes.Loop` holds the cell, its parameters, the sequence it read
    (for a layer above the first, the outputs of the layer below), the initial carry, the
    length and the direction, so that the per-loop diagnostics (:func:`rnnjax.diagnostics.lyapunov_spectrum`,
    :func:`rnnjax.diagnostics.jacobian_norms` of a model) measure each layer of a model as it runs inside it.
    Labels as in :func:`gradient_flow`, one per loop (not per carry leaf).
    """
    with probes.probing(modules=args) as context:
        fn(*args)
    return dict(context.loops)


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

    (Pascanu, Mikolov & Bengio 2013, eqs. 3-5). When the step's output ``y_t`` is (a leaf
    of) its new carry, as in every built-in cell (``y_t = h_t``; for LSTM the ``h`` of
    ``(h, c)``), ∂L/∂y_t is part of row ``t``, so a loss on ``ys[-1]`` gives the last row
    ∂L/∂y_T. A cell whose output is computed apart from its carry (e.g. a readout inside
    the step) has ∂L/∂y_t in row ``t - 1`` instead, where ``y_t`` depends on the state.
    Rows ``t >= length`` are zero.

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
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(final_carry, ys), got {loss_fn!r}")
    _check_cell(cell)
    check_inputs(cell, params, xs)
    flow = gradient_flow(lambda: loss_fn(*scan(cell, params, xs, carry=carry, length=length)))
    return jnp.concatenate(list(flow.values()), axis=-1)  # the leaves, in carry order


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


def _for_each_run(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Returns ``call(state, *args)``: jitted ``fn(*args)`` on the host, once per run.

    A training state batched over runs (vmapped seeds, as :func:`rnnjax.training.fit`
    allows) has a step counter of shape ``(R,)``; then ``args`` (taken from that state)
    are batched too, and each run is probed with its own parameters.
    """
    one, over_runs = jax.jit(fn), jax.jit(jax.vmap(fn))

    def call(state: Any, *args: Any) -> Any:
        batched = jnp.ndim(getattr(state, "step", 0)) == 1
        return jax.device_get((over_runs if batched else one)(*args))

    return call


def _batch_summary(norms: Array, lengths: Array) -> tuple[Array, Array]:
    """Returns ``((T,), ())`` from per-example ``norms: (B, T)`` and ``lengths: (B,)``: the
    mean norm of step ``t`` over the examples in which it is valid (0 where none is), and the
    batch mean of row 0 over the last valid row (NaN when a last row is 0)."""
    valid = jnp.arange(norms.shape[1])[None, :] < lengths[:, None]
    count = jnp.sum(valid, axis=0)
    mean = jnp.sum(jnp.where(valid, norms, 0.0), axis=0) / jnp.maximum(count, 1)
    last = jnp.take_along_axis(norms, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
    ratio = jnp.where(last > 0, norms[:, 0] / jnp.where(last > 0, last, 1.0), jnp.nan)
    return mean, jnp.mean(ratio)


def gradient_flow_hook(
    loss: Callable[..., Array],
    batch: Any,
    *,
    get_params: Callable[[Any], Any] = lambda state: state.params,
    prefix: str = "gradient_flow/",
    ratio_prefix: str | None = "gradient_ratio/",
) -> Callable[[Any], dict[str, Any]]:
    """Returns ``hook(state) -> dict``: the gradient flow of a model (or one cell) in training.

    For :func:`rnnjax.training.fit`'s ``hooks``: on a fixed probe ``batch`` (a tuple of
    arrays with a leading batch axis, the raw inputs of one example each: tokens go
    through the model's embedding), it evaluates :func:`gradient_flow_norms` of
    ``loss(get_params(state), *example)`` for every example in one jitted call and returns,
    per label of :func:`gradient_flow` (loop, direction and carry leaf):

      ``prefix + label``: ``(T,)``, ||dL/d(state_t)|| averaged over the examples in which
        step ``t`` is valid (0 where none is);
      ``ratio_prefix + label`` (unless ``ratio_prefix`` is None): float, the batch mean of
        ||dL/d(state_0)|| / ||dL/d(state_last)||, ``state_last`` being the last valid row of
        each example, the attenuation across the sequence (< 1: vanishing, > 1: exploding;
        in input order, so for a backward direction the state read last over the first).

    A state batched over runs (vmapped seeds) gives ``(R, T)`` rows and ``(R,)`` ratios.
    ``rnnjax.plots.gradient_norms`` draws the rows of a history as they are (strip
    ``prefix``). One cell is the model ``rnnjax.scan`` (label ``"scan"``); ``get_params``
    may return anything ``loss`` takes first, e.g. the cell's and a readout's parameters.

    Example::

        loss = lambda p, x, n, y: losses.cross_entropy(model.apply(p, x, length=n), y)
        hook = diagnostics.gradient_flow_hook(loss, (xs[:32], lengths[:32], ys[:32]))
        training.fit(..., hooks=[hook])

        # one cell, its final state read by a readout trained beside it
        cell_loss = lambda p, x, n: jnp.dot(p[1], rnnjax.scan(cell, p[0], x, length=n)[0])
        hook = diagnostics.gradient_flow_hook(
            cell_loss, (xs, lengths), get_params=lambda s: (s.params["rnn"], s.params["w"]))
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(params, *example) -> scalar, got {loss!r}")
    batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"batch must be arrays with one leading batch axis of the same size, got leading "
            f"sizes {sorted(map(str, sizes))}"
        )

    def flow(params):
        grads, lengths = jax.vmap(lambda *example: _flow(loss, (params, *example)))(*batch)
        metrics = {}
        for label, g in grads.items():
            mean, ratio = _batch_summary(jnp.linalg.norm(g, axis=-1), lengths[label])
            metrics[prefix + label] = mean
            if ratio_prefix is not None:
                metrics[ratio_prefix + label] = ratio
        return metrics

    run = _for_each_run(flow)

    def hook(state: Any) -> dict[str, Any]:
        metrics = run(state, get_params(state))
        return {k: float(v) if jnp.ndim(v) == 0 else v for k, v in metrics.items()}

    return hook
