"""The time loop: :func:`scan`, the one entry, and :func:`reference_scan`, the loop as written.

:func:`reference_scan` runs ``cell.step`` once per time step in ``jax.lax.scan``: the
readable reference every faster loop is tested against. :func:`scan` is what layers,
models and users call: it checks its arguments once, then runs the loop that
:func:`scan_path` names for the cell, all computing the function of ``cell.step``:

* ``"reference"``: :func:`reference_scan`'s loop;
* ``"fused"``: the cuDNN-style loop derived from a :class:`rnnjax.GatedStep`'s own update
  (:mod:`rnnjax.fused`);
* ``"parallel"``: one associative scan for a :class:`rnnjax.LinearStep` cell;
* ``"deer"``, ``"quasi-deer"``, ``"elk"``: Newton's method in parallel over time, any cell
  (:mod:`rnnjax.parallel_in_time`).

A cell never sees padding: :mod:`rnnjax.padding` cleans the inputs of steps
``t >= length`` to zeros, those steps leave the carry unchanged and emit zeros, so the
final carry is the carry after the last valid step; a reverse scan processes the valid
prefix back to front while its outputs stay aligned with their inputs and padding stays at
the end.
"""

from __future__ import annotations

import math
from typing import Any, cast

import jax
import jax.numpy as jnp

from rnnjax._src import checks, fused, linear_scan, padding, parallel_in_time, probes
from rnnjax._src.cells import Cell
from rnnjax._src.linear_cells import LinearStep

__all__ = ["reference_scan", "scan", "scan_path"]

Array = jax.Array

# ------------------------------------------------------------------ argument checks


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


def _check_carry(cell: Cell, params: Any, carry: Any, *, name: str = "carry") -> None:
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


def initial_carry(cell: Cell, params: Any, carry: Any) -> Any:
    """Returns ``carry``, checked against the cell, or ``cell.initial_carry(params)`` if None."""
    if carry is None:
        return cell.initial_carry(params)
    _check_carry(cell, params, carry)
    return carry


def check_args(cell: Cell, params: Any, xs: Any, carry: Any, length: Any) -> tuple[Any, Any]:
    """Checks a loop's data arguments; returns ``(carry, length)`` with their defaults filled.

    The carry defaults to ``cell.initial_carry(params)``; ``length`` becomes an int32
    scalar or stays None (``rnnjax.padding.check_length``).
    """
    check_inputs(cell, params, xs)
    length = padding.check_length(length, xs.shape[0])
    return initial_carry(cell, params, carry), length


