"""A fast sequence implementation of the built-in cells, and rematerialisation in segments.

:func:`rnnjax.scan` runs ``cell.step`` once per time step: the readable reference. This
module computes the same function faster, in the way cuDNN does (Appleyard, Kocisky &
Blunsom 2016, "Optimizing performance of recurrent neural networks on GPUs"):

1. all gates of a step come from one ``h W_hh`` matmul (the cells already concatenate the
   gate blocks);
2. a custom VJP whose backward loop carries only the state gradient: each step emits the
   gradient of its pre-activations, and the weight gradients ``dW = sum_t a_t^T dz_t``
   (``a_t = [x_t, h_{t-1}]``) are ONE matmul after the loop, over all steps and examples,
   instead of a small accumulating matmul per step as in autodiff of ``lax.scan``;
3. the forward loop saves the gate activations, and the backward step, written out by
   hand per cell, is a few multiply-adds on them;
4. the residuals of a step are packed into one vector, so the loop stacks one array.

The input projection ``x_t W_ih`` stays inside the loop: on XLA:CPU, hoisting it as one
GEMM before the loop (cuDNN's way) measured slower (docs/benchmarks.md).

The element-wise part of a step, the cell's equation given its two pre-activations, is
written out below per cell ``kind``; ``tests/test_fused.py`` checks values and gradients
against :func:`rnnjax.scan` over ``cell.step``. Cells of other kinds fall back to the
reference scan.

Long sequences: with ``remat`` the sequence is cut into segments, only the carry at the
segment boundaries is kept for the backward pass, and each segment's forward is recomputed
during backpropagation (``jax.checkpoint``; Chen et al. 2016, "Training deep nets with
sublinear memory cost"). Segments of sqrt(T) steps bring the memory of the loop's residuals
from O(T) to O(sqrt(T)) for about one extra forward pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells import _ACTIVATIONS, Cell
from rnnjax.scan import check_carry, check_inputs, check_length
from rnnjax.scan import scan as reference_scan

Array = jax.Array


class _Equation(NamedTuple):
    """A cell's step split around its two matmuls ``gi = x W_ih + b_ih``, ``gh = h W_hh + b_hh``.

    ``forward(carry, gi, gh) -> (carry', saved)`` is the cell's equation given the two
    pre-activations; it also returns what its derivative needs (the gate activations).
    ``backward(carry, saved, y, d_carry', dy) -> (d_carry, d_gi, d_gh)`` is that
    derivative written out (``y``: the step's output, for a valid step its new h); ``d_carry`` leaves out the ``h W_hh`` path, which the loop adds as one
    matmul. XLA:CPU runs each fusion of a loop body as its own kernel, every step: with the
    activations saved, the backward step is a few multiply-adds, where autodiff's VJP of
    the step recomputes each sigmoid and tanh, in kernels of their own.

    When ``additive``, the step reads only ``gi + gh`` (Elman, LSTM), so ``b_hh`` is folded
    into the input projection and ``d_gi = d_gh``: the backward pass emits one
    pre-activation gradient per step instead of two.
    """

    forward: Callable[[Any, Array, Array], tuple[Any, Any]]
    backward: Callable[[Any, Any, Array, Any, Array], tuple[Any, Array, Array]]
    hidden: Callable[[Any], Array]  # the h in the carry: it is both W_hh's input and y
    additive: bool


# act'(z) in terms of the output h' = act(z), so that only h' is saved
_ELMAN_SLOPES = {
    "tanh": lambda h: 1.0 - h * h,
    "relu": lambda h: (h > 0).astype(h.dtype),
    "identity": jnp.ones_like,
}


def _elman_equation(activation: str) -> _Equation:
    act, slope = _ACTIVATIONS[activation], _ELMAN_SLOPES[activation]

    def forward(h, gi, gh):  # h' = act(x W_ih + b_ih + h W_hh + b_hh), as rnnjax.elman
        return act(gi + gh), ()  # nothing saved: act' is read from the output y = h'

    def backward(h, saved, y, d_h, dy):
        dz = (d_h + dy) * slope(y)
        return jnp.zeros_like(h), dz, dz

    return _Equation(forward, backward, lambda h: h, True)


def _lstm_forward(carry, gi, gh):
    # As rnnjax.lstm: gates i, f, g, o; c' = f c + i g; h' = o tanh(c').
    h, c = carry
    z = gi + gh
    # All four gate activations in one element-wise pass over z (one XLA:CPU kernel per
    # step instead of four): sigmoid(x) = (1 + tanh(x / 2)) / 2, and gate g is tanh.
    hidden = z.shape[-1] // 4
    half = jnp.repeat(jnp.array([0.5, 0.5, 1.0, 0.5], z.dtype), hidden)
    acts = half * jnp.tanh(half * z) + (1.0 - half)
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c = f * c.astype(f.dtype) + i * g
    # Only the activations are saved: the backward step is bound by reading its
    # residuals from memory, so recomputing tanh(c') there is cheaper than saving it.
    return (o * jnp.tanh(c), c), acts


def _lstm_backward(carry, acts, y, d_carry, dy):
    # The derivative of _lstm_forward, with sigmoid' = s (1 - s) and tanh' = 1 - tanh^2.
    (h, c), (d_h, d_c) = carry, d_carry
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c = c.astype(f.dtype)
    tanh_c = jnp.tanh(f * c + i * g)
    d_h = d_h + dy
    d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
    dz = jnp.concatenate([
        d_c * g * i * (1.0 - i), d_c * c * f * (1.0 - f), d_c * i * (1.0 - g * g),
        d_h * tanh_c * o * (1.0 - o),
    ], axis=-1)
    return (jnp.zeros_like(h), (d_c * f).astype(carry[1].dtype)), dz, dz


def _gru_forward(h, gi, gh):
    # As rnnjax.gru(reset_after=True): n = tanh(gi_n + r (h W_hn + b_hn)); h' = (1-z) n + z h.
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h.astype(n.dtype), (r, z, n, h_n)


def _gru_backward(h, saved, y, d_h, dy):
    # The derivative of _gru_forward; d_gh differs from d_gi only in the n block (r h_n).
    (r, z, n, h_n), d = saved, d_h + dy
    dtype, h = h.dtype, h.astype(n.dtype)
    d_n = d * (1.0 - z) * (1.0 - n * n)  # d/d(i_n + r h_n)
    d_r = d_n * h_n * r * (1.0 - r)
    d_z = d * (h - n) * z * (1.0 - z)
    d_gi = jnp.concatenate([d_r, d_z, d_n], axis=-1)
    d_gh = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
    return (d * z).astype(dtype), d_gi, d_gh


@functools.lru_cache(maxsize=None)  # one _Equation per kind, so jit caches hit
def _equation(kind: Any) -> _Equation | None:
    if not isinstance(kind, tuple) or not kind:
        return None
    if kind[0] == "elman" and len(kind) == 3 and kind[1] in _ELMAN_SLOPES:
        return _elman_equation(kind[1])
    if kind[0] == "lstm" and len(kind) == 2:
        return _Equation(_lstm_forward, _lstm_backward, lambda carry: carry[0], True)
    if kind[0] == "gru" and len(kind) == 3 and kind[1] == "reset_after":
        return _Equation(_gru_forward, _gru_backward, lambda h: h, False)
    return None


# Kinds whose fast path did not measure faster than the reference on XLA:CPU, fwd+bwd at
# B=32, T=200, H=128 (docs/benchmarks.md); impl="auto" runs the reference for them there.
_CPU_REFERENCE_KINDS = ("elman", "gru")


def supports(cell: Cell) -> bool:
    """Returns whether :func:`scan` has a fast path for ``cell`` (else it runs the reference).

    The fast path covers ``rnnjax.elman`` (any activation), ``rnnjax.lstm`` and
    ``rnnjax.gru(reset_after=True)``, recognised by ``cell.kind``.
    """
    return _equation(cell.kind) is not None


def _cast_like(new, old):
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)


class _Layout(NamedTuple):
    """How one step's residuals ``(x, carry, saved)`` are packed into one vector (static)."""

    treedef: Any
    sizes: tuple[int, ...]  # None: not packed (mixed dtypes), the residuals stay a tuple
    dtypes: tuple[Any, ...]


def _pack(tree):
    """Returns ``(packed, layout)``: the leaves of ``tree`` concatenated, if one dtype."""
    leaves, treedef = jax.tree.flatten(tree)
    dtypes = tuple(leaf.dtype for leaf in leaves)
    if len(set(dtypes)) != 1:
        return tree, _Layout(treedef, None, dtypes)
    sizes = tuple(leaf.shape[-1] for leaf in leaves)
    return jnp.concatenate(leaves, axis=-1), _Layout(treedef, sizes, dtypes)


def _unpack(packed, layout):
    """Returns the tree :func:`_pack` packed (works on a stack of packed vectors too)."""
    if layout.sizes is None:
        return packed
    ends = [sum(layout.sizes[: k + 1]) for k in range(len(layout.sizes))]
    leaves = [packed[..., e - s: e] for s, e in zip(layout.sizes, ends)]
    return jax.tree.unflatten(layout.treedef, leaves)


def _loop_forward(eq, reverse, unroll, w_ih, b_in, w_hh, b_hh, carry, xs, valid):
    """Returns ``(final_carry, ys)``, every step's residuals ``(x, carry, saved)`` stacked
    and packed (``saved``: what ``eq.forward`` keeps, the gate activations), and their
    :class:`_Layout`.

    Packed, the residuals are ONE stacked array: XLA:CPU zero-fills every stacked output of
    a loop and copies the zeros once per output, which cost more than a tenth of the
    LSTM's fwd+bwd time with seven separate stacks (docs/benchmarks.md).
    """
    layout = []

    def body(c, inputs):
        x, v = inputs
        # The input projection stays in the loop: on XLA:CPU, hoisting it as one GEMM
        # before the loop made the loop ~2x slower (docs/benchmarks.md).
        gi = x @ w_ih + b_in
        gh = eq.hidden(c).astype(w_hh.dtype) @ w_hh
        gh = gh if b_hh is None else gh + b_hh
        new, saved = eq.forward(c, gi, gh)
        new = _cast_like(new, c)
        y = eq.hidden(new)
        if v is not None:  # a padded step keeps the carry and emits zeros
            new = jax.tree.map(lambda n, o: jnp.where(v, n, o), new, c)
            y = jnp.where(v, y, jnp.zeros_like(y))
        packed, step_layout = _pack((x, c, saved))
        layout.append(step_layout)
        return new, (y, packed)

    final, (ys, residuals) = jax.lax.scan(
        body, carry, (xs, valid), reverse=reverse, unroll=unroll
    )
    return (final, ys), residuals, layout[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _attach(eq, layout, reverse, unroll, pre, carry, w_hh, out, residuals, valid):
    """Returns ``out = (final_carry, ys)``, computed before, with the recurrence's VJP attached.

    ``pre`` holds the pre-activations as functions of the weights and inputs, with the
    residuals ``x_t, h_{t-1}`` held constant: ``(a W + b, xs W_ih)`` with
    ``a = [x_t, h_{t-1}]`` and ``W = [W_ih; W_hh]`` for an additive update, else
    ``(x_t W_ih + b_ih, h_{t-1} W_hh + b_hh, xs W_ih)``. Their values are not used (XLA
    drops them); the backward pass (:func:`_attach_bwd`) returns their cotangents, so JAX
    differentiates those products into ``dW = a^T dz`` (ONE GEMM over all steps and,
    under ``vmap``, all examples; for the GRU one per weight) and ``dxs = dgi W_ih^T``.
    A VJP that returned the weight gradients itself would get them per example under
    ``vmap``: a batched matmul and a sum that cost more than the loop.
    """
    del pre, carry, w_hh, residuals, valid
    return out


def _attach_fwd(eq, layout, reverse, unroll, pre, carry, w_hh, out, residuals, valid):
    return out, (w_hh, residuals, out[1], valid)


def _attach_bwd(eq, layout, reverse, unroll, saved, cotangents):
    """Returns the pre-activation and initial-carry cotangents from one backward loop.

    Each backward step maps ``d carry_t`` to ``d carry_{t-1}`` through the element-wise
    update (``eq.backward`` at the saved activations) and one ``dgh_t W_hh^T`` matmul; the
    loop carries only this state gradient and emits ``dgi_t, dgh_t``.
    """
    w_hh, residuals, ys, valid = saved
    d_final, d_ys = cotangents
    w_hh_t = w_hh.T  # once, outside the loop

    def body(d_carry, inputs):
        packed, y, v, dy = inputs
        _, c, s = _unpack(packed, layout)
        d_c, d_gi, d_gh = eq.backward(c, s, y, d_carry, dy)
        if v is not None:  # a padded step: the carry's gradient passes through
            d_c = jax.tree.map(lambda d, keep: jnp.where(v, d, keep), d_c, d_carry)
            d_gi = jnp.where(v, d_gi, jnp.zeros_like(d_gi))
            d_gh = d_gi if eq.additive else jnp.where(v, d_gh, jnp.zeros_like(d_gh))
        d_h = eq.hidden(d_c) + (d_gh @ w_hh_t).astype(eq.hidden(d_c).dtype)
        d_c = (d_h, d_c[1]) if isinstance(d_c, tuple) else d_h
        return d_c, (d_gi if eq.additive else (d_gi, d_gh))

    d_carry, d_pre = jax.lax.scan(
        body, d_final, (residuals, ys, valid, d_ys), reverse=not reverse, unroll=unroll
    )
    d_pre = (d_pre, d_pre) if eq.additive else (*d_pre, d_pre[0])
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    return d_pre, d_carry, zeros(w_hh), zeros(cotangents), zeros(residuals), None


_attach.defvjp(_attach_fwd, _attach_bwd)


def _fused_scan(cell, eq, params, xs, carry, length, reverse, unroll):
    """Returns ``(final_carry, ys)`` of one sequence through the fast path (no checks)."""
    dtype = cell.kind[-1]
    dtype = dtype if dtype is not None else jnp.result_type(xs, params["w_ih"])
    w_ih, w_hh = params["w_ih"].astype(dtype), params["w_hh"].astype(dtype)
    b_in = params.get("b_ih", jnp.zeros((w_hh.shape[-1],), dtype)).astype(dtype)
    b_hh = params.get("b_hh")
    if b_hh is not None:
        b_hh = b_hh.astype(dtype)
        if eq.additive:  # only gi + gh matters: one bias
            b_in, b_hh = b_in + b_hh, None
    xs = xs.astype(dtype)
    valid = None if length is None else jnp.arange(xs.shape[0]) < length
    sg = jax.lax.stop_gradient
    out, residuals, layout = _loop_forward(
        eq, reverse, unroll, sg(w_ih), sg(b_in), sg(w_hh), sg(b_hh), sg(carry), sg(xs), valid
    )
    out, residuals = sg(out), sg(residuals)
    x_t, c, _ = _unpack(residuals, layout)
    h_prev = eq.hidden(c).astype(dtype)
    # x_t: xs as the loop stacked it, time-major under vmap like h_prev, so that XLA:CPU
    # lays out the cotangent dz once for both weight GEMMs.
    if eq.additive:
        a = jnp.concatenate([x_t, h_prev], axis=-1)
        pre = (a @ jnp.concatenate([w_ih, w_hh]) + b_in,)
    else:
        gh = h_prev @ w_hh if b_hh is None else h_prev @ w_hh + b_hh
        pre = (x_t @ w_ih + b_in, gh)
    pre = pre + (xs @ sg(w_ih),)  # for dxs only
    return _attach(eq, layout, reverse, unroll, pre, carry, sg(w_hh), out, residuals, valid)


def check_options(impl: Any, remat: Any) -> None:
    """Raises ValueError unless ``impl`` and ``remat`` are valid options of :func:`scan`."""
    if impl not in ("auto", "fused", "reference"):
        raise ValueError(f"impl must be 'auto', 'fused' or 'reference', got {impl!r}")
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
    unroll: int | bool = 1,
    remat: Any = None,
    impl: str = "auto",
) -> tuple[Any, Array]:
    """Returns ``(final_carry, ys)`` equal to :func:`rnnjax.scan`, computed faster.

    Args:
      cell, params, xs, carry, length, reverse, unroll: as in :func:`rnnjax.scan`;
        ``xs: (T, input_size)`` is one sequence (batch with ``jax.vmap``).
      remat: ``None`` keeps every step's residuals for the backward pass (memory O(T));
        ``"sqrt"`` or an int ``k`` cuts the sequence into segments of ``ceil(sqrt(T))`` or
        ``k`` steps, keeps only the carries between segments and recomputes each segment
        during backpropagation (memory O(T/k + k), about one more forward pass of time).
      impl: ``"fused"`` (the fast path; raises ValueError for cells without one),
        ``"reference"`` (``cell.step`` in ``lax.scan``) or ``"auto"``: fused when
        :func:`supports` the cell and it measured faster there (every supported cell
        on GPU; on CPU the LSTM only), else the reference. The fast path's derivative
        is a custom VJP, so it supports reverse mode (``grad``, ``vjp``, ``jacrev``) but
        not forward mode (``jvp``, ``jacfwd``): use ``impl="reference"`` for those.

    Returns:
      ``final_carry`` (like ``carry``) and ``ys: (T, hidden_size)``.
    """
    check_options(impl, remat)
    eq = _equation(cell.kind) if impl != "reference" else None
    if impl == "fused" and eq is None:
        raise ValueError(f"impl='fused' has no fast path for a cell of kind {cell.kind!r}")
    if impl == "auto" and eq is not None and cell.kind[0] in _CPU_REFERENCE_KINDS:
        if jax.default_backend() == "cpu":
            eq = None
    check_inputs(cell, params, xs)
    num_steps = xs.shape[0]
    length = check_length(length, num_steps)
    if carry is None:
        carry = cell.initial_carry(params)
    else:
        check_carry(cell, params, carry)

    def run(carry, xs, length):
        if eq is None:
            return reference_scan(
                cell, params, xs, carry=carry, length=length, reverse=reverse, unroll=unroll
            )
        return _fused_scan(cell, eq, params, xs, carry, length, reverse, unroll)

    if remat is None:
        return run(carry, xs, length)

    seg = _segment_length(remat, num_steps)
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
        segment, carry, (xs.reshape((num_segments, seg) + xs.shape[1:]), offsets),
        reverse=reverse,
    )
    return final, ys.reshape((padded,) + ys.shape[2:])[:num_steps]
