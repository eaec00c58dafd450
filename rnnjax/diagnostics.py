"""Gradient-flow diagnostics: backpropagation through time made measurable.

The API is at the model level: :func:`gradient_flow` (dL/d(state_t) of every loop inside a
loss), :func:`layer_jacobian_norms` and :func:`layer_lyapunov_spectra` (each loop driven
by what it reads inside the model) and :func:`gradient_flow_hook` (the flow during
training) take ``fn, *args`` and label each loop by where it sits. The functions of one
cell (:func:`state_gradients`, :func:`jacobian_norms`, :func:`lyapunov_spectrum`, ...) are
the same per-loop computations applied to the one loop of ``rnnjax.scan(cell, params, xs)``.

The *state* of a cell is its whole carry flattened with ``jax.flatten_util.ravel_pytree``
(for an LSTM: ``h`` then ``c``), a vector of size ``n``; :func:`gradient_flow` reports
a carry of several leaves leaf by leaf (``.../h``, ``.../c``). ``state_t`` is the carry that
step ``t`` hands to step ``t + 1`` (0-based: ``state_0`` is the carry after reading
``xs[0]``, ``state_{T-1}`` is the final carry). Every function acts on ONE sequence
``xs: (T, input_size)``, works for any :class:`rnnjax.Cell` (including ones written by
users), under ``jax.jit``, and batches with ``jax.vmap`` (a per-example ``length``
included). Padding follows :func:`rnnjax.scan`: steps ``t >= length`` leave the carry
unchanged, so they carry no gradient and their step Jacobian is the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax import householder, padding, probes
from rnnjax.cells import ELMAN_UPDATES, Cell, GatedStep
from rnnjax.lags import gradient_by_lag, layer_gradient_by_lag  # noqa: F401  (re-exported)
from rnnjax.scan import check_inputs, initial_carry, scan

__all__ = [
    "PascanuBound",
    "final_state_jacobians",
    "gradient_flow",
    "gradient_flow_hook",
    "gradient_flow_norms",
    "jacobian_norms",
    "largest_singular_value",
    "layer_jacobian_norms",
    "layer_lyapunov_spectra",
    "loops",
    "lyapunov_spectrum",
    "pascanu_bound",
    "recurrent_matrices",
    "singular_values",
    "spectral_radius",
    "state_gradient_norms",
    "state_gradients",
    "step_jacobians",
    "step_singular_values",
]

Array = jax.Array
LossFn = Callable[[Any, Array], Array]


def _check_cell(cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")


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
    length and the direction, so that the per-loop diagnostics (:func:`layer_lyapunov_spectra`,
    :func:`layer_jacobian_norms`) measure each layer of a model as it runs inside it.
    Labels as in :func:`gradient_flow`, one per loop (not per carry leaf).
    """
    with probes.probing(modules=args) as context:
        fn(*args)
    return dict(context.loops)


def _forward_inputs(loop: probes.Loop) -> Array:
    """Returns the loop's inputs in the order it reads them (a backward direction reversed)."""
    return padding.reverse_valid(loop.xs, loop.length) if loop.reverse else loop.xs


def _loop_of(cell: Cell, params: Any, xs: Array, carry: Any, length: Any) -> probes.Loop:
    """Returns the one loop of ``rnnjax.scan(cell, params, xs, ...)``, its inputs checked."""
    _check_cell(cell)
    check_inputs(cell, params, xs)
    return probes.Loop(cell, params, xs, carry, length, reverse=False)


def layer_lyapunov_spectra(
    fn: Callable[..., Any],
    *args: Any,
    k: int | None = None,
    reorth_every: int = 1,
    key: Array | None = None,
) -> dict[str, Array]:
    """Returns ``{label: (k,)}``: the Lyapunov spectrum of every loop in ``fn(*args)``.

    Each loop's cell is driven by the inputs it reads inside the model (see :func:`loops`);
    ``k``, ``reorth_every`` and ``key`` as in :func:`lyapunov_spectrum` (``k`` is capped at
    each state's size).
    """
    spectra = {}
    for label, loop in loops(fn, *args).items():
        size = ravel_pytree(initial_carry(loop.cell, loop.params, loop.carry))[0].size
        spectra[label] = _lyapunov(loop, None if k is None else min(k, size), reorth_every, key)
    return spectra


def layer_jacobian_norms(
    fn: Callable[..., Any], *args: Any, ord: int | str = 2
) -> dict[str, Array]:
    """Returns ``{label: (T,)}``: ||d state_last / d state_t|| of every loop in ``fn(*args)``,
    in the order each loop reads its inputs (see :func:`jacobian_norms`)."""
    return {label: _jacobian_norms(loop, ord) for label, loop in loops(fn, *args).items()}


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


