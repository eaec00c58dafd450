"""The fast loop of the gated cells: what ``rnnjax.scan(..., impl="auto")`` runs for them.

:func:`rnnjax.reference_scan` runs ``cell.step`` once per time step: the readable
reference. This module computes the same function faster, in the way cuDNN does
(Appleyard, Kocisky & Blunsom 2016, "Optimizing performance of recurrent neural networks
on GPUs"):

1. the input projection ``x_t W_ih + b_ih`` of all T steps is ONE matmul before the loop
   (under ``vmap`` it is a single ``(B*T, I) @ (I, G*H)`` GEMM) on GPU and TPU; on
   XLA:CPU it stays in the loop, where it measured faster;
2. all gates of a step come from one ``h W_hh`` matmul (the cells already concatenate the
   gate blocks);
3. a custom VJP whose backward loop carries only the state gradient: each step emits the
   gradient of its pre-activations, and the weight gradients ``dW_hh = sum_t h_{t-1}^T dz_t``
   and ``dW_ih = sum_t x_t^T dz_t`` are ONE matmul each after the loop, instead of a small
   accumulating matmul per step as in autodiff of ``lax.scan``.

Which cells: those whose ``step`` is a :class:`rnnjax.GatedStep`, the built-in
Elman, LSTM and GRU (``reset_after=True``) and any cell made with :func:`rnnjax.gated`.
The loop below is derived from that step's own ``update`` (the element-wise equation
between the two matmuls), so it computes ``cell.step`` whatever the update says; its
derivative is JAX's VJP of the update, or a hand-written one registered for a built-in
update (tested against autodiff of the update it belongs to). Any other step, an edited
copy of a built-in one included, runs as written; :func:`rnnjax.scan_path` says which loop
a cell gets. This module is implementation: it exports nothing, :func:`rnnjax.scan` checks
the arguments and calls it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.core
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from rnnjax._src import padding
from rnnjax._src.cells import Cell, GatedStep, lstm_update

# Implementation only: rnnjax.scan runs this loop (impl="auto" or "fused") after checking
# the arguments; rnnjax.scan_path says when.
__all__: list[str] = []

Array = jax.Array


def _lstm_vjp(carry, z, d_carry, dy):
    """Returns ``(d_carry_in, dz)``, the VJP of :func:`rnnjax.lstm_update` written out.

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
_HAND_WRITTEN_VJPS: dict[Callable, Callable] = {lstm_update: _lstm_vjp}


def gated_step(cell: Cell) -> GatedStep | None:
    """Returns ``cell.step`` if it is exactly a GatedStep (the fast path's cells), else None."""
    step = cell.step  # the exact type: a subclass may have changed what the step means
    return cast(GatedStep, step) if type(step) is GatedStep else None


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
        _HAND_WRITTEN_VJPS.get(eq.update) if eq.additive and not n else None,
    )
    return loop, update_consts + hidden_consts


def _masked_update(loop: _Loop, carry, gi, gh, consts, valid):
    """Returns ``(carry', y)`` from the pre-activations; ``valid=False`` keeps the carry."""
    new = _cast_like(loop.update(carry, gi, gh, consts), carry)
    new = padding.keep_carry(valid, new, carry)
    return new, padding.zero_outputs(valid, loop.hidden(new, consts))


def _hoist_input(hoist_input: bool | None) -> bool:
    """Returns whether the input projection of all steps is one matmul before the loop."""
    if hoist_input is not None:
        return hoist_input
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


def _loop_forward(loop, unroll, hoist, w_ih, b_in, w_hh, b_hh, consts, carry, xs, valid):
    """Returns ``(final_carry, ys)``, the residuals (every step's input carry and
    pre-activations: ``gi + gh`` when the update is additive, else ``(gi, gh)``) and, for
    an additive update with the input projection in the loop, every step's
    ``[x_t, h_{t-1}]`` (else None), stacked time-major like the residuals. ``hoist``: the
    input projection of all steps is one matmul before the loop."""
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
    derivatives (:func:`gated_scan`). Their values are not used (XLA drops them); the
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


def gated_scan(
    eq: GatedStep,
    params: Any,
    xs: Array,
    carry: Any,
    length: Array | None,
    unroll: int | bool,
    hoist_input: bool | None,
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)`` of one sequence through the fast path (no checks).

    Forward in time over ``xs: (T, input_size)``, whose padded steps (``t >= length``) hold
    zeros: ``rnnjax.scan`` checks the arguments, reverses and cleans the inputs, and calls
    this. ``hoist_input``: see ``rnnjax.scan``.
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
        _hoist_input(hoist_input),
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
