"""The selective state-space model of Mamba ("S6"), one step of it.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
Algorithm 2 and section 3.2, as computed by their reference scan (state-spaces/mamba,
``selective_scan_ref``). Each of the D channels carries an N-dimensional state; the step
size ``Δ_t`` and the matrices ``B_t, C_t`` are read from the input, so the model is
selective, and the step is still linear in the state: it is a :class:`rnnjax.LinearStep` with
a ``(D, N)`` state, and runs as one associative scan with ``impl="parallel"``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnnjax._src import checks
from rnnjax._src.cells import Cell
from rnnjax._src.linear_cells import LinearStep

__all__ = ["selective_ssm", "selective_ssm_coefficients", "selective_ssm_output"]

Array = jax.Array
Params = dict[str, Array]


def _projections(params: Params, x: Array) -> tuple[Array, Array, Array, Array]:
    """Returns ``(u, Δ, B, C)``: the input ``(D,)``, its step sizes ``(D,)``, ``B, C: (N,)``."""
    u = x @ params["W_in"]
    # softplus, not log(1 + exp(.)): a large pre-activation gives Δ = it, not inf
    delta = jax.nn.softplus(u @ params["W_delta_down"] @ params["W_delta"] + params["b_delta"])
    return u, delta, u @ params["W_B"], u @ params["W_C"]


def selective_ssm_coefficients(params: Params, x: Array) -> tuple[Array, Array]:
    """Returns ``(exp(Δ_t A), Δ_t B_t u_t)``, each ``(D, N)``, of the S6 step at input ``x``.

    ``x: (input_size,)``; see :func:`selective_ssm`. ``A = -exp(A_log) < 0`` and ``Δ_t > 0``,
    so every ``exp(Δ_t A)`` lies in ``(0, 1)``.
    """
    u, delta, b, _ = _projections(params, x)
    a = -jnp.exp(params["A_log"])
    return jnp.exp(delta[:, None] * a), delta[:, None] * b[None, :] * u[:, None]


def selective_ssm_output(params: Params, h: Array, x: Array) -> Array:
    """Returns ``y_t = h_t C_t + D ⊙ u_t`` (D,) from the state ``h: (D, N)`` and input ``x``."""
    u, _, _, c = _projections(params, x)
    return h @ c + params["D"] * u


def selective_ssm(
    hidden_size: int,
    state_size: int = 16,
    *,
    dt_rank: int | None = None,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    dt_init_floor: float = 1e-4,
) -> Cell:
    """Returns the selective SSM of Mamba (Gu & Dao 2023, "S6", Algorithm 2), one step of it.

        u_t = x_t W_in                                       (D,)
        Δ_t = softplus(u_t W_Δ↓ W_Δ + b_Δ)                   (D,)  step size per channel
        B_t = u_t W_B,   C_t = u_t W_C                       (N,)
        Ā_t = exp(Δ_t A),   A = -exp(A_log)                  (D, N) zero-order hold
        h_t = Ā_t ⊙ h_{t-1} + (Δ_t B_t) ⊙ u_t                (D, N)
        y_t = h_t C_t + D ⊙ u_t                              (D,)

    ``B̄ = Δ B`` is the discretisation of the reference scan (``selective_scan_ref``: ZOH for
    ``A``, Euler for ``B``; the paper's eq. 4 has ZOH for both, which this approximates to
    first order in ``Δ A``). ``W_in`` maps the cell's input to the SSM's D channels: in the
    Mamba block it is the input projection in front of the SSM (the block's causal Conv1D,
    SiLU and output gate ``y ⊙ SiLU(z)`` are the block's, not the recurrence's, and are left
    out). ``Δ`` is low-rank, ``W_Δ↓ W_Δ`` of rank ``dt_rank``, as in the reference code.

    Initialisation as in the reference code (``Mamba.__init__``): ``A = -(1, 2, ..., N)`` for
    every channel (S4D-Real), ``D = 1``; ``Δ = softplus(b_Δ)`` log-uniform in
    ``[dt_min, dt_max]`` (floored at ``dt_init_floor``), by the inverse softplus
    ``b_Δ = Δ + log(-expm1(-Δ))``; ``W_Δ ~ U(±dt_rank^-1/2)``; ``W_in, W_Δ↓, W_B, W_C ~
    U(±fan_in^-1/2)`` (PyTorch's ``nn.Linear``).

    Args:
      hidden_size: D, the number of channels (the output size).
      state_size: N, the state size of each channel (16 in the paper).
      dt_rank: the rank of the ``Δ`` projection (default ``ceil(D / 16)``, as Mamba's).
      dt_min, dt_max: the range of the initial ``Δ``, ``0 < dt_min <= dt_max``.
      dt_init_floor: the smallest initial ``Δ``.

    Params: ``W_in: (input_size, D)``, ``W_delta_down: (D, R)``, ``W_delta: (R, D)``,
    ``b_delta: (D,)``, ``W_B, W_C: (D, N)``, ``A_log: (D, N)``, ``D: (D,)``.
    Carry: ``h: (D, N)``. Output: ``y: (D,)``.
    """
    checks.positive_int("hidden_size", hidden_size)
    checks.positive_int("state_size", state_size)
    d, n = hidden_size, state_size
    rank = math.ceil(d / 16) if dt_rank is None else dt_rank
    checks.positive_int("dt_rank", rank)
    if not 0.0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if not dt_init_floor > 0:
        raise ValueError(f"dt_init_floor must be > 0, got {dt_init_floor}")

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        k_in, k_down, k_dt, k_bias, k_b, k_c = jax.random.split(key, 6)

        def linear(k: Array, fan_in: int, fan_out: int, bound: float | None = None) -> Array:
            bound = 1.0 / math.sqrt(fan_in) if bound is None else bound
            return jax.random.uniform(k, (fan_in, fan_out), minval=-bound, maxval=bound)

        log_dt = jax.random.uniform(k_bias, (d,), minval=math.log(dt_min), maxval=math.log(dt_max))
        dt = jnp.maximum(jnp.exp(log_dt), dt_init_floor)
        return {
            "W_in": linear(k_in, input_size, d),
            "W_delta_down": linear(k_down, d, rank),
            "W_delta": linear(k_dt, rank, d, rank**-0.5),
            "b_delta": dt + jnp.log(-jnp.expm1(-dt)),  # softplus⁻¹(dt)
            "W_B": linear(k_b, d, n),
            "W_C": linear(k_c, d, n),
            "A_log": jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32), (d, n))),
            "D": jnp.ones((d,)),
        }

    def initial_carry(params: Params) -> Array:
        return jnp.zeros((d, n), params["W_in"].dtype)

    step = LinearStep(selective_ssm_coefficients, selective_ssm_output)
    return Cell(init, initial_carry, step, hidden_size, "selective_ssm", _input_size)


def _input_size(params: Params) -> int:
    return params["W_in"].shape[0]