def _flat_step(cell: Cell, params: Any, unravel: Callable) -> Callable[[Array, Array], Array]:
    """Returns ``f(state, x) -> next_state``: one step of ``cell`` on flattened carries."""

    def f(state, x):
        new_carry, _ = cell.step(params, unravel(state), x)
        return ravel_pytree(new_carry)[0].astype(state.dtype)

    return f


def final_state_jacobians(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n, n)``: entry ``t`` is d(state_{T-1}) / d(state_t), the Jacobian product.

    d h_T / d h_t = ∏_{s=t+1}^{T} ∂h_s/∂h_{s-1}, rows index the final state and columns
    state_t; entry ``T - 1`` is the identity, entries ``t >= length`` are zero (padding
    steps do not exist). Computed with one forward pass and ``n`` vector-Jacobian products
    (one per row, vmapped), never by multiplying dense per-step Jacobians; memory is
    ``T * n * n``.
    """
    _check_cell(cell)
    check_inputs(cell, params, xs)
    run, zeros, _ = _probed_run(lambda: scan(cell, params, xs, carry=carry, length=length)[0], ())
    ((label, zero_probe),) = zeros.items()
    dtype, size = zero_probe.dtype, zero_probe.shape[1]
    final_of_probe = lambda probe: ravel_pytree(run({label: probe})[0])[0].astype(dtype)
    _, vjp = jax.vjp(final_of_probe, zero_probe)
    (rows,) = jax.vmap(vjp)(jnp.eye(size, dtype=dtype))  # (n_out, T, n_in)
    return jnp.moveaxis(rows, 0, 1)


def jacobian_norms(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    ord: int | str = 2,
) -> Array:
    """Returns ``(T,)``: the norm of d(state_{T-1}) / d(state_t) for every step ``t``.

    For a linear RNN h_t = h_{t-1} (a Q) with Q orthogonal this is a^(T-1-t). The
    Jacobians come from :func:`final_state_jacobians` (``n`` vector-Jacobian products);
    ``ord=2`` takes their largest singular value, ``ord="fro"`` their Frobenius norm.
    Entries ``t >= length`` are zero. :func:`layer_jacobian_norms` measures every loop of
    a model the same way.
    """
    return _jacobian_norms(_loop_of(cell, params, xs, carry, length), ord)


def _jacobian_norms(loop: probes.Loop, ord: int | str) -> Array:
    """Returns ``(T,)``: :func:`jacobian_norms` of one loop, on the inputs in reading order."""
    if ord not in (2, "fro"):
        raise ValueError(f"ord must be 2 (spectral) or 'fro' (Frobenius), got {ord!r}")
    jacobians = final_state_jacobians(
        loop.cell, loop.params, _forward_inputs(loop), carry=loop.carry, length=loop.length
    )
    if ord == "fro":
        return jnp.sqrt(jnp.sum(jnp.square(jacobians), axis=(-2, -1)))
    return singular_values(jacobians)[..., 0]


def step_jacobians(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n, n)``: entry ``t`` is d(state_t) / d(state_{t-1}) along the trajectory.

    ``state_{-1}`` is the initial carry. Rows index state_t, columns state_{t-1}; for an
    Elman cell h_t = act(x_t W_ih + h_{t-1} W_hh + b) this is diag(act'(·)) W_hh^T.
    Entries ``t >= length`` are the identity (padding keeps the carry).
    """
    _check_cell(cell)
    check_inputs(cell, params, xs)
    carry = initial_carry(cell, params, carry)
    flat, unravel = ravel_pytree(carry)
    step = _flat_step(cell, params, unravel)

    def emit_previous(params_, carry_, x):  # the state entering each step, as the output
        new_carry, _ = cell.step(params_, carry_, x)
        return new_carry, ravel_pytree(carry_)[0]

    tracer = Cell(cell.init, cell.initial_carry, emit_previous, flat.size, ("previous", cell.kind))
    _, previous = scan(tracer, params, xs, carry=carry, length=length)
    previous = previous.astype(flat.dtype)
    length = padding.check_length(length, xs.shape[0])
    valid = padding.valid_steps(xs.shape[0], length)
    jacobians = jax.vmap(jax.jacfwd(step))(previous, padding.clean(xs, valid))
    eye = jnp.broadcast_to(jnp.eye(flat.size, dtype=jacobians.dtype), jacobians.shape)
    return padding.keep_carry(valid, jacobians, eye)


