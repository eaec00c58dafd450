"""The cells of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"): sLSTM and mLSTM.

Both have an exponential input gate ``i = exp(ĩ)`` with a normaliser state ``n`` that sums
the gates, and carry a stabiliser ``m``, a running log scale that keeps every ``exp`` at an
argument <= 0 without changing the output:

* **sLSTM** (scalar memory, section 2.2): an LSTM whose gates read ``h_{t-1}`` through
  recurrent weights that are block-diagonal by head. With one head it is of the gated form
  (:class:`rnnjax.GatedStep`) and gets the fast path; with several, its step runs as
  written (``rnnjax.scan_path`` says which).
* **mLSTM** (matrix memory, section 2.3): ``C_t = f_t C_{t-1} + i_t v_t k_t^T``, gates read
  ``x_t`` alone, so the cell is linear in its state: its step is a stabilised
  :class:`rnnjax.LinearStep` and ``impl="parallel"`` runs it as one associative scan.

Gate order, initialisation and the stabiliser follow the reference code (NX-AI/xlstm:
``blocks/slstm/src/vanilla/slstm.py``, ``blocks/mlstm/backends.py``
``recurrent_step_stabilized_simple``; forget gates are sigmoids, in log space). The cells are
the paper's cells alone: the blocks around them (up-projection, causal convolution, group
norm, gated MLP) are a model's business. Like every cell they act on ONE example and ONE
step; batch with ``jax.vmap``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import checks, initializers
from rnnjax._src.cells import Cell, GatedStep, first
from rnnjax._src.linear_cells import LinearStep

__all__ = [
    "mlstm",
    "mlstm_coefficients",
    "mlstm_output",
    "powerlaw_forget_bias",
    "slstm",
    "slstm_update",
    "small_init",
]

Array = jax.Array
Params = dict[str, Array]
Initializer = Any


def small_init(input_size: int) -> Initializer:
    """Returns ``N(0, 2 / (5 input_size))``, the input-weight init of xLSTM (Nguyen & Salazar 2019)."""
    return initializers.normal(math.sqrt(2.0 / (5.0 * input_size)))


def powerlaw_forget_bias(head_size: int) -> Array:
    """Returns ``(head_size,)``: the sLSTM forget-gate bias of one head, ``5 - 12 u^0.3``.

    ``u = j / (head_size - 1)`` for unit ``j``: biases from 5 (remembers for about e^5
    steps) down to -7 (forgets at once), the reference code's default
    ("powerlaw_blockdependent", for the first block of a stack).
    """
    u = jnp.arange(head_size, dtype=jnp.float32) / max(head_size - 1, 1)
    return 5.0 - 12.0 * u**0.3


def _heads(hidden_size: int, num_heads: int) -> int:
    checks.positive_int("hidden_size", hidden_size)
    checks.positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be a multiple of num_heads={num_heads}, got {hidden_size}"
        )
    return hidden_size // num_heads


# ---------------------------------------------------------------------------------- sLSTM


def slstm_update(carry: tuple[Array, Array, Array, Array], z: Array):
    """Returns ``(h', c', n', m')`` of the sLSTM from ``z = x W + h R + b``, gate blocks i, f, z, o.

        m' = max(log f + m, ĩ)                               (the stabiliser)
        i' = exp(ĩ - m'),   f' = exp(log f + m - m')
        c' = f' c + i' tanh(z̃),   n' = f' n + i'
        h' = σ(õ) c' / n'

    with ``log f = log σ(f̃)``. While ``n = 0`` (the zero initial state: nothing stored)
    ``m' = ĩ`` and the past has weight 0, as in the reference code, so that ``n' = 1``.
    Acts on the last axis (also batched arrays).
    """
    h, c, n, m = carry
    i_pre, f_pre, z_pre, o_pre = jnp.split(z, 4, axis=-1)
    log_f = jax.nn.log_sigmoid(f_pre)
    empty = n == 0
    m_new = jnp.where(empty, i_pre, jnp.maximum(log_f + m, i_pre))
    # -inf, not a where after exp: exp of the unused branch may overflow and NaN its gradient
    f = jnp.exp(jnp.where(empty, -jnp.inf, log_f + m - m_new))
    i = jnp.exp(i_pre - m_new)
    c = f * c.astype(z.dtype) + i * jnp.tanh(z_pre)
    n = f * n.astype(z.dtype) + i
    h = jax.nn.sigmoid(o_pre) * c / n
    return h, c, n, m_new


def _slstm_carry(h: Array) -> tuple[Array, Array, Array, Array]:
    return h, h, h, h


def _headwise_step(num_heads: int, head_size: int, dtype: Any):
    def step(params: Params, carry, x: Array):
        # R is block-diagonal by head: each head's h reads its own (d, 4d) block,
        # whose gate columns go to that head's units of the i, f, z, o blocks.
        compute = dtype if dtype is not None else jnp.result_type(x, params["w_ih"])
        h = carry[0].astype(compute).reshape(num_heads, head_size)
        r = params["w_hh"].astype(compute).reshape(num_heads, head_size, 4, head_size)
        gh = jnp.einsum("kd,kdge->gke", h, r).reshape(-1)
        z = x.astype(compute) @ params["w_ih"].astype(compute) + params["b_ih"].astype(compute)
        new = slstm_update(carry, z + gh)
        return new, new[0]

    return step


def slstm(
    hidden_size: int,
    *,
    num_heads: int = 1,
    forget_bias: str = "powerlaw",
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Returns an sLSTM cell (Beck et al. 2024, section 2.2), one step of it.

        ĩ, f̃, z̃, õ = x_t W + h_{t-1} R + b
        i = exp(ĩ),   f = σ(f̃),   z = tanh(z̃),   o = σ(õ)
        c_t = f c_{t-1} + i z,   n_t = f n_{t-1} + i,   h_t = o c_t / n_t

    computed with the stabiliser ``m`` (:func:`slstm_update`), so that an input gate
    ``exp(ĩ)`` beyond float range is exact. ``W, R, b`` are stored as ``w_ih, w_hh, b_ih``
    (the gated form's names), gate blocks in the order i, f, z, o.

    Initialisation as in the reference code: ``W ~ N(0, 2/(5 I))`` (:func:`small_init`),
    ``R = 0``, biases 0 except the forget gate's, per head :func:`powerlaw_forget_bias`
    (``forget_bias="powerlaw"``, the default) or ``linspace(3, 6)`` (``"linspace"``, their
    "small_init"). Carry ``(h, c, n, m)`` starts at zeros.

    Args:
      hidden_size: H, the size of h (and of c, n, m).
      num_heads: the number of diagonal blocks of R (the paper uses 4). With one head R is
        dense and the cell is a :class:`rnnjax.GatedStep` (fast path); with more, its
        step computes ``h R`` head by head and runs as written.
      forget_bias: ``"powerlaw"`` or ``"linspace"``, see above.
      kernel_init: the init of W (default :func:`small_init` of the input size).
      recurrent_init: the init of each head's R block (default zeros).
      dtype: computation dtype (default: that of the inputs and parameters).
      param_dtype: dtype of the initialised parameters.

    Params: ``w_ih: (input_size, 4H)``, ``b_ih: (4H,)``, and ``w_hh: (H, 4H)`` with one
    head or ``(num_heads, d, 4d)`` with ``d = H / num_heads`` heads (gate blocks of ``d``).
    Carry: ``(h, c, n, m)``, each ``(H,)``. Output: ``h``.
    """
    d = _heads(hidden_size, num_heads)
    if forget_bias not in ("powerlaw", "linspace"):
        raise ValueError(f"forget_bias must be 'powerlaw' or 'linspace', got {forget_bias!r}")

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        k_w, k_r = jax.random.split(key)
        w_init = small_init(input_size) if kernel_init is None else kernel_init
        w_ih = w_init(k_w, (input_size, 4 * hidden_size), jnp.float32)
        r_keys = jax.random.split(k_r, num_heads)
        r = jnp.stack([recurrent_init(k, (d, 4 * d), jnp.float32) for k in r_keys])
        f_head = powerlaw_forget_bias(d) if forget_bias == "powerlaw" else jnp.linspace(3, 6, d)
        b = jnp.zeros((4, num_heads, d)).at[1].set(f_head).reshape(-1)
        w_hh = r[0] if num_heads == 1 else r
        return {
            "w_ih": w_ih.astype(param_dtype),
            "w_hh": w_hh.astype(param_dtype),
            "b_ih": b.astype(param_dtype),
        }

    def initial_carry(params: Params):
        return _slstm_carry(jnp.zeros((hidden_size,), dtype or params["w_ih"].dtype))

    if num_heads == 1:
        step = GatedStep(slstm_update, additive=True, hidden=first, dtype=dtype)
    else:
        step = _headwise_step(num_heads, d, dtype)
    kind = ("slstm", num_heads, dtype)
    return Cell(init, initial_carry, step, hidden_size, kind, _input_size, ("h", "c", "n", "m"))


