"""Layers: whole-sequence maps built from cells, and their composition.

A layer is a record of pure functions like a cell, but it maps a whole sequence:
``layer.apply(params, xs, *, length=None, carry=None, key=None, train=False)`` returns
``(final_carry, ys)`` for ONE sequence ``xs: (T, input_size)``. Batching is ``jax.vmap``,
with a per-example ``length`` if the batch is padded.

Composition is plain functions: :func:`recurrent` lifts a cell to a layer,
:func:`bidirectional` runs two cells in opposite directions, :func:`stack` chains layers.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, padding, probes
from rnnjax._src.cells import Cell
from rnnjax._src.scan import check_args, check_inputs, check_options, dispatch
from rnnjax._src.scan import initial_carry as carry_or_default

__all__ = ["Layer", "bidirectional", "dropout", "recurrent", "stack"]

Array = jax.Array


class Layer(NamedTuple):
    """A sequence-to-sequence map as pure functions over plain pytrees.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, xs, *, length=None, carry=None, key=None, train=False)
        -> (final_carry, ys)`` with ``xs: (T, input_size)``, ``ys: (T, output_size)``.
        ``key`` and ``train`` matter only to layers with dropout.
      output_size: size of each ``ys[t]``.
      initial_carry: ``initial_carry(params) -> carry``, the carry ``apply`` starts from
        by default (zeros), for one example.
    """

    init: Callable[[Array, int], Any]
    apply: Callable[..., tuple[Any, Array]]
    output_size: int
    initial_carry: Callable[[Any], Any]


def _check_cell(name: str, cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(
            f"{name} must be a rnnjax.Cell (e.g. rnnjax.lstm(16)), got {type(cell).__name__}"
        )


def _params_checker(init: Callable[[Array, int], Any]) -> Callable[[Any, Any], None]:
    """Returns ``check(params, xs)``: raises ValueError naming the first parameter that is not
    what ``init`` makes for ``xs``'s feature size (see ``rnnjax.checks.check_tree``).

    The expected tree is ``jax.eval_shape`` of ``init``, traced once per input size, so an
    eager loop over ``apply`` does not trace ``init`` again at every step. Dtypes need only
    be of the same kind: parameters cast to bfloat16 for a forward pass are fine. When the
    parameters are right for another input size (a dimension of the leaf that differs), the
    error is about ``xs`` instead. An ``xs`` that is not ``(T, features)`` floats is left to
    the loop's own check.
    """
    expected: dict[int, Any] = {}

    def made_for(size: int) -> Any:
        if size not in expected:
            expected[size] = jax.eval_shape(lambda k: init(k, size), jax.random.key(0))
        return expected[size]

    def check(params, xs):
        shape = jnp.shape(xs)
        if len(shape) != 2 or not jnp.issubdtype(jnp.result_type(xs), jnp.floating):
            return
        try:
            checks.check_tree(made_for(shape[1]), params, name="params", exact_dtypes=False)
        except ValueError:
            for size in {d for leaf in jax.tree.leaves(params) for d in jnp.shape(leaf)}:
                if size == shape[1] or size <= 0:
                    continue
                try:
                    checks.check_tree(made_for(size), params, exact_dtypes=False)
                except ValueError:
                    continue
                raise ValueError(
                    f"xs has feature size {shape[1]} but the parameters expect "
                    f"input_size={size}: expected shape (T, {size}), got {shape}"
                ) from None
            raise

    return check


# The apply of each layer made here without its parameter check, keyed by the checked one: a
# stack checks its whole tree once (the message names the layer: params/0/forward/w_hh)
# and runs its layers through these. Any other layer is run by its own apply.
_UNCHECKED_APPLY: weakref.WeakKeyDictionary[Callable, Callable] = weakref.WeakKeyDictionary()


def recurrent(
    cell: Cell,
    reverse: bool = False,
    *,
    unroll: int | bool | None = None,
    impl: str = "auto",
    remat: Any = None,
) -> Layer:
    """Returns the layer that runs ``cell`` over a sequence with :func:`rnnjax.scan`.

    Params are the cell's params, checked at ``apply`` against what ``cell.init`` makes for
    the inputs' feature size (parameters of another cell or size raise ValueError naming
    the parameter). Carry is the cell's carry. ``reverse=True`` processes the valid prefix
    back to front (see :func:`rnnjax.scan`).

    ``unroll``, ``impl`` and ``remat`` choose how the loop runs, not what it computes (see
    :func:`rnnjax.scan`; checked here, once): ``unroll=None`` is the backend's measured
    best; ``impl="auto"`` uses the fast path for the built-in cells and ``cell.step`` in
    ``lax.scan`` otherwise; ``remat="sqrt"`` (or a segment length) recomputes the forward
    pass in segments during backpropagation to bound memory.
    The fast path is differentiable in reverse mode only; forward mode (``jax.jvp``,
    ``jax.jacfwd``) needs ``impl="reference"``.
    """
    _check_cell("cell", cell)
    check_options(cell, impl, remat)

    check_params = _params_checker(cell.init)
    scan = functools.partial(dispatch, reverse=reverse, unroll=unroll, impl=impl, remat=remat)

    def apply(params, xs, *, length=None, carry=None, key=None, train=False):
        del key, train
        check_params(params, xs)
        carry, length = check_args(cell, params, xs, carry, length)
        return scan(cell, params, xs, carry, length)

    def unchecked(params, xs, *, length=None, carry=None, key=None, train=False):
        del key, train
        carry, length = check_args(cell, params, xs, carry, length)
        return scan(cell, params, xs, carry, length)

    _UNCHECKED_APPLY[apply] = unchecked
    return Layer(cell.init, apply, cell.hidden_size, cell.initial_carry)


_MERGES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mean": lambda f, b: 0.5 * (f + b),
}


def _same_shapes(a: Any, b: Any) -> bool:
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        jnp.shape(x) == jnp.shape(y) and jnp.result_type(x) == jnp.result_type(y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def bidirectional(
    forward_cell: Cell,
    backward_cell: Cell | None = None,
    merge: str = "concat",
    *,
    unroll: int | bool | None = None,
    impl: str = "auto",
    remat: Any = None,
) -> Layer:
    """Returns a layer running one cell forward and another backward over the valid prefix.

    ``ys[t] = merge(forward_ys[t], backward_ys[t])`` where the backward direction reads
    ``xs[length-1], ..., xs[0]`` and its outputs are put back in input order, so both
    outputs at ``t`` belong to ``xs[t]`` and padding gives zeros in both.

    When the two cells have the same step (one cell for both directions, the default, or
    two built the same way: equal :class:`rnnjax.GatedStep` objects) and their
    parameters have equal shapes, both directions run as ONE scan vmapped over a stacked
    direction axis (the backward input is the valid prefix reversed), which is what makes a
    bidirectional layer cost about as much as one direction on parallel hardware. Cells
    with different steps run as two scans, each its own step.

    Args:
      forward_cell: the forward cell.
      backward_cell: the backward cell (default: another cell like ``forward_cell``, with
        its own parameters).
      merge: ``"concat"`` (output size ``H_f + H_b``), ``"sum"`` or ``"mean"`` (need
        ``H_f == H_b``).
      unroll, impl, remat: how each direction's loop runs, as in :func:`recurrent`.

    Params: ``{"forward": ..., "backward": ...}``. Carry: ``(forward_carry, backward_carry)``.
    """
    _check_cell("forward_cell", forward_cell)
    backward_cell = forward_cell if backward_cell is None else backward_cell
    _check_cell("backward_cell", backward_cell)
    check_options(forward_cell, impl, remat)
    check_options(backward_cell, impl, remat)

    scan = functools.partial(dispatch, unroll=unroll, impl=impl, remat=remat)

    if merge not in _MERGES:
        raise ValueError(f"merge must be one of {sorted(_MERGES)}, got {merge!r}")
    h_f, h_b = forward_cell.hidden_size, backward_cell.hidden_size
    if merge != "concat" and h_f != h_b:
        raise ValueError(
            f"merge={merge!r} needs equal hidden sizes, got forward {h_f} and backward {h_b}"
        )
    output_size = h_f + h_b if merge == "concat" else h_f
    merge_fn = _MERGES[merge]
    # Equal steps compute the same function of (params, carry, x): a GatedStep compares
    # its update, hidden, additive and dtype; any other step compares by identity.
    same_step = forward_cell.step == backward_cell.step

    def init(key, input_size):
        k_f, k_b = jax.random.split(key)
        return {
            "forward": forward_cell.init(k_f, input_size),
            "backward": backward_cell.init(k_b, input_size),
        }

    def initial_carry(params):
        return (
            forward_cell.initial_carry(params["forward"]),
            backward_cell.initial_carry(params["backward"]),
        )

    check_params = _params_checker(init)

    def apply(params, xs, *, length=None, carry=None, key=None, train=False):
        check_params(params, xs)
        return unchecked(params, xs, length=length, carry=carry, key=key, train=train)

    def unchecked(params, xs, *, length=None, carry=None, key=None, train=False):
        del key, train
        p_f, p_b = params["forward"], params["backward"]
        if carry is not None and not (isinstance(carry, (tuple, list)) and len(carry) == 2):
            raise TypeError(
                "carry of a bidirectional layer must be a pair (forward_carry, backward_carry), "
                f"got {type(carry).__name__}"
            )
        c_f, c_b = (None, None) if carry is None else carry
        c_f, length = check_args(forward_cell, p_f, xs, c_f, length)
        if backward_cell.input_size is not None and backward_cell is not forward_cell:
            check_inputs(backward_cell, p_b, xs)
        c_b = carry_or_default(backward_cell, p_b, c_b)
        if probes.active():  # probed for gradient flow: each direction its own named loop
            with probes.scope("forward"):
                final_f, ys_f = scan(forward_cell, p_f, xs, c_f, length)
            with probes.scope("backward"):
                final_b, ys_b = scan(backward_cell, p_b, xs, c_b, length, reverse=True)
            return (final_f, final_b), merge_fn(ys_f, ys_b)
        xs_b = padding.reverse_valid(xs, length)
        if same_step and _same_shapes(p_f, p_b) and _same_shapes(c_f, c_b):
            stacked = lambda a, b: jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)
            run = jax.vmap(functools.partial(scan, forward_cell), (0, 0, 0, None))
            final, ys = run(stacked(p_f, p_b), jnp.stack([xs, xs_b]), stacked(c_f, c_b), length)
            final_f = jax.tree.map(lambda a: a[0], final)
            final_b = jax.tree.map(lambda a: a[1], final)
            ys_f, ys_b = ys[0], ys[1]
        else:
            final_f, ys_f = scan(forward_cell, p_f, xs, c_f, length)
            final_b, ys_b = scan(backward_cell, p_b, xs_b, c_b, length)
        return (final_f, final_b), merge_fn(ys_f, padding.reverse_valid(ys_b, length))

    _UNCHECKED_APPLY[apply] = unchecked
    return Layer(init, apply, output_size, initial_carry)


def dropout(key: Array, rate: float, x: Array) -> Array:
    """Returns ``x`` with each entry zeroed with probability ``rate``, the others scaled by ``1 / (1 - rate)``.

    Inverted dropout (Srivastava et al. 2014), the one the library uses: between the layers
    of :func:`stack` and on a language model's embeddings and outputs.
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