def singular_values(matrices: Array) -> Array:
    """Returns ``(..., min(m, n))``: the singular values of ``matrices: (..., m, n)``, descending."""
    matrices = jnp.asarray(matrices)
    if matrices.ndim < 2:
        raise ValueError(f"matrices must have shape (..., m, n), got shape {matrices.shape}")
    return jnp.linalg.svd(matrices, compute_uv=False)


def step_singular_values(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
) -> Array:
    """Returns ``(T, n)``: the singular values of each step Jacobian (:func:`step_jacobians`)."""
    return singular_values(step_jacobians(cell, params, xs, carry=carry, length=length))


def recurrent_matrices(params: Any) -> Array:
    """Returns ``(G, H, H)``: the recurrent weight block of each gate, from ``w_hh: (H, G*H)``.

    Block ``g`` is the matrix the cell multiplies ``h`` by (``h @ W``) for gate ``g`` in
    PyTorch's order: one block for Elman, (i, f, g, o) for LSTM, (r, z, n) for GRU.
    """
    if not isinstance(params, dict) or "w_hh" not in params:
        raise TypeError(
            "params must be a dict with a 'w_hh' entry of shape (H, G*H), as made by "
            f"rnnjax.elman/lstm/gru; got {type(params).__name__}"
        )
    w = jnp.asarray(params["w_hh"])
    h = w.shape[0]
    if w.ndim != 2 or w.shape[1] % h:
        raise ValueError(f"params['w_hh'] must have shape (H, G*H), got {w.shape}")
    return jnp.moveaxis(w.reshape(h, w.shape[1] // h, h), 1, 0)


def largest_singular_value(matrices: Array) -> Array:
    """Returns ``(...)``: σ_max of each ``(..., m, n)`` matrix (its spectral norm)."""
    return singular_values(matrices)[..., 0]


def spectral_radius(matrices: Array) -> Array:
    """Returns ``(...)``: max ``|λ|`` over the eigenvalues of each square ``(..., n, n)`` matrix.

    Uses ``jnp.linalg.eigvals`` (general, non-symmetric eigenvalues), which JAX computes
    on the CPU.
    """
    matrices = jnp.asarray(matrices)
    if matrices.ndim < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"matrices must have shape (..., n, n), got shape {matrices.shape}")
    return jnp.max(jnp.abs(jnp.linalg.eigvals(matrices)), axis=-1)


class PascanuBound(NamedTuple):
    """The sufficient condition for vanishing gradients of Pascanu, Mikolov & Bengio (2013).

    For h_t = σ(W_hh^T h_{t-1} + W_ih^T x_t + b) with ``|σ'| ≤ γ``,
    ||∂h_t/∂h_{t-1}|| ≤ ||W_hh|| ||diag σ'|| ≤ σ_max(W_hh) γ = ``bound``, so
    σ_max(W_hh) < 1/γ (``vanishing``) makes ||∂h_T/∂h_t|| ≤ bound^(T-t) → 0 (their eq. 7
    and Section 3.1). Its converse, σ_max > 1/γ, is only necessary for exploding.

    Attributes:
      sigma_max: largest singular value of W_hh.
      gamma: bound on the derivative of the nonlinearity.
      bound: ``sigma_max * gamma``, a bound on the norm of every step Jacobian.
      vanishing: ``sigma_max < 1 / gamma``.
    """

    sigma_max: Array
    gamma: float
    bound: Array
    vanishing: Array


_DERIVATIVE_BOUNDS = {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25}


def pascanu_bound(params: Any, activation: str | Cell = "tanh") -> PascanuBound:
    """Returns the :class:`PascanuBound` of an Elman cell's ``params``.

    Args:
      params: Elman parameters with ``w_hh: (H, H)``.
      activation: the nonlinearity's name (``"tanh"``, ``"relu"``, ``"identity"``,
        ``"sigmoid"``; γ = 1, 1, 1, 1/4) or the :func:`rnnjax.elman` cell itself.
    """
    if isinstance(activation, Cell):
        step = activation.step
        names = [
            name
            for name, update in ELMAN_UPDATES.items()
            if type(step) is GatedStep and getattr(step, "update", None) is update
        ]
        if not names:
            raise ValueError(
                f"pascanu_bound needs an Elman cell (its bound is for h = σ(W h + ...)), got a "
                f"cell of kind {activation.kind!r} whose step is not an Elman step"
            )
        activation = names[0]
    if activation not in _DERIVATIVE_BOUNDS:
        raise ValueError(
            f"activation must be one of {sorted(_DERIVATIVE_BOUNDS)}, got {activation!r}"
        )
    blocks = recurrent_matrices(params)
    if blocks.shape[0] != 1:
        raise ValueError(
            f"pascanu_bound needs Elman params with w_hh of shape (H, H), got "
            f"{tuple(params['w_hh'].shape)} ({blocks.shape[0]} gate blocks)"
        )
    gamma = _DERIVATIVE_BOUNDS[activation]
    sigma_max = largest_singular_value(blocks[0])
    return PascanuBound(sigma_max, gamma, sigma_max * gamma, sigma_max < 1.0 / gamma)


def lyapunov_spectrum(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    carry: Any = None,
    length: Any = None,
    k: int | None = None,
    reorth_every: int = 1,
    key: Array | None = None,
) -> Array:
    """Returns ``(k,)``: the top-``k`` Lyapunov exponents of the input-driven cell, in nats per step.

    The QR method of Benettin et al. (1980), as Engelken, Wolf & Abbott (2020) apply it to
    RNNs: an orthonormal basis Q (n, k) is pushed through the step Jacobians,
    J_t Q_{t-1} = Q_t R_t (with ``jax.jvp``, no dense Jacobian), re-orthonormalised every
    ``reorth_every`` steps, and

        λ_i = (1 / T) Σ_t log |(R_t)_{ii}|,

    in the order of the QR decomposition, which converges to descending order as T
    grows (for short T it may not be sorted, and the top-``k`` exponents are the first
    ``k`` of the full spectrum only in this order). Steps ``t >= length`` are skipped and T is the number of
    valid steps. For a linear RNN with W_hh = a Q every exponent is log a.

    Args:
      cell, params, xs, carry, length: as in :func:`state_gradients`.
      k: number of exponents, ``1 <= k <= n`` (default ``n``).
      reorth_every: steps between QR decompositions (products of a few steps stay finite).
      key: draws a random initial basis; by default the first ``k`` unit vectors. Pass a
        key for cells whose step Jacobian can be singular along a unit vector (ReLU units
        that switch off, as in an IRNN): a zero diagonal entry of R gives an exponent of
        -inf for that direction and the basis loses its order.

    :func:`layer_lyapunov_spectra` measures every loop of a model the same way.
    """
    return _lyapunov(_loop_of(cell, params, xs, carry, length), k, reorth_every, key)


def _lyapunov(loop: probes.Loop, k: int | None, reorth_every: int, key: Array | None) -> Array:
    """Returns ``(k,)``: :func:`lyapunov_spectrum` of one loop, on the inputs in reading order."""
    cell, params, xs, length = loop.cell, loop.params, _forward_inputs(loop), loop.length
    carry = initial_carry(cell, params, loop.carry)
    flat, unravel = ravel_pytree(carry)
    n, num_steps = flat.size, xs.shape[0]
    k = n if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if not isinstance(reorth_every, int) or isinstance(reorth_every, bool) or reorth_every < 1:
        raise ValueError(f"reorth_every must be a positive int, got {reorth_every!r}")
    if key is None:
        basis = jnp.eye(n, k, dtype=flat.dtype)
    else:
        basis = householder.qr(jax.random.normal(key, (n, k), flat.dtype))[0]
    step = _flat_step(cell, params, unravel)
    length = padding.check_length(length, num_steps)
    valid_steps = padding.valid_steps(num_steps, length)
    xs = padding.clean(xs, valid_steps)
    num_valid = num_steps if length is None else length
    last = num_valid - 1

    def orthonormalise(q, log_r):
        q, r = householder.qr(q)  # no LAPACK: see rnnjax.householder
        d = jnp.diagonal(r)
        # Positive diagonal keeps Q continuous from one step to the next.
        return q * jnp.where(d < 0, -1.0, 1.0).astype(q.dtype), log_r + jnp.log(jnp.abs(d))

    def body(state, inputs):
        h, q, log_r = state
        x, t = inputs
        new_h, jq = jax.vmap(
            lambda v: jax.jvp(lambda s: step(s, x), (h,), (v,)), in_axes=1, out_axes=(None, 1)
        )(q)
        valid = t < num_valid
        new_h, jq = padding.keep_carry(valid, (new_h, jq), (h, q))
        due = valid & (((t + 1) % reorth_every == 0) | (t == last))
        q, log_r = jax.lax.cond(due, orthonormalise, lambda a, b: (a, b), jq, log_r)
        return (new_h, q, log_r), None

    init = (flat, basis, jnp.zeros((k,), flat.dtype))
    steps = jnp.arange(num_steps)
    (_, _, log_r), _ = jax.lax.scan(body, init, (xs, steps))
    return log_r / jnp.maximum(num_valid, 1)


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