def _input_size(params: Params) -> int:
    return params["w_ih" if "w_ih" in params else "W_q"].shape[0]


# ---------------------------------------------------------------------------------- mLSTM


def _mlstm_sizes(params: Params) -> tuple[int, int]:
    num_heads = params["w_i"].shape[-1]
    return num_heads, params["W_q"].shape[-1] // num_heads


def mlstm_coefficients(params: Params, x: Array):
    """Returns ``(log f, ĩ, (v k^T, k))``, the mLSTM's update of ``(C, n)`` for one step.

        C_t = f_t C_{t-1} + i_t v_t k_t^T,   n_t = f_t n_{t-1} + i_t k_t
        k_t = W_k x_t / sqrt(d) + b_k,   v_t = W_v x_t + b_v
        ĩ_t = w_i x_t + b_i,   f_t = σ(w_f x_t + b_f)

    per head: ``log f, ĩ: (heads,)``, ``v k^T: (heads, d, d)``, ``k: (heads, d)`` (the
    ``(log a, log s, b)`` of a stabilised :class:`rnnjax.LinearStep`, with ``s = i = exp(ĩ)``).
    """
    num_heads, d = _mlstm_sizes(params)
    k = (x @ params["W_k"] / math.sqrt(d) + params["b_k"]).reshape(num_heads, d)
    v = (x @ params["W_v"] + params["b_v"]).reshape(num_heads, d)
    log_f = jax.nn.log_sigmoid(x @ params["w_f"] + params["b_f"])
    i_pre = x @ params["w_i"] + params["b_i"]
    return log_f, i_pre, (v[:, :, None] * k[:, None, :], k)


