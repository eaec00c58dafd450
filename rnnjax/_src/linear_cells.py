"""Cells that are linear in their state: the LRU, minGRU and minLSTM.

Their step is ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``(a_t, b_t)`` read from the input alone,
so a whole trajectory is one associative scan of O(log T) depth
(``rnnjax.parallel_in_time``; Blelloch 1990, Martin & Cundy 2018). Like every cell they act on
ONE example and ONE step, and :func:`rnnjax.scan` runs them step by step: that is the
reference the parallel path is tested against.

One definition, as for the gated cells: the step is a :class:`LinearStep`, an object holding
the cell's ``coefficients`` and ``output``; ``cell.step`` calls them, and the parallel path
(``impl="parallel"``; ``"auto"`` runs the sequential loop, see :func:`rnnjax.scan`)
is derived from the same two functions. A step replaced
by any other function runs as written, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, initializers
from rnnjax._src.cells import Cell

__all__ = ["LinearStep", "lru", "mingru", "minlstm", "stabilised_update"]

Array = jax.Array
Params = dict[str, Array]


class LinearStep(NamedTuple):
    """The step of a cell linear in its state, built from its ``coefficients`` and ``output``.

    ``step(params, h, x) -> (h', y)`` computes

        (a, b) = coefficients(params, x)            (a, b) = exp(coefficients(...)) if log_space
        h' = a ⊙ h + b
        y = output(params, h', x)

    and the parallel path computes all ``h_t`` at once with an associative scan over the
    same ``(a_t, b_t)`` (in log space when ``log_space``: the coefficients are then
    ``(log a_t, log b_t)``, as in Feng et al. 2024). The parallel path recognises a cell by
    its step being a ``LinearStep`` (an object, not a name), so a step replaced by any other
    function runs as written.

    With ``stabilised`` (exponential gates, whose ``a`` and ``b`` overflow floating point:
    xLSTM, Beck et al. 2024) the state ``h = exp(m) h̃`` is carried as ``(h̃, m)``, its
    log scale ``m`` beside it, and ``coefficients`` returns ``(log a, log s, b)`` for the
    update ``h' = a h + s b``; the step is (see :func:`stabilised_update`)

        m' = max(log a + m, log s)
        h̃' = exp(log a + m - m') h̃ + exp(log s - m') b,       y = output(params, (h̃', m'), x)

    ``h̃`` and ``b`` may be pytrees (the mLSTM's ``(C, n)``); ``log a``, ``log s`` and ``m``
    index the leading axes of every leaf (one scale per head). The parallel path scans the
    same triples (``rnnjax._src.linear_scan.combine_stabilised``), and its ``m_t`` is the
    step's.

    Attributes:
      coefficients: ``coefficients(params, x) -> (a, b)``, each shaped like the state
        (or broadcastable to it); complex for a complex state. ``(log a, log s, b)`` when
        ``stabilised``.
      output: ``output(params, h, x) -> y``, the output read from the new state (the new
        carry ``(h̃, m)`` when ``stabilised``).
      log_space: whether ``coefficients`` returns ``(log a, log b)`` (then ``a, b > 0``).
      stabilised: whether the carry is ``(h̃, m)`` and ``coefficients`` returns
        ``(log a, log s, b)``, as above.
    """

    coefficients: Callable[[Params, Array], tuple[Any, ...]]
    output: Callable[[Params, Any, Array], Array]
    log_space: bool = False
    stabilised: bool = False

    def __call__(self, params: Params, h: Any, x: Array) -> tuple[Any, Array]:
        if self.stabilised:
            h = stabilised_update(h, *self.coefficients(params, x))
            return h, self.output(params, h, x)
        a, b = self.coefficients(params, x)
        if self.log_space:
            a, b = jnp.exp(a), jnp.exp(b)
        h = (a * h + b).astype(h.dtype)
        return h, self.output(params, h, x)


def scale_leading(w: Array, leaf: Array) -> Array:
    """Returns ``w ⊙ leaf`` with ``w`` indexing the leading axes of ``leaf`` (one scale per head)."""
    return w.reshape(w.shape + (1,) * (leaf.ndim - w.ndim)) * leaf


def stabilised_update(carry: tuple[Any, Array], log_a: Array, log_s: Array, b: Any):
    """Returns ``(h̃', m')``: ``h' = a h + s b`` on the state ``h = exp(m) h̃`` held as ``(h̃, m)``.

        m' = max(log a + m, log s)
        h̃' = exp(log a + m - m') h̃ + exp(log s - m') b

    (the stabiliser of Beck et al. 2024, section 2.2): both weights are at most 1, so
    nothing overflows, whatever ``a`` and ``s``. ``log_a, log_s, m``: the leading axes of
    every leaf of ``h̃`` and ``b`` (see :func:`scale_leading`).
    """
    h, m = carry
    m_new = jnp.maximum(log_a + m, log_s)
    w_h, w_b = jnp.exp(log_a + m - m_new), jnp.exp(log_s - m_new)
    h = jax.tree.map(
        lambda u, v: (scale_leading(w_h, u) + scale_leading(w_b, v)).astype(u.dtype), h, b
    )
    return h, m_new.astype(m.dtype)


def state(params: Params, h: Array, x: Array) -> Array:
    """Returns ``h``: the output of a cell whose output is its state (minGRU, minLSTM)."""
    return h


# ---------------------------------------------------------------------------------- LRU


def _lru_lambda(params: Params) -> Array:
    """Returns Λ = exp(-exp(ν) + i exp(θ)), the diagonal of the LRU's recurrence (N,)."""
    return jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))


def lru_coefficients(params: Params, x: Array) -> tuple[Array, Array]:
    """Returns ``(Λ, γ ⊙ (x B))`` of the LRU (Orvieto et al. 2023, eq. 7), each ``(N,)`` complex."""
    bx = x @ params["B_re"] + 1j * (x @ params["B_im"])
    return _lru_lambda(params), jnp.exp(params["gamma_log"]) * bx


def lru_output(params: Params, h: Array, x: Array) -> Array:
    """Returns ``y = Re(h C) + x D``, the LRU's real output ``(H,)``."""
    return h.real @ params["C_re"] - h.imag @ params["C_im"] + x @ params["D"]


def lru(
    hidden_size: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    *,
    state_size: int | None = None,
) -> Cell:
    """Returns a Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural
    Networks for Long Sequences"), one step of it.

        Λ = diag(exp(-exp(ν) + i exp(θ)))                          (eq. 6)
        h_t = Λ h_{t-1} + γ ⊙ (x_t B),     γ = sqrt(1 - |Λ|²)        (eq. 7, γ normalisation)
        y_t = Re(h_t C) + x_t D

    Initialisation as in the paper (section 3.2, and NicolasZucchet/minimal-LRU): ``|λ_j|`` is
    drawn uniformly on the ring ``r_min <= |λ| <= r_max`` (uniform in area),
    ``arg λ_j ~ U[0, max_phase]``, ``ν = log(-log |λ|)``, ``θ = log(arg λ)``,
    ``log γ = log sqrt(1 - |λ|²)`` (then trained freely), ``B ~ N(0, 1/(2 I))`` in its real and
    imaginary parts (Glorot for a complex matrix), ``C ~ N(0, 1/N)`` likewise.

    One difference from the paper: its LRU maps H features to H features and its skip
    ``D`` is diagonal; here input and output sizes may differ, so ``D`` is a dense
    ``(input_size, H)`` matrix, drawn from ``N(0, 1/input_size)`` (a diagonal ``D ~ N(0, 1)``
    has the same output variance).

    Args:
      hidden_size: H, the size of the output ``y``.
      r_min, r_max: the ring of initial eigenvalue moduli, ``0 <= r_min < r_max <= 1``
        (the paper uses 0.9 and 0.999 for long-range tasks).
      max_phase: the largest initial eigenvalue phase (2π: the whole circle; the paper
        uses π/10 on its longest tasks).
      state_size: N, the size of the complex state (default H).

    Params: ``nu_log, theta_log, gamma_log: (N,)``, ``B_re, B_im: (input_size, N)``,
    ``C_re, C_im: (N, H)``, ``D: (input_size, H)``; all real.
    Carry: ``h: (N,)`` complex (complex64 for float32 params). Output: ``y: (H,)`` real.
    """
    checks.positive_int("hidden_size", hidden_size)
    n = hidden_size if state_size is None else state_size
    checks.positive_int("state_size", n)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be > 0, got {max_phase}")

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        k_nu, k_theta, k_b, k_c, k_d = jax.random.split(key, 5)
        u = jax.random.uniform(k_nu, (n,))
        nu_log = jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * jax.random.uniform(k_theta, (n,)))
        modulus = jnp.exp(-jnp.exp(nu_log))
        b_re, b_im = jax.random.normal(k_b, (2, input_size, n)) / math.sqrt(2 * input_size)
        c_re, c_im = jax.random.normal(k_c, (2, n, hidden_size)) / math.sqrt(n)
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": jnp.log(jnp.sqrt(1.0 - modulus**2)),
            "B_re": b_re,
            "B_im": b_im,
            "C_re": c_re,
            "C_im": c_im,
            "D": jax.random.normal(k_d, (input_size, hidden_size)) / math.sqrt(input_size),
        }

    def initial_carry(params: Params) -> Array:
        return jnp.zeros((n,), jnp.result_type(params["nu_log"], jnp.complex64))

    step = LinearStep(lru_coefficients, lru_output)
    return Cell(init, initial_carry, step, hidden_size, "lru", _input_size)