def check_options(cell: Cell, impl: Any, remat: Any) -> None:
    """Raises ValueError unless ``impl`` and ``remat`` are options :func:`scan` takes for ``cell``."""
    if isinstance(impl, parallel_in_time.Newton):
        parallel_in_time.check_newton(impl)
    elif impl not in ("auto", "fused", "reference", "parallel") + parallel_in_time.METHODS:
        raise ValueError(
            f"impl must be 'auto', 'fused', 'reference', 'parallel', one of "
            f"{parallel_in_time.METHODS} or a rnnjax.parallel_in_time.Newton, got {impl!r}"
        )
    ok_int = checks.is_int(remat) and remat > 0
    if not (remat is None or remat == "sqrt" or ok_int):
        raise ValueError(f"remat must be None, 'sqrt' or a positive int, got {remat!r}")
    if impl == "fused" and fused.gated_step(cell) is None:
        raise ValueError(
            f"impl='fused' needs a cell whose step is a rnnjax.GatedStep (built-in "
            f"cells, rnnjax.gated); got a step of type {type(cell.step).__name__} "
            f"(cell kind {cell.kind!r}); use impl='auto' to run it as written"
        )
    if impl == "parallel" and _linear_step(cell) is None:
        raise ValueError(
            f"impl='parallel' needs a cell whose step is a rnnjax.LinearStep (lru, mingru, "
            f"minlstm, rg_lru, selective_ssm, mlstm); got a step of type {type(cell.step).__name__} (cell kind "
            f"{cell.kind!r}); for any other cell use impl='deer', 'quasi-deer' or 'elk'"
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


# ------------------------------------------------------------------ which loop runs


def _linear_step(cell: Cell) -> LinearStep | None:
    step = cell.step  # the exact type: a subclass may have changed what the step means
    return cast(LinearStep, step) if type(step) is LinearStep else None


def _is_newton(impl: Any) -> bool:
    return isinstance(impl, parallel_in_time.Newton) or impl in parallel_in_time.METHODS


# Whether impl="auto" runs a LinearStep cell (LRU, minGRU, minLSTM) as one associative scan
# rather than step by step: only where it was measured faster, which it was not. On the
# 2-core CPU (B=16, H=8, T=10,000, fwd+bwd; experiments/benchmark_parallel.py,
# docs/benchmarks.md) the associative scan took 1.2x (LRU) and 3.5x (minGRU, log space) the
# time of the sequential loop: one XLA:CPU program runs on one core, so the scan's O(log T)
# depth buys nothing and its extra work (and minGRU's logaddexp per combine) costs. No GPU
# was measured. Ask for it with impl="parallel".
_AUTO_PARALLEL = False


def _path(cell: Cell, impl: Any) -> str:
    """Returns the loop ``impl`` picks for ``cell``, ignoring probes (options checked)."""
    if impl == "reference":
        return "reference"
    if _is_newton(impl):
        return parallel_in_time.check_newton(impl).method
    if _linear_step(cell) is not None and (
        impl == "parallel" or (impl == "auto" and _AUTO_PARALLEL)
    ):
        return "parallel"
    if impl in ("auto", "fused") and fused.gated_step(cell) is not None:
        return "fused"
    return "reference"


def scan_path(cell: Cell, impl: Any = "auto") -> str:
    """Returns the name of the loop :func:`scan` runs for ``cell`` and ``impl``.

    ``"fused"`` (the fast path of a :class:`rnnjax.GatedStep` cell: the built-in Elman,
    LSTM and GRU with ``reset_after=True``, and cells made with :func:`rnnjax.gated`),
    ``"parallel"`` (one associative scan, a :class:`rnnjax.LinearStep` cell), ``"deer"``,
    ``"quasi-deer"`` or ``"elk"`` (Newton's method in parallel over time, any cell) or
    ``"reference"`` (``cell.step`` in ``lax.scan``, :func:`reference_scan`). A step
    replaced by any other function (an edited copy of a built-in cell, a wrapper) runs the
    reference, whatever the cell's ``kind`` says; so does every loop while
    ``rnnjax.diagnostics.gradient_flow`` probes it.
    """
    check_options(cell, impl, None)
    return "reference" if probes.active() else _path(cell, impl)


# ------------------------------------------------------------------ the loops


def _reference_loop(
    cell: Cell, params: Any, xs: Array, carry: Any, length: Any, reverse: bool, unroll: Any
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)``: ``cell.step`` in ``lax.scan`` (arguments checked)."""
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


def _segment_length(remat: Any, num_steps: int) -> int:
    if remat == "sqrt":  # ceil(sqrt(T))
        return max(1, math.isqrt(max(num_steps - 1, 0)) + 1)
    return int(remat)


def _segmented(run, carry, xs, length, seg):
    """Returns ``run`` over ``xs`` in segments of ``seg`` steps, each recomputed in backprop."""
    num_steps = xs.shape[0]
    num_segments = -(-num_steps // seg)
    padded = num_segments * seg
    if padded != num_steps:  # padding goes at the end, where `length` masks it out
        xs = jnp.concatenate([xs, jnp.zeros((padded - num_steps,) + xs.shape[1:], xs.dtype)])
        length = jnp.asarray(num_steps, jnp.int32) if length is None else length
    offsets = jnp.arange(num_segments, dtype=jnp.int32) * seg

    @jax.checkpoint
    def segment(c, inputs):
        xs_k, offset = inputs
        local = None if length is None else jnp.clip(length - offset, 0, seg)
        return run(c, xs_k, local)

    final, ys = jax.lax.scan(
        segment, carry, (xs.reshape((num_segments, seg) + xs.shape[1:]), offsets)
    )
    return final, ys.reshape((padded,) + ys.shape[2:])[:num_steps]


def dispatch(
    cell: Cell,
    params: Any,
    xs: Array,
    carry: Any,
    length: Any,
    *,
    reverse: bool = False,
    impl: Any = "auto",
    remat: Any = None,
    unroll: Any = None,
    hoist_input: bool | None = None,
) -> tuple[Any, Array]:
    """Returns :func:`scan`'s result from checked arguments: the one place a loop is chosen.

    ``carry`` and ``length`` are what ``check_args`` returned and the options passed
    ``check_options``: layers check those once (the options at construction) and call this.
    """
    kind = "reference" if probes.active() else _path(cell, impl)  # probes ride the reference
    carry = match_varying(carry, params, xs, length)
    unroll = fused.default_unroll() if unroll is None else unroll
    if kind == "reference" and remat is None:
        return _reference_loop(cell, params, xs, carry, length, reverse, unroll)
    num_steps = xs.shape[0]
    if reverse:
        xs = padding.reverse_valid(xs, length)
    xs = padding.clean(xs, padding.valid_steps(num_steps, length))

    def forward(carry, xs, length) -> tuple[Any, Array]:  # forward in time, padding cleaned
        if kind == "parallel":
            step = cast(LinearStep, cell.step)
            return linear_scan.linear_scan(step, params, xs, carry, length)
        if kind == "reference":
            return _reference_loop(cell, params, xs, carry, length, False, unroll)
        if kind == "fused":
            step = fused.gated_step(cell)
            assert step is not None  # _path says "fused" only for a GatedStep
            return fused.gated_scan(step, params, xs, carry, length, unroll, hoist_input)
        return parallel_in_time.newton_scan(cell, params, xs, carry, length, impl)[:2]

    if remat is None:
        final, ys = forward(carry, xs, length)
    else:
        final, ys = _segmented(forward, carry, xs, length, _segment_length(remat, num_steps))
    return final, padding.reverse_valid(ys, length) if reverse else ys


def scan(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    reverse: bool = False,
    impl: Any = "auto",
    remat: Any = None,
    unroll: int | bool | None = None,
    hoist_input: bool | None = None,
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)``: ``cell.step`` run over one sequence, by the loop that suits the cell.

    Every loop computes the function of :func:`reference_scan` (values and reverse-mode
    gradients); ``impl``, ``remat``, ``unroll`` and ``hoist_input`` choose how, not what.
    :func:`scan_path` says which loop runs.

    Args:
      cell: a :class:`rnnjax.Cell`.
      params: the cell's parameters.
      xs: ``(T, input_size)``, one sequence (batch with ``jax.vmap``).
      carry: initial carry (default ``cell.initial_carry(params)``).
      length: number of valid steps, an int scalar in ``[0, T]`` (default ``T``). Steps
        ``t >= length`` leave the carry unchanged and emit zeros, and whatever their
        inputs hold (NaN, inf) reaches no value and no gradient. A concrete length out of
        range raises ValueError; a traced one is clipped to ``[0, T]``, or raises under
        :func:`rnnjax.checked` (see ``rnnjax.padding.check_length``).
      reverse: process the valid prefix from step ``length - 1`` down to 0. Outputs stay
        aligned with their inputs (``ys[t]`` belongs to ``xs[t]``), padding stays at the
        end, and the final carry is the carry after step 0.
      impl: ``"auto"`` (default): the fast path when the cell's step is a
        :class:`rnnjax.GatedStep`, else the reference (a :class:`rnnjax.LinearStep` cell
        runs the sequential loop: its associative scan was not measured faster on CPU);
        ``"fused"`` (the fast path; ValueError for cells without one); ``"reference"``
        (:func:`reference_scan`'s loop); ``"parallel"`` (one associative scan; cells whose
        step is a :class:`rnnjax.LinearStep`); ``"deer"``, ``"quasi-deer"``, ``"elk"`` or a
        :class:`rnnjax.parallel_in_time.Newton` (Newton's method in parallel over time, any
        cell with a real carry; a run that does not converge falls back to the sequential
        scan, or raises: see ``Newton.on_failure``). The fast path's and Newton's
        derivatives are custom VJPs: reverse mode (``grad``, ``vjp``, ``jacrev``) only;
        forward mode (``jvp``, ``jacfwd``) needs ``impl="reference"``.
      remat: ``None`` keeps every step's residuals for the backward pass (memory O(T));
        ``"sqrt"`` or an int ``k`` cuts the sequence into segments of ``ceil(sqrt(T))`` or
        ``k`` steps, keeps only the carries between segments and recomputes each segment
        during backpropagation (Chen et al. 2016; memory O(T/k + k), about one more forward
        pass of time).
      unroll: steps per loop iteration, as in ``jax.lax.scan``; ``None`` (default) is the
        backend's measured best: 1 on CPU, where unrolling made the loops slower, 4
        elsewhere (on an H200, LSTM fwd+bwd at B=32, T=200, H=128: 4.59 ms with 1, 2.64 ms
        with 4; docs/benchmarks.md).
      hoist_input: the fast path only: whether the input projection ``x_t W_ih`` of all
        steps is one matmul before the loop (True) or a small matmul per step inside it
        (False); ``None`` (default) is the backend's measured best: inside on CPU (60 vs
        75 ms), before it elsewhere (an H200: 4.59 vs 5.16 ms; docs/benchmarks.md).

    Returns:
      ``final_carry`` (a pytree like ``carry``) and ``ys: (T, hidden_size)``.
    """
    check_options(cell, impl, remat)
    carry, length = check_args(cell, params, xs, carry, length)
    return dispatch(
        cell,
        params,
        xs,
        carry,
        length,
        reverse=reverse,
        impl=impl,
        remat=remat,
        unroll=unroll,
        hoist_input=hoist_input,
    )


def reference_scan(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)``: ``cell.step`` run over one sequence with ``jax.lax.scan``, as written.

    The readable reference: one ``cell.step`` per time step, differentiated by JAX
    (forward and reverse mode). Arguments as in :func:`scan`, which computes the same by
    the fastest loop it has for the cell (``scan(..., impl="reference")`` runs this loop).

    Returns:
      ``final_carry`` (a pytree like ``carry``) and ``ys: (T, hidden_size)``.
    """
    carry, length = check_args(cell, params, xs, carry, length)
    carry = match_varying(carry, params, xs, length)
    return _reference_loop(cell, params, xs, carry, length, reverse, unroll)