def mlstm_output(params: Params, carry, x: Array) -> Array:
    """Returns ``h_t = o_t ⊙ C_t q_t / max(|n_t^T q_t|, 1)``, ``(H,)``.

    From the stabilised carry ``((C̃, ñ), m)`` with ``C = exp(m) C̃``: the ratio is
    ``C̃ q / max(|ñ^T q|, exp(-m))``, the same number. ``q_t = W_q x_t + b_q``,
    ``o_t = σ(W_o x_t + b_o)``.
    """
    (c, n), m = carry
    num_heads, d = _mlstm_sizes(params)
    q = (x @ params["W_q"] + params["b_q"]).reshape(num_heads, d)
    numerator = jnp.einsum("kij,kj->ki", c, q)
    denominator = jnp.maximum(jnp.abs(jnp.einsum("kj,kj->k", n, q)), jnp.exp(-m))
    o = jax.nn.sigmoid(x @ params["W_o"] + params["b_o"])
    return o * (numerator / denominator[:, None]).reshape(-1)


def mlstm(hidden_size: int, *, num_heads: int = 1, kernel_init: Initializer | None = None) -> Cell:
    """Returns an mLSTM cell (Beck et al. 2024, section 2.3), one step of it.

        C_t = f_t C_{t-1} + i_t v_t k_t^T,    n_t = f_t n_{t-1} + i_t k_t
        h_t = o_t ⊙ C_t q_t / max(|n_t^T q_t|, 1)
        i_t = exp(w_i x_t + b_i),   f_t = σ(w_f x_t + b_f),   o_t = σ(W_o x_t + b_o)

    with ``q, k, v`` linear in ``x_t`` (``k`` scaled by ``1/sqrt(d)``), one ``C, n`` and
    scalar gates per head (:func:`mlstm_coefficients`, :func:`mlstm_output`). The gates read
    ``x_t`` only, so the cell is linear in ``(C, n)``: its step is a stabilised
    :class:`rnnjax.LinearStep` (carry ``((C̃, ñ), m)`` with ``C = exp(m) C̃``) and
    ``impl="parallel"`` computes every step at once by one associative scan.

    Initialisation as in the reference code (``mLSTMCell.reset_parameters`` and the layer's
    projections): ``W_q, W_k, W_v, W_o ~ N(0, 2/(5 I))`` (:func:`small_init`), their biases
    0; ``w_i = w_f = 0``; ``b_i ~ N(0, 0.1²)``; ``b_f = linspace(3, 6)`` over the heads.

    Args:
      hidden_size: H, the size of the output ``h`` (``num_heads`` heads of ``d = H /
        num_heads``).
      num_heads: the number of heads (the paper's blocks use 4).
      kernel_init: the init of ``W_q, W_k, W_v, W_o`` (default :func:`small_init`).

    Params: ``W_q, W_k, W_v, W_o: (input_size, H)``, ``b_q, b_k, b_v, b_o: (H,)``,
    ``w_i, w_f: (input_size, heads)``, ``b_i, b_f: (heads,)``.
    Carry: ``((C: (heads, d, d), n: (heads, d)), m: (heads,))``, zeros. Output: ``(H,)``.
    """
    d = _heads(hidden_size, num_heads)

    def init(key: Array, input_size: int) -> Params:
        checks.positive_int("input_size", input_size)
        w_init = small_init(input_size) if kernel_init is None else kernel_init
        k_q, k_k, k_v, k_o, k_i = jax.random.split(key, 5)
        zeros = jnp.zeros((hidden_size,))
        return {
            "W_q": w_init(k_q, (input_size, hidden_size), jnp.float32),
            "b_q": zeros,
            "W_k": w_init(k_k, (input_size, hidden_size), jnp.float32),
            "b_k": zeros,
            "W_v": w_init(k_v, (input_size, hidden_size), jnp.float32),
            "b_v": zeros,
            "w_i": jnp.zeros((input_size, num_heads)),
            "b_i": 0.1 * jax.random.normal(k_i, (num_heads,)),
            "w_f": jnp.zeros((input_size, num_heads)),
            "b_f": jnp.linspace(3.0, 6.0, num_heads),
            "W_o": w_init(k_o, (input_size, hidden_size), jnp.float32),
            "b_o": zeros,
        }

    def initial_carry(params: Params):
        dtype = params["W_q"].dtype
        memory = (jnp.zeros((num_heads, d, d), dtype), jnp.zeros((num_heads, d), dtype))
        return memory, jnp.zeros((num_heads,), dtype)

    step = LinearStep(mlstm_coefficients, mlstm_output, stabilised=True)
    kind = ("mlstm", num_heads)
    return Cell(init, initial_carry, step, hidden_size, kind, _input_size, ("C", "n", "m"))