# -------------------------------------------------------------------- minGRU and minLSTM


def log_g(x: Array) -> Array:
    """Returns log g(x), g(x) = x + 1/2 for x >= 0 and σ(x) otherwise (Feng et al. 2024).

    g keeps the candidate state positive, so that it has a logarithm.
    """
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _pre_activations(params: Params, x: Array, num_blocks: int) -> list[Array]:
    return jnp.split(x @ params["w_ih"] + params["b_ih"], num_blocks, axis=-1)


def mingru_coefficients(params: Params, x: Array) -> tuple[Array, Array]:
    """Returns ``(log(1 - z), log z + log g(h̃))`` of the minGRU (Feng et al. 2024, log space).

    z = σ(x W_z + b_z), h̃ = x W_h + b_h, and h' = (1 - z) ⊙ h + z ⊙ g(h̃).
    """
    k, pre_h = _pre_activations(params, x, 2)
    return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(pre_h)


def minlstm_coefficients(params: Params, x: Array) -> tuple[Array, Array]:
    """Returns ``(log f', log i' + log g(h̃))`` of the minLSTM (Feng et al. 2024, log space).

    f = σ(x W_f + b_f), i = σ(x W_i + b_i), f' = f / (f + i), i' = i / (f + i),
    h̃ = x W_h + b_h, and h' = f' ⊙ h + i' ⊙ g(h̃). With d = log(i / f),
    log f' = -softplus(d) and log i' = -softplus(-d).
    """
    k_f, k_i, pre_h = _pre_activations(params, x, 3)
    d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(pre_h)


