"""The Real-Gated Linear Recurrent Unit (RG-LRU) of Griffin and Hawk, one step of it.

De et al. 2024, "Griffin: Mixing Gated Linear Recurrences with Local Attention for
Efficient Language Models", section 2.4. A diagonal recurrence whose decay is gated by the
input; the step is linear in the state, so it is a :class:`rnnjax.LinearStep` and runs as
one associative scan with ``impl="parallel"`` (:mod:`rnnjax.parallel_in_time`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnnjax._src import checks, initializers
from rnnjax._src.cells import Cell
from rnnjax._src.linear_cells import LinearStep, state

__all__ = ["rg_lru", "rg_lru_coefficients", "sqrt_bounded_derivative"]

Array = jax.Array
Params = dict[str, Array]

# The reference code (google-deepmind/recurrentgemma, `SqrtBoundDerivative`) bounds the
# derivative of sqrt(1 - a_t²) at 1000: it is infinite where a_t -> 1 (a closed recurrence
# gate r_t -> 0), and a NaN there would poison every gradient of the batch.
_MAX_SQRT_GRADIENT = 1000.0


def sqrt_bounded_derivative(x: Array) -> Array:
    """Returns ``sqrt(x)``, whose derivative ``1 / (2 sqrt(x))`` is bounded at 1000.

    As ``SqrtBoundDerivative`` in the RG-LRU's reference code (google-deepmind/recurrentgemma):
    the derivative is exact for ``x >= 1/(4 · 1000²) = 2.5e-7`` and 1000 below.
    """
    return _sqrt_bounded(x)


@jax.custom_jvp
def _sqrt_bounded(x: Array) -> Array:
    return jnp.sqrt(x)


@_sqrt_bounded.defjvp
def _sqrt_bounded_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.sqrt(x), t / jnp.sqrt(jnp.maximum(4.0 * x, 1.0 / _MAX_SQRT_GRADIENT**2))


def _rg_lru_log_a(params: Params, u: Array, c: float) -> Array:
    """Returns ``log a_t = c r_t log σ(Λ)`` (D,), in log space as the paper computes it."""
    r = jax.nn.sigmoid(u @ params["W_a"] + params["b_a"])
    # log σ(Λ) = -softplus(-Λ) keeps a = σ(Λ) near 1 distinct from 1 (float32 rounds
    # σ(17) to 1, which would close the input normalisation sqrt(1 - a_t²) to 0).
    return -c * r * jax.nn.softplus(-params["Lambda"])


def rg_lru_coefficients(params: Params, x: Array, c: float = 8.0) -> tuple[Array, Array]:
    """Returns ``(a_t, sqrt(1 - a_t²) ⊙ (i_t ⊙ u_t))``, each ``(D,)``, of the RG-LRU at input ``x``.

    ``x: (input_size,)``; ``u_t = x W_in`` and the gates as in :func:`rg_lru`. ``a_t`` is
    computed in log space and ``1 - a_t² = -expm1(2 log a_t)`` without cancellation.
    """
    u = x @ params["W_in"]
    log_a = _rg_lru_log_a(params, u, c)
    i = jax.nn.sigmoid(u @ params["W_x"] + params["b_x"])
    return jnp.exp(log_a), sqrt_bounded_derivative(-jnp.expm1(2.0 * log_a)) * (i * u)


def rg_lru(
    hidden_size: int,
    *,
    c: float = 8.0,
    a_min: float = 0.9,
    a_max: float = 0.999,
    kernel_init: Callable[..., Array] = initializers.lecun_normal(),
) -> Cell:
    """Returns an RG-LRU cell (De et al. 2024, "Griffin", section 2.4), one step of it.

        u_t = x_t W_in
        r_t = σ(u_t W_a + b_a)                     recurrence gate
        i_t = σ(u_t W_x + b_x)                     input gate
        a_t = a^(c r_t),   a = σ(Λ)                (computed as log a_t = -c r_t softplus(-Λ))
        h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ u_t)
        y_t = h_t

    ``W_in`` maps the cell's input to the RG-LRU's width D: in Griffin's recurrent block it is
    the linear layer in front of the RG-LRU (the block's temporal Conv1D, its GeLU branch and
    its output layer are the block's, not the recurrence's, and are left out). The derivative
    of ``sqrt(1 - a_t²)`` is bounded as in the reference code (:func:`sqrt_bounded_derivative`).

    Initialisation as in the reference code (google-deepmind/recurrentgemma, ``rnn_param_init``):
    ``a = σ(Λ)`` uniform on the ring ``a_min <= a <= a_max`` (``a²`` uniform), so the decay at
    an open gate, ``a^c``, lies in ``[0.9^8, 0.999^8] = [0.43, 0.992]``; ``W_a, W_x ~
    N(0, 1/D)`` and zero biases (its gate layers are block-diagonal, one block per head; here
    one dense block); ``W_in`` from ``kernel_init``.

    Args:
      hidden_size: D, the width of the state and of the output.
      c: the constant exponent c (8 in the paper).
      a_min, a_max: the ring of initial ``a = σ(Λ)``, ``0 < a_min < a_max < 1``.
      kernel_init: ``init(key, shape, dtype)`` of ``W_in``.

    Params: ``W_in: (input_size, D)``, ``W_a, W_x: (D, D)``, ``b_a, b_x, Lambda: (D,)``.
    Carry: ``h: (D,)``. Output: ``h``.
    """
    checks.positive_int("hidden_size", hidden_size)
    if not 0.0 < a_min < a_max < 1.0:
        raise ValueError(f"need 0 < a_min < a_max < 1, got a_min={a_min}, a_max={a_max}")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    d = hidden_size

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        k_in, k_a, k_x, k_lambda = jax.random.split(key, 4)
        a = jnp.sqrt(jax.random.uniform(k_lambda, (d,), minval=a_min**2, maxval=a_max**2))
        return {
            "W_in": kernel_init(k_in, (input_size, d), jnp.float32),
            "W_a": jax.random.normal(k_a, (d, d)) / math.sqrt(d),
            "b_a": jnp.zeros((d,)),
            "W_x": jax.random.normal(k_x, (d, d)) / math.sqrt(d),
            "b_x": jnp.zeros((d,)),
            "Lambda": jnp.log(a) - jnp.log1p(-a),  # σ⁻¹(a)
        }

    def initial_carry(params: Params) -> Array:
        return jnp.zeros((d,), params["W_in"].dtype)

    step = LinearStep(_coefficients_with(float(c)), state)
    return Cell(init, initial_carry, step, hidden_size, ("rg_lru", c), _input_size)


@functools.cache
def _coefficients_with(c: float) -> Callable[[Params, Array], tuple[Array, Array]]:
    """Returns ``coefficients(params, x)`` for the constant ``c``: one function object per
    ``c``, so that two cells built the same way have equal steps (a bidirectional layer then
    runs both directions as one vmapped scan)."""
    if c == 8.0:
        return rg_lru_coefficients
    return lambda params, x: rg_lru_coefficients(params, x, c)


def _input_size(params: Params) -> int:
    return params["W_in"].shape[0]
