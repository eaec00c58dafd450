"""A fast sequence implementation of the built-in cells, and rematerialisation in segments.

:func:`rnnjax.scan` runs ``cell.step`` once per time step: the readable reference. This
module computes the same function faster, in the way cuDNN does (Appleyard, Kocisky &
Blunsom 2016, "Optimizing performance of recurrent neural networks on GPUs"):

1. the input projection ``x_t W_ih + b_ih`` of all T steps is ONE matmul before the loop
   (under ``vmap`` it is a single ``(B*T, I) @ (I, G*H)`` GEMM) on GPU and TPU; on
   XLA:CPU it stays in the loop, where it measured faster;
2. all gates of a step come from one ``h W_hh`` matmul (the cells already concatenate the
   gate blocks);
3. a custom VJP whose backward loop carries only the state gradient: each step emits the
   gradient of its pre-activations, and the weight gradients ``dW_hh = sum_t h_{t-1}^T dz_t``
   and ``dW_ih = sum_t x_t^T dz_t`` are ONE matmul each after the loop, instead of a small
   accumulating matmul per step as in autodiff of ``lax.scan``.

Which cells: those whose ``step`` is a :class:`rnnjax.cells.GatedStep`, the built-in
Elman, LSTM and GRU (``reset_after=True``) and any cell made with :func:`rnnjax.gated`.
The loop below is derived from that step's own ``update`` (the element-wise equation
between the two matmuls), so it computes ``cell.step`` whatever the update says; its
derivative is JAX's VJP of the update, or a hand-written one registered for a built-in
update (tested against autodiff of the update it belongs to). Any other step, an edited
copy of a built-in one included, runs as written (:func:`rnnjax.scan`); :func:`path`
says which one a cell gets.

Long sequences: with ``remat`` the sequence is cut into segments, only the carry at the
segment boundaries is kept for the backward pass, and each segment's forward is recomputed
during backpropagation (``jax.checkpoint``; Chen et al. 2016, "Training deep nets with
sublinear memory cost"). Segments of sqrt(T) steps bring the memory of the loop's residuals
from O(T) to O(sqrt(T)) for about one extra forward pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.core
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from rnnjax import padding, parallel_in_time, probes
from rnnjax.cells import Cell, GatedStep, lstm_update
from rnnjax.linear_cells import LinearStep
from rnnjax.scan import check_scan_args
from rnnjax.scan import scan as reference_scan

Array = jax.Array


def _lstm_vjp(carry, z, d_carry, dy):
    """Returns ``(d_carry_in, dz)``, the VJP of :func:`rnnjax.cells.lstm_update` written out.

    XLA:CPU runs one kernel per fusion per step, and autodiff's VJP of the LSTM update
    splits into more of them. ``h`` enters only through ``z``, so its cotangent here is 0.
    """
    (h, c), (d_h, d_c) = carry, d_carry
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = c.astype(z.dtype)
    tanh_c = jnp.tanh(f * c + i * g)
    d_h = d_h + dy
    d_c = d_c + d_h * o * (1.0 - tanh_c**2)
    dz = jnp.concatenate(
        [
            d_c * g * i * (1.0 - i),
            d_c * c * f * (1.0 - f),
            d_c * i * (1.0 - g**2),
            d_h * tanh_c * o * (1.0 - o),
        ],
        axis=-1,
    )
    return (jnp.zeros_like(h), (d_c * f).astype(carry[1].dtype)), dz


# Hand-written derivatives, keyed by the update function they differentiate (its identity,
# so an edited or replaced update never meets a derivative written for another one):
# ``vjp(carry, z, d_new_carry, dy) -> (d_carry, dz)`` for an additive update whose output
# is hidden(new carry). tests/test_fused.py checks each against jax.vjp of its key.
HAND_WRITTEN_VJPS: dict[Callable, Callable] = {lstm_update: _lstm_vjp}


def _gated_step(cell: Cell) -> GatedStep | None:
    step = cell.step  # the exact type: a subclass may have changed what the step means
    return cast(GatedStep, step) if type(step) is GatedStep else None


def _linear_step(cell: Cell) -> LinearStep | None:
    step = cell.step
    return cast(LinearStep, step) if type(step) is LinearStep else None


# Whether impl="auto" runs a LinearStep cell (LRU, minGRU, minLSTM) as one associative scan
# rather than step by step: only where it was measured faster, which it was not. On the
# 2-core CPU (B=16, H=8, T=10,000, fwd+bwd; experiments/benchmark_parallel.py,
# docs/benchmarks.md) the associative scan took 1.2x (LRU) and 3.5x (minGRU, log space) the
# time of the sequential loop: one XLA:CPU program runs on one core, so the scan's O(log T)
# depth buys nothing and its extra work (and minGRU's logaddexp per combine) costs. No GPU
# was measured. Ask for it with impl="parallel".
AUTO_PARALLEL = False


def supports(cell: Cell) -> bool:
    """Returns whether :func:`scan` has a fast path for ``cell`` (else it runs the reference).

    True when ``cell.step`` is a :class:`rnnjax.cells.GatedStep`: the built-in Elman (any
    activation), LSTM and GRU (``reset_after=True``) and cells made with
    :func:`rnnjax.gated`. A step replaced by any other function (an edited copy of a
    built-in cell, a wrapper) is not, whatever the cell's ``kind`` says.
    """
    return _gated_step(cell) is not None


def path(cell: Cell, impl: Any = "auto") -> str:
    """Returns the loop :func:`scan` runs for ``cell`` and ``impl``.

    ``"fused"`` (the fast path of a GatedStep cell), ``"parallel"`` (one associative scan,
    a LinearStep cell), ``"deer"``, ``"quasi-deer"`` or ``"elk"`` (Newton's method in
    parallel over time, any cell; ``rnnjax.parallel_in_time``) or ``"reference"``
    (``cell.step`` in ``lax.scan``).
    """
    check_options(impl, None)
    if impl == "reference" or probes.active():  # probes ride on the reference loop
        return "reference"
    if _is_newton(impl):
        return parallel_in_time.check_newton(impl).method
    if _linear_step(cell) is not None and (
        impl == "parallel" or (impl == "auto" and AUTO_PARALLEL)
    ):
        return "parallel"
    if impl in ("auto", "fused") and supports(cell):
        return "fused"
    return "reference"


def _is_newton(impl: Any) -> bool:
    return isinstance(impl, parallel_in_time.Newton) or impl in parallel_in_time.METHODS


def _cast_like(new, old):
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)


class _Loop(NamedTuple):
    """The element-wise part of a GatedStep, with what it closes over made explicit.

    ``update(carry, gi, gh, consts) -> carry'`` and ``hidden(carry, consts) -> h``. An
    update may close over arrays (a traced hyperparameter, say); the custom VJP below can
    only return cotangents for its own inputs, so those arrays are passed in as ``consts``
    and get their cotangents like the weights do. Without this, the gradient with
    respect to a closed-over value would silently be zero.
    """

    update: Callable
    hidden: Callable
    additive: bool
    hand_vjp: Callable | None  # (carry, z, d_new_carry, dy) -> (d_carry, dz), or None


def _explicit(fn, *example):
    """Returns ``(fn(*args, consts), consts)``: ``fn`` with the traced arrays it closes over as input.

    Only traced values (a hyperparameter being differentiated, a value under ``jit``) need
    their own cotangent; when ``fn`` closes over none, it is returned as it is. Otherwise
    each call traces ``fn`` on the arguments it gets (so that their types, sharding
    annotations included, are the ones the trace sees) and evaluates that trace with the
    closed-over arrays replaced by ``consts``.
    """
    hoisted = [k for k in jax.make_jaxpr(fn)(*example).consts if isinstance(k, jax.core.Tracer)]
    if not hoisted:
        return (lambda *args: fn(*args[:-1])), []
    index = {id(k): i for i, k in enumerate(hoisted)}

    def explicit(*args):
        *args, consts = args
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        values = [consts[index[id(k)]] if id(k) in index else k for k in closed.consts]
        out = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(closed.jaxpr, values))(
            *jax.tree.leaves(args)
        )
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return explicit, hoisted


def _loop_of(eq: GatedStep, carry, gi, gh) -> tuple[_Loop, list]:
    """Returns the ``_Loop`` of ``eq`` and the arrays its update and hidden close over."""

    def update(c, gi, gh):
        return eq.update(c, gi + gh) if eq.additive else eq.update(c, gi, gh)

    update_x, update_consts = _explicit(update, carry, gi, gh)
    hidden_x, hidden_consts = _explicit(eq.hidden, carry)
    n = len(update_consts)
    loop = _Loop(
        lambda c, gi, gh, k: update_x(c, gi, gh, k[:n]),
        lambda c, k: hidden_x(c, k[n:]),
        eq.additive,
        # a hand-written derivative belongs to one update function, which closes over nothing
        HAND_WRITTEN_VJPS.get(eq.update) if eq.additive and not n else None,
    )
    return loop, update_consts + hidden_consts


def _masked_update(loop: _Loop, carry, gi, gh, consts, valid):
    """Returns ``(carry', y)`` from the pre-activations; ``valid=False`` keeps the carry."""
    new = _cast_like(loop.update(carry, gi, gh, consts), carry)
    new = padding.keep_carry(valid, new, carry)
    return new, padding.zero_outputs(valid, loop.hidden(new, consts))


# Whether the input projection of all steps is one matmul before the loop (True) or a
# small matmul per step inside it (False); None: the measured default of the backend. A
# module switch so that experiments and tests can compare the two.
HOIST_INPUT: bool | None = None


def _hoist_input() -> bool:
    if HOIST_INPUT is not None:
        return HOIST_INPUT
    # Measured (docs/benchmarks.md): on an H200 hoisting took LSTM fwd+bwd from 5.16 to
    # 4.59 ms; on XLA:CPU it made the loop slower (60 -> 75 ms).
    return jax.default_backend() != "cpu"


def default_unroll() -> int:
    """Returns the ``unroll`` that ``unroll=None`` means on the default backend.

    1 on CPU, where unrolling made the loops slower; 4 elsewhere: on an H200, LSTM
    fwd+bwd at B=32, T=200, H=128 took 4.59 ms with ``unroll=1``, 2.64 ms with 4 and
    2.41 ms with 8, which compiled in 1.4 s instead of 0.7 s (one process; see
    docs/benchmarks.md).
    """
    return 1 if jax.default_backend() == "cpu" else 4


def _loop_forward(loop, unroll, w_ih, b_in, w_hh, b_hh, consts, carry, xs, valid):
    """Returns ``(final_carry, ys)``, the residuals (every step's input carry and
    pre-activations: ``gi + gh`` when the update is additive, else ``(gi, gh)``) and, for
    an additive update with the input projection in the loop, every step's
    ``[x_t, h_{t-1}]`` (else None), stacked time-major like the residuals."""
    hoist = _hoist_input()
    keep_xh = loop.additive and not hoist

    def body(c, inputs):
        x, v = inputs
        h = loop.hidden(c, consts)
        gi = x if hoist else x @ w_ih + b_in
        gh = h.astype(w_hh.dtype) @ w_hh
        gh = gh if b_hh is None else gh + b_hh
        if loop.additive:  # only the sum matters: the update sees it whole
            gi, gh = gi + gh, jnp.zeros_like(gh)
        new, y = _masked_update(loop, c, gi, gh, consts, v)
        # Saving the pre-activations spares the backward pass a matmul per step.
        xh = jnp.concatenate([x, h.astype(x.dtype)]) if keep_xh else None
        return new, (y, c, gi if loop.additive else (gi, gh), xh)

    final, (ys, carries, pre, xh) = jax.lax.scan(
        body, carry, (xs @ w_ih + b_in if hoist else xs, valid), unroll=unroll
    )
    return (final, ys), (carries, pre), xh


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attach(loop, unroll, gi, gh, carry, w_hh, consts, out, residuals, valid):
    """Returns ``out = (final_carry, ys)``, computed before, with the recurrence's VJP attached.

    ``gi = xs W_ih + b_in`` and ``gh = h_prev W_hh + b_hh`` are the pre-activations as
    functions of the weights (``h_prev`` held constant), or expressions with the same
    derivatives (:func:`_fused_scan`). Their values are not used (XLA drops them); the
    backward pass (:func:`_attach_bwd`) returns their cotangents, so JAX
    differentiates those two products into ``dW_hh = h_prev^T dgh``, ``dW_ih = xs^T dgi``
    and ``dxs = dgi W_ih^T``: one GEMM each, over all steps and, under ``vmap``, all
    examples (a VJP that returned the weight gradients itself would get them per example
    under ``vmap``, a batched matmul and a sum that cost more than the loop). ``consts``,
    the arrays the update closes over, get their cotangents summed over the steps.
    """
    del gi, gh, carry, w_hh, consts, residuals, valid
    return out


def _attach_fwd(loop, unroll, gi, gh, carry, w_hh, consts, out, residuals, valid):
    return out, (w_hh, consts, residuals, valid)


def _tree_add(a, b):
    return jax.tree.map(lambda u, v: u + v.astype(u.dtype), a, b)


def _differentiable(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.inexact)


def _zero_cotangent(a):
    if _differentiable(a):
        return jnp.zeros_like(a)
    return np.zeros(jnp.shape(a), jax.dtypes.float0)


def _attach_bwd(loop, unroll, saved, cotangents):
    """Returns the pre-activation, initial-carry and consts cotangents from one backward loop.

    Each backward step maps ``d carry_t`` to ``d carry_{t-1}`` through the element-wise
    update (its VJP at the saved pre-activations) and one ``dgh_t W_hh^T`` matmul; the
    loop carries this state gradient (and the consts' cotangents, when the update closes
    over any) and emits ``dgi_t, dgh_t``.
    """
    w_hh, consts, (carries, pre), valid = saved
    d_final, d_ys = cotangents
    w_hh_t = w_hh.T  # once, outside the loop
    diff = [i for i, k in enumerate(consts) if _differentiable(k)]

    def with_consts(fn, own):  # fn of the consts it differentiates, the others held fixed
        def wrapped(*args):
            *args, k = args
            full = list(consts)
            for i, value in zip(diff, k):
                full[i] = value
            return fn(*args, full)

        return wrapped, [consts[i] for i in diff] if own else None

    def body(state, inputs):
        d_carry, d_k = state
        c, p, v, dy = inputs
        if loop.hand_vjp is not None:
            d_c, d_gi = loop.hand_vjp(c, p, d_carry, dy)
            d_c = padding.keep_carry(v, d_c, d_carry)  # a padded step passes it through
            d_gi = padding.zero_outputs(v, d_gi)
            d_gh, d_k_step = d_gi, []
        else:
            gi, gh = (p, jnp.zeros_like(p)) if loop.additive else p
            fn, k = with_consts(
                lambda c, gi, gh, full: _masked_update(loop, c, gi, gh, full, v), True
            )
            _, vjp = jax.vjp(fn, c, gi, gh, k)
            d_c, d_gi, d_gh, d_k_step = vjp((d_carry, dy))
            d_gh = d_gi if loop.additive else d_gh
        # h = hidden(carry) multiplies W_hh: its gradient d_gh W_hh^T flows back into the carry.
        fn, k = with_consts(loop.hidden, True)
        h, hidden_vjp = jax.vjp(fn, c, k)
        d_from_gh, d_k_hidden = hidden_vjp((d_gh @ w_hh_t).astype(h.dtype))
        d_k = _tree_add(_tree_add(d_k, d_k_step), d_k_hidden) if diff else d_k
        return (_tree_add(d_c, d_from_gh), d_k), (d_gi if loop.additive else (d_gi, d_gh))

    d_k0 = [jnp.zeros_like(consts[i]) for i in diff]
    (d_carry, d_k), d_pre = jax.lax.scan(
        body, (d_final, d_k0), (carries, pre, valid, d_ys), reverse=True, unroll=unroll
    )
    d_consts = [_zero_cotangent(k) for k in consts]
    for i, d in zip(diff, d_k):
        d_consts[i] = d
    d_gi, d_gh = (d_pre, d_pre) if loop.additive else d_pre
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    return (
        d_gi,
        d_gh,
        d_carry,
        zeros(w_hh),
        d_consts,
        zeros(cotangents),
        zeros((carries, pre)),
        None,
    )


_attach.defvjp(_attach_fwd, _attach_bwd)


def _fused_scan(eq, params, xs, carry, length, unroll):
    """Returns ``(final_carry, ys)`` of one sequence through the fast path (no checks).

    Forward in time over ``xs``, whose padded steps (``t >= length``) hold zeros.
    """
    dtype = eq.dtype if eq.dtype is not None else jnp.result_type(xs, params["w_ih"])
    w_ih, w_hh = params["w_ih"].astype(dtype), params["w_hh"].astype(dtype)
    b_in = params.get("b_ih", jnp.zeros((w_hh.shape[-1],), dtype)).astype(dtype)
    b_hh = params.get("b_hh")
    if b_hh is not None:
        b_hh = b_hh.astype(dtype)
        if eq.additive:  # only gi + gh matters: one bias
            b_in, b_hh = b_in + b_hh, None
    xs = xs.astype(dtype)
    valid = padding.valid_steps(xs.shape[0], length)
    z = jax.ShapeDtypeStruct((w_hh.shape[-1],), dtype)
    loop, consts = _loop_of(eq, carry, z, z)
    sg = jax.lax.stop_gradient
    out, residuals, xh = _loop_forward(
        loop,
        unroll,
        sg(w_ih),
        sg(b_in),
        sg(w_hh),
        sg(b_hh),
        sg(consts),
        sg(carry),
        sg(xs),
        valid,
    )
    out, residuals = sg(out), sg(residuals)
    if xh is not None:
        # One weight GEMM, [dW_ih; dW_hh] = [x, h_prev]^T dz, over the stack the loop kept
        # in its own (time-major) order. Against the batch-major xs and the time-major
        # h_prev separately, XLA:CPU transposed dz (T x B x 4H under vmap) into both orders;
        # this measured 2-7% faster (docs/benchmarks.md). The second term carries
        # dxs = dz W_ih^T. Only the derivatives of gi matter (see _attach).
        gi = sg(xh) @ jnp.concatenate([w_ih, w_hh]) + xs @ sg(w_ih) + b_in
        gh = jnp.zeros_like(gi)  # additive: dz reaches the weights through gi alone
    else:
        h_prev = jax.vmap(loop.hidden, in_axes=(0, None))(residuals[0], sg(consts)).astype(dtype)
        gi = xs @ w_ih + b_in
        gh = h_prev @ w_hh if b_hh is None else h_prev @ w_hh + b_hh
    return _attach(loop, unroll, gi, gh, carry, sg(w_hh), consts, out, residuals, valid)


def check_options(impl: Any, remat: Any) -> None:
    """Raises ValueError unless ``impl`` and ``remat`` are valid options of :func:`scan`."""
    if isinstance(impl, parallel_in_time.Newton):
        parallel_in_time.check_newton(impl)
    elif impl not in ("auto", "fused", "reference", "parallel") + parallel_in_time.METHODS:
        raise ValueError(
            f"impl must be 'auto', 'fused', 'reference', 'parallel', one of "
            f"{parallel_in_time.METHODS} or a rnnjax.parallel_in_time.Newton, got {impl!r}"
        )
    ok_int = isinstance(remat, int) and not isinstance(remat, bool) and remat > 0
    if not (remat is None or remat == "sqrt" or ok_int):
        raise ValueError(f"remat must be None, 'sqrt' or a positive int, got {remat!r}")


def _segment_length(remat: Any, num_steps: int) -> int:
    if remat == "sqrt":  # ceil(sqrt(T))
        return max(1, math.isqrt(max(num_steps - 1, 0)) + 1)
    return remat


def scan(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    reverse: bool = False,
    unroll: int | bool | None = None,
    remat: Any = None,
    impl: str = "auto",
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)`` equal to :func:`rnnjax.scan`, computed faster.

    Args:
      cell, params, xs, carry, length, reverse: as in :func:`rnnjax.scan`;
        ``xs: (T, input_size)`` is one sequence (batch with ``jax.vmap``).
      unroll: steps per loop iteration, as in ``jax.lax.scan``; ``None`` (default) is
        :func:`default_unroll`, the measured best of the backend (1 on CPU, 4 on GPU).
      remat: ``None`` keeps every step's residuals for the backward pass (memory O(T));
        ``"sqrt"`` or an int ``k`` cuts the sequence into segments of ``ceil(sqrt(T))`` or
        ``k`` steps, keeps only the carries between segments and recomputes each segment
        during backpropagation (memory O(T/k + k), about one more forward pass of time).
      impl: ``"fused"`` (the fast path; raises ValueError for cells without one),
        ``"reference"`` (``cell.step`` in ``lax.scan``), ``"parallel"`` (one associative
        scan; cells whose step is a :class:`rnnjax.LinearStep`), ``"deer"``,
        ``"quasi-deer"``, ``"elk"`` or a :class:`rnnjax.parallel_in_time.Newton` (Newton's
        method in parallel over time, any cell with a real carry; a run that does not
        converge falls back to the sequential scan, or raises: see ``Newton.on_failure``),
        or ``"auto"``: parallel for a LinearStep cell only if :data:`AUTO_PARALLEL` (off:
        not measured faster), fused when :func:`supports` the cell, else the reference.
        :func:`path` says which runs. (On one CPU device the GRU's
        fast path and reference take about the same time; with the batch split over
        CPU devices the fast path took 35 ms and the reference 98, because autodiff of
        ``lax.scan`` sums the weight gradients across devices at every step; see
        docs/benchmarks.md.) The fast path's
        derivative is a custom VJP, so it supports reverse mode (``grad``, ``vjp``,
        ``jacrev``) but not forward mode (``jvp``, ``jacfwd``): use ``impl="reference"``
        for those.

    Returns:
      ``final_carry`` (like ``carry``) and ``ys: (T, hidden_size)``.
    """
    check_options(impl, remat)
    unroll = default_unroll() if unroll is None else unroll
    kind = path(cell, impl)
    # On the cell, not on `kind`: under probes (diagnostics) every impl runs the reference.
    if impl == "fused" and not supports(cell):
        raise ValueError(
            f"impl='fused' needs a cell whose step is a rnnjax.cells.GatedStep (built-in "
            f"cells, rnnjax.gated); got a step of type {type(cell.step).__name__} "
            f"(cell kind {cell.kind!r}); use impl='auto' to run it as written"
        )
    if impl == "parallel" and _linear_step(cell) is None:
        raise ValueError(
            f"impl='parallel' needs a cell whose step is a rnnjax.LinearStep (lru, mingru, "
            f"minlstm, rg_lru, selective_ssm); got a step of type {type(cell.step).__name__} (cell kind "
            f"{cell.kind!r}); for any other cell use impl='deer', 'quasi-deer' or 'elk'"
        )
    carry, length = check_scan_args(cell, params, xs, carry, length)
    if probes.active():  # probed for gradient flow: the reference loop carries the probes
        return reference_scan(
            cell, params, xs, carry=carry, length=length, reverse=reverse, unroll=unroll
        )
    if kind == "reference" and remat is None:
        return reference_scan(
            cell, params, xs, carry=carry, length=length, reverse=reverse, unroll=unroll
        )
    num_steps = xs.shape[0]
    if reverse:
        xs = padding.reverse_valid(xs, length)
    xs = padding.clean(xs, padding.valid_steps(num_steps, length))

    def run(carry, xs, length) -> tuple[Any, Array]:  # forward in time, padding cleaned
        if kind == "parallel":
            return parallel_in_time.linear_scan(
                cast(LinearStep, cell.step), params, xs, carry, length
            )
        if kind == "reference":
            return reference_scan(cell, params, xs, carry=carry, length=length, unroll=unroll)
        if kind == "fused":
            return _fused_scan(_gated_step(cell), params, xs, carry, length, unroll)
        return parallel_in_time.newton_scan(cell, params, xs, carry, length, impl)[:2]

    if remat is None:
        final, ys = run(carry, xs, length)
    else:
        final, ys = _segmented(run, carry, xs, length, _segment_length(remat, num_steps))
    return final, padding.reverse_valid(ys, length) if reverse else ys


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