def _input_size(params: Params) -> int:
    return params["w_ih" if "w_ih" in params else "B_re"].shape[0]


def linear_space(log_coefficients: Callable[[Params, Array], tuple[Array, Array]]):
    """Returns ``coefficients(params, x) -> (a, b)``: ``exp`` of ``log_coefficients``' ``(log a, log b)``.

    The same recurrence scanned in linear space: ``h -> a h + b`` with ``0 < a < 1`` and
    ``b > 0`` composes without overflow (products of ``a`` only shrink), so the log-space
    form is not needed for stability by an associative scan, and it is cheaper (no
    ``logaddexp``; measured in docs/benchmarks.md).
    """

    def coefficients(params: Params, x: Array) -> tuple[Array, Array]:
        log_a, log_b = log_coefficients(params, x)
        return jnp.exp(log_a), jnp.exp(log_b)

    return coefficients


def _min_cell(
    hidden_size, num_blocks, coefficients, kind, kernel_init, bias_init, log_space
) -> Cell:
    checks.positive_int("hidden_size", hidden_size)

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        k_w, k_b = jax.random.split(key)
        return {
            "w_ih": kernel_init(k_w, (input_size, num_blocks * hidden_size), jnp.float32),
            "b_ih": bias_init(k_b, (num_blocks * hidden_size,), jnp.float32),
        }

    def initial_carry(params: Params) -> Array:
        return jnp.zeros((hidden_size,), params["w_ih"].dtype)

    if log_space:
        step = LinearStep(coefficients, state, log_space=True)
    else:
        step = LinearStep(linear_space(coefficients), state)
    return Cell(init, initial_carry, step, hidden_size, kind, _input_size)


def mingru(
    hidden_size: int,
    *,
    kernel_init: Callable[..., Array] = initializers.lecun_normal(),
    bias_init: Callable[..., Array] = initializers.zeros,
    log_space: bool = True,
) -> Cell:
    """Returns a minGRU cell (Feng et al. 2024, "Were RNNs All We Needed?", log-space version).

        z_t = σ(x_t W_z + b_z),   h̃_t = g(x_t W_h + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    The gates read only ``x_t``, so the step is linear in ``h`` and the parallel path is a
    scan over ``(log(1 - z_t), log z_t + log h̃_t)`` (their log-space evaluation; a state of
    any sign is handled, see ``rnnjax._src.linear_scan.linear_recurrence``). The paper's
    ``nn.Linear`` layers start from PyTorch's uniform init; here from ``kernel_init`` and
    ``bias_init`` like the other cells.

    ``log_space=False`` scans the same coefficients exponentiated (:func:`linear_space`): equal
    values, no ``logaddexp`` in the scan (on a 2-core CPU, T = 10,000, B = 16, H = 8: 2.0x
    faster forward, 3.0x forward+backward than the log-space scan).

    Params: ``w_ih: (input_size, 2H)`` (blocks z, h), ``b_ih: (2H,)``.
    Carry: ``h: (H,)``. Output: ``h``.
    """
    return _min_cell(
        hidden_size, 2, mingru_coefficients, "mingru", kernel_init, bias_init, log_space
    )


def minlstm(
    hidden_size: int,
    *,
    kernel_init: Callable[..., Array] = initializers.lecun_normal(),
    bias_init: Callable[..., Array] = initializers.zeros,
    log_space: bool = True,
) -> Cell:
    """Returns a minLSTM cell (Feng et al. 2024, "Were RNNs All We Needed?", log-space version).

        f_t = σ(x_t W_f + b_f),   i_t = σ(x_t W_i + b_i),   h̃_t = g(x_t W_h + b_h)
        f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    ``log_space=False``: as for :func:`mingru`.

    Params: ``w_ih: (input_size, 3H)`` (blocks f, i, h), ``b_ih: (3H,)``.
    Carry: ``h: (H,)``. Output: ``h``.
    """
    return _min_cell(
        hidden_size, 3, minlstm_coefficients, "minlstm", kernel_init, bias_init, log_space
    )