_dropout = dropout  # inside stack, its argument `dropout` (the rate) shadows the function


def stack(*layers: Layer, dropout: float = 0.0) -> Layer:
    """Returns the layer that feeds each layer's outputs to the next (a deep RNN).

    Args:
      *layers: the layers, bottom first.
      dropout: dropout rate on the outputs between layers (not after the last), as in
        ``torch.nn.LSTM(dropout=...)``. Active only in ``apply(..., train=True, key=key)``.

    Params: a list, one entry per layer. Carry: a list of per-layer carries; the final
    carry likewise.
    """
    if not layers:
        raise ValueError("stack needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if isinstance(layer, Cell):
            raise TypeError(
                f"layer {i} of stack is a Cell (kind {layer.kind!r}), where a Layer belongs: "
                "wrap it in rnnjax.recurrent(cell) (or rnnjax.bidirectional(cell))"
            )
        if not isinstance(layer, Layer):
            raise TypeError(
                f"layer {i} of stack must be a rnnjax.Layer, got {type(layer).__name__}"
            )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    def init(key, input_size):
        params, size = [], input_size
        for layer, k in zip(layers, jax.random.split(key, len(layers))):
            params.append(layer.init(k, size))
            size = layer.output_size
        return params

    def initial_carry(params):
        return [layer.initial_carry(p) for layer, p in zip(layers, params)]

    check_params = _params_checker(init)
    # Each layer's params are checked here, as part of the whole tree.
    applies = [_UNCHECKED_APPLY.get(layer.apply, layer.apply) for layer in layers]

    def apply(params, xs, *, length=None, carry=None, key=None, train=False):
        if not isinstance(params, (list, tuple)) or len(params) != len(layers):
            raise ValueError(
                f"params must be a list of {len(layers)} per-layer params, got "
                f"{type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}"
            )
        check_params(params, xs)
        return unchecked(params, xs, length=length, carry=carry, key=key, train=train)

    def unchecked(params, xs, *, length=None, carry=None, key=None, train=False):
        use_dropout = train and dropout > 0.0 and len(layers) > 1
        if use_dropout and key is None:
            raise ValueError("stack(dropout>0).apply(train=True) needs a key, got key=None")
        carries = [None] * len(layers) if carry is None else carry  # None: each its default
        if len(carries) != len(layers):
            raise ValueError(
                f"carry must be a list of {len(layers)} per-layer carries, got {len(carries)}"
            )
        # One key for the dropout before layer i, another for layer i's own randomness.
        keys = (
            [None] * (2 * len(layers))
            if key is None
            else list(jax.random.split(key, 2 * len(layers)))
        )
        finals = []
        for i, (layer_apply, p, c) in enumerate(zip(applies, params, carries)):
            if i > 0 and use_dropout:
                dropout_key = keys[2 * i]
                assert dropout_key is not None  # use_dropout needs a key: checked above
                xs = _dropout(dropout_key, dropout, xs)
            with probes.scope(i):
                final, xs = layer_apply(
                    p, xs, length=length, carry=c, key=keys[2 * i + 1], train=train
                )
            finals.append(final)
        return finals, xs

    _UNCHECKED_APPLY[apply] = unchecked
    return Layer(init, apply, layers[-1].output_size, initial_carry)
