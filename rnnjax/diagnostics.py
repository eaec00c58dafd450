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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax import householder, padding, probes
from rnnjax.cells import ELMAN_UPDATES, Cell, GatedStep
from rnnjax.lags import gradient_by_lag, layer_gradient_by_lag  # noqa: F401  (re-exported)
from rnnjax.scan import check_inputs, initial_carry, scan

Array = jax.Array
LossFn = Callable[[Any, Array], Array]


def _check_cell(cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")


def _probed_run(fn: Callable, *args: Any) -> tuple[Callable, dict[str, Array]]:
    """Returns ``(run, zeros)``: ``run(probes) = fn(*args)`` with ``probes`` added to the
    state of every loop inside it, and the zero probes (``{label: (T, n)}``) at which
    ``run`` equals ``fn(*args)``; derivatives of ``run`` there are dL/d(state_t)."""
    with probes.probing() as context:
        jax.eval_shape(lambda *a: fn(*a), *args)
    if not context.shapes:
        raise ValueError(
            "fn ran no recurrent loop (rnnjax.scan, a layer or a model): there is no state to probe"
        )
    zeros = {label: jnp.zeros(s.shape, s.dtype) for label, s in context.shapes.items()}

    def run(probe_values):
        with probes.probing(probe_values):
            return fn(*args)

    return run, zeros


def gradient_flow(fn: Callable[..., Array], *args: Any) -> dict[str, Array]:
    """Returns ``{label: (T, n)}``: dL/d(state_t) of every recurrent loop inside ``fn``.

    ``L = fn(*args)`` is a scalar loss of ONE example computed with any rnnjax layer,
    model or Flax module (a stack, a bidirectional layer, an encoder–decoder, ...); batch
    with ``jax.vmap``. Each loop (each layer, and each direction of a bidirectional layer)
    is labelled by the path of its parameters in the model's parameter tree, e.g.
    ``"rnn/0/forward"`` and ``"rnn/0/backward"`` for the first layer of a
    ``many_to_one(stack(bidirectional(...), ...))``; ``"scan"`` for a bare
    :func:`rnnjax.scan`. Row ``t`` belongs to input step ``t`` in every direction (for a
    backward direction, the state after reading ``xs[t]``); rows of padded steps are 0.

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
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(*args) -> scalar loss, got {fn!r}")
    run, zeros = _probed_run(fn, *args)
    return jax.grad(run)(zeros)


def gradient_flow_norms(fn: Callable[..., Array], *args: Any) -> dict[str, Array]:
    """Returns ``{label: (T,)}``: the norms ||dL/d(state_t)|| of :func:`gradient_flow`."""
    return {k: jnp.linalg.norm(g, axis=-1) for k, g in gradient_flow(fn, *args).items()}


def loops(fn: Callable[..., Any], *args: Any) -> dict[str, probes.Loop]:
    """Returns ``{label: Loop}``: every recurrent loop ``fn(*args)`` runs, with its inputs.

    Each :class:`rnnjax.probes.Loop` holds the cell, its parameters, the sequence it read
    (for a layer above the first, the outputs of the layer below), the initial carry, the
    length and the direction, so that the per-cell diagnostics (:func:`lyapunov_spectrum`,
    :func:`jacobian_norms`, :func:`step_singular_values`) apply to each layer of a model
    as it runs inside it. Labels as in :func:`gradient_flow`.
    """
    with probes.probing() as context:
        fn(*args)
    return dict(context.loops)


def _forward_inputs(loop: probes.Loop) -> Array:
    """Returns the loop's inputs in the order it reads them (a backward direction reversed)."""
    return padding.reverse_valid(loop.xs, loop.length) if loop.reverse else loop.xs


def layer_lyapunov_spectra(
    fn: Callable[..., Any], *args: Any, k: int | None = None, key: Array | None = None
) -> dict[str, Array]:
    """Returns ``{label: (k,)}``: the Lyapunov spectrum of every loop in ``fn(*args)``.

    Each loop's cell is driven by the inputs it reads inside the model (see :func:`loops`);
    ``k`` and ``key`` as in :func:`lyapunov_spectrum` (``k`` is capped at each state's size).
    """
    spectra = {}
    for label, loop in loops(fn, *args).items():
        size = ravel_pytree(initial_carry(loop.cell, loop.params, loop.carry))[0].size
        spectra[label] = lyapunov_spectrum(
            loop.cell,
            loop.params,
            _forward_inputs(loop),
            carry=loop.carry,
            length=loop.length,
            k=None if k is None else min(k, size),
            key=key,
        )
    return spectra


def layer_jacobian_norms(
    fn: Callable[..., Any], *args: Any, ord: int | str = 2
) -> dict[str, Array]:
    """Returns ``{label: (T,)}``: ||d state_last / d state_t|| of every loop in ``fn(*args)``,
    in the order each loop reads its inputs (see :func:`jacobian_norms`)."""
    return {
        label: jacobian_norms(
            loop.cell,
            loop.params,
            _forward_inputs(loop),
            carry=loop.carry,
            length=loop.length,
            ord=ord,
        )
        for label, loop in loops(fn, *args).items()
    }


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
    (grads,) = gradient_flow(
        lambda: loss_fn(*scan(cell, params, xs, carry=carry, length=length))
    ).values()
    return grads


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
    run, zeros = _probed_run(lambda: scan(cell, params, xs, carry=carry, length=length)[0])
    ((label, zero_probe),) = zeros.items()
    dtype, size = zero_probe.dtype, zero_probe.shape[1]
    final_of_probe = lambda probe: ravel_pytree(run({label: probe}))[0].astype(dtype)
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
    Entries ``t >= length`` are zero.
    """
    if ord not in (2, "fro"):
        raise ValueError(f"ord must be 2 (spectral) or 'fro' (Frobenius), got {ord!r}")
    jacobians = final_state_jacobians(cell, params, xs, carry=carry, length=length)
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
    """
    _check_cell(cell)
    check_inputs(cell, params, xs)
    carry = initial_carry(cell, params, carry)
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


def mean_over_valid(norms: Array) -> Array:
    """Returns ``(T,)``: the mean of ``norms: (B, T)`` over the examples in which step ``t``
    is valid (a padded step's gradient is exactly 0, so it is left out; 0 where none is)."""
    count = jnp.sum(norms > 0, axis=0)
    return jnp.sum(norms, axis=0) / jnp.maximum(count, 1)


def model_gradient_flow_hook(
    loss: Callable[..., Array],
    batch: Any,
    *,
    get_params: Callable[[Any], Any] = lambda state: state.params,
    prefix: str = "gradient_flow/",
) -> Callable[[Any], dict[str, Any]]:
    """Returns ``hook(state) -> {prefix + label: (T,)}``: a model's gradient flow during training.

    For :func:`rnnjax.training.fit`'s ``hooks``: on a fixed probe ``batch`` (a tuple of
    arrays with a leading batch axis, the model's raw inputs: tokens go through its
    embedding), it evaluates :func:`gradient_flow_norms` of ``loss(params, *example)`` for
    every example in one jitted call and returns, per loop (layer and direction, labelled
    as in :func:`gradient_flow`), ||dL/d(state_t)|| averaged over the examples in which
    step ``t`` is valid. A state batched over runs (vmapped seeds) gives ``(R, T)`` rows.
    ``rnnjax.plots.gradient_norms`` draws a row of the history as it is (strip ``prefix``).

    Example::

        loss = lambda p, x, n, y: losses.cross_entropy(model.apply(p, x, length=n), y)
        hook = diagnostics.model_gradient_flow_hook(loss, (xs[:32], lengths[:32], ys[:32]))
        training.fit(..., hooks=[hook])
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
        per_example = jax.vmap(lambda *example: gradient_flow_norms(loss, params, *example))
        return {
            prefix + label: mean_over_valid(norms) for label, norms in per_example(*batch).items()
        }

    run = _for_each_run(flow)
    return lambda state: run(state, get_params(state))


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


def gradient_flow_hook(
    cell: Cell,
    xs: Array,
    loss_fn: Callable[..., Array],
    *,
    length: Any = None,
    carry: Any = None,
    get_params: Callable[[Any], Any] = lambda state: state.params,
    get_loss_params: Callable[[Any], Any] | None = None,
) -> Callable[[Any], dict[str, Any]]:
    """Returns ``hook(state) -> dict``: gradient-flow metrics for a training loop to record.

    The hook evaluates :func:`state_gradient_norms` on a fixed probe batch with the
    current parameters (one jitted call) and returns

      ``"state_grad_norms"``: ``(T,)`` NumPy array, ||dL/dh_t|| averaged over the batch;
      ``"grad_ratio_first_last"``: float, the batch mean of ||dL/dh_1|| / ||dL/dh_T||
        (h_T being the last valid state of each sequence), the attenuation of the
        gradient across the whole sequence (< 1: vanishing, > 1: exploding).

    When ``state.step`` has shape ``(R,)`` (a state batched over R runs, as
    :func:`rnnjax.training.fit` runs vmapped seeds), both gain a leading ``(R,)`` axis.

    Args:
      cell: the :class:`rnnjax.Cell` whose state is probed.
      xs: ``(T, input_size)`` or a batch ``(B, T, input_size)``.
      loss_fn: ``loss_fn(final_carry, ys) -> scalar`` for one sequence, or
        ``loss_fn(final_carry, ys, loss_params)`` when ``get_loss_params`` is given (e.g.
        to apply a trained readout).
      length: ``()`` or ``(B,)`` valid lengths (default: all ``T``).
      carry: initial carry for one sequence (shared by the batch).
      get_params: maps the training state to the cell's parameters.
      get_loss_params: maps the training state to ``loss_fn``'s third argument.
    """
    _check_cell(cell)
    xs = jnp.asarray(xs)
    if xs.ndim not in (2, 3):
        raise ValueError(
            f"xs must have shape (T, input_size) or (B, T, input_size), got {xs.shape}"
        )
    batched = xs if xs.ndim == 3 else xs[None]
    num_steps = batched.shape[1]
    lengths = jnp.broadcast_to(
        jnp.asarray(num_steps if length is None else length, jnp.int32), batched.shape[:1]
    )

    def metrics(params, loss_params):
        def one(x, n):
            loss = (
                loss_fn if get_loss_params is None else (lambda c, ys: loss_fn(c, ys, loss_params))
            )
            return state_gradient_norms(cell, params, x, loss, carry=carry, length=n)

        norms = jax.vmap(one)(batched, lengths)  # (B, T)
        first = norms[:, 0]
        last = jnp.take_along_axis(norms, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
        ratio = jnp.where(last > 0, first / jnp.where(last > 0, last, 1.0), jnp.nan)
        return jnp.mean(norms, axis=0), jnp.mean(ratio)

    run = _for_each_run(metrics)

    def hook(state: Any) -> dict[str, Any]:
        loss_params = None if get_loss_params is None else get_loss_params(state)
        norms, ratio = run(state, get_params(state), loss_params)
        ratio = ratio if jnp.ndim(ratio) else float(ratio)
        return {"state_grad_norms": norms, "grad_ratio_first_last": ratio}

    return hook
