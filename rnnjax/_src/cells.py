"""Recurrent cells as records of pure functions: Elman RNN, LSTM and GRU.

A cell is to one time step what ``optax.GradientTransformation`` is to one optimiser
update: a ``NamedTuple`` of pure functions whose parameters and carry are plain pytrees.
It acts on ONE example and ONE time step; the time loop is :func:`rnnjax.scan` and
batching is the caller's ``jax.vmap``.

Equations, gate order and bias convention follow PyTorch/cuDNN (``torch.nn.RNN``,
``LSTM``, ``GRU``), with both an input bias ``b_ih`` and a hidden bias ``b_hh``, so that
weights convert exactly. Weights are stored for ``x @ W`` (the JAX/Flax layout):
``w_ih: (input_size, G * hidden_size)`` and ``w_hh: (hidden_size, G * hidden_size)``,
where the G gate blocks are concatenated along the last axis in PyTorch's order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, initializers

__all__ = ["Cell", "GatedStep", "elman", "gated", "gru", "irnn", "lstm"]

Array = jax.Array
Params = dict[str, Array]
Carry = Any
Initializer = Callable[..., Array]


class Cell(NamedTuple):
    """One recurrent step as pure functions over plain pytrees.

    Attributes:
      init: ``init(key, input_size) -> params``, a dict of arrays.
      initial_carry: ``initial_carry(params) -> carry``, zeros for one example.
      step: ``step(params, carry, x) -> (carry, y)`` with ``x: (input_size,)`` and
        ``y: (hidden_size,)``, one example and one time step. This is THE definition of the
        cell: every layer, model and diagnostic computes this function. When ``step`` is a
        :class:`GatedStep` (the built-in cells and any cell made with :func:`gated`), layers
        run a faster loop derived from it (``rnnjax.fused``); any other step, including an
        edited copy of a built-in one, runs as written in ``lax.scan``.
      hidden_size: size of the output ``y``.
      kind: a hashable label naming the cell (e.g. ``("lstm", None)``), for messages and
        plots. It never chooses a computation: an edited cell keeps its label.
      input_size: ``input_size(params) -> int`` used to check inputs early, or ``None``
        when the cell cannot tell.
      carry_names: names of the carry's leaves in order (``("h", "c")`` for LSTM), which
        :func:`rnnjax.diagnostics.gradient_flow` appends to its labels; ``None`` names
        them by their path in the carry. A label, like ``kind``: it computes nothing.
    """

    init: Callable[[Array, int], Params]
    initial_carry: Callable[[Params], Carry]
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    hidden_size: int
    kind: Any
    input_size: Callable[[Params], int] | None = None
    carry_names: tuple[str, ...] | None = None


def _gate_params(
    key: Array,
    input_size: int,
    hidden_size: int,
    num_gates: int,
    *,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    use_bias: bool,
    param_dtype: Any,
) -> Params:
    """Returns ``{"w_ih", "w_hh"[, "b_ih", "b_hh"]}`` with one block per gate.

    Each gate's recurrent block is initialised on its own, so an orthogonal
    ``recurrent_init`` gives an orthogonal (hidden, hidden) matrix per gate, as in Flax.
    Initialisers run in float32 and the result is cast to ``param_dtype`` (LAPACK, which
    the orthogonal initialiser needs, has no bfloat16).
    """
    checks.positive_int("input_size", input_size)
    k_ih, k_hh, k_bih, k_bhh = jax.random.split(key, 4)
    h = hidden_size
    w_ih = _gate_blocks(kernel_init, k_ih, (input_size, h), num_gates).astype(param_dtype)
    w_hh = _gate_blocks(recurrent_init, k_hh, (h, h), num_gates).astype(param_dtype)
    params = {"w_ih": w_ih, "w_hh": w_hh}
    if use_bias:
        params["b_ih"] = bias_init(k_bih, (num_gates * h,), jnp.float32).astype(param_dtype)
        params["b_hh"] = bias_init(k_bhh, (num_gates * h,), jnp.float32).astype(param_dtype)
    return params


def _gate_blocks(init: Initializer, key: Array, shape: tuple[int, int], num_gates: int) -> Array:
    """Returns ``(rows, num_gates * cols)``: ``num_gates`` draws of ``init``, one key each, side by side.

    One vmapped draw per weight matrix. The default orthogonal initialiser computes its QR
    without LAPACK (:mod:`rnnjax.householder`): batched LAPACK kernels running at once can
    deadlock XLA:CPU on JAX >= 0.10 (docs "Known issues").
    """
    keys = jax.random.split(key, num_gates)
    try:
        blocks = jax.vmap(lambda k: init(k, shape, jnp.float32))(keys)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        # a user's initialiser written with NumPy cannot be traced: draw gate by gate
        blocks = jnp.stack([jnp.asarray(init(k, shape, jnp.float32)) for k in keys])
    return jnp.moveaxis(blocks, 0, 1).reshape(shape[0], num_gates * shape[1])


def _compute_dtype(params: Params, x: Array, dtype: Any) -> Any:
    return dtype if dtype is not None else jnp.result_type(x, params["w_ih"])


def _linear(v: Array, w: Array, b: Array | None, dtype: Any) -> Array:
    """Returns v @ w + b in ``dtype`` (b may be None)."""
    out = v.astype(dtype) @ w.astype(dtype)
    return out if b is None else out + b.astype(dtype)


def _input_size(params: Params) -> int:
    return params["w_ih"].shape[0]


def whole(carry: Any) -> Any:
    """Returns ``carry``: the hidden state of a cell whose carry is ``h`` alone."""
    return carry


def first(carry: Any) -> Any:
    """Returns ``carry[0]``: the hidden state of a cell whose carry is ``(h, c)``."""
    return carry[0]


class GatedStep(NamedTuple):
    """The step of a gated cell, built from its element-wise ``update``.

    ``step(params, carry, x) -> (carry', y)`` computes, with ``h = hidden(carry)``,

        gi = x W_ih + b_ih,    gh = h W_hh + b_hh
        carry' = update(carry, gi + gh)     if ``additive`` (Elman, LSTM)
        carry' = update(carry, gi, gh)      otherwise (GRU: its reset gate scales gh alone)
        y = hidden(carry')

    ``update`` is the cell's equation, written once: this step and the fast path
    (``rnnjax.fused``) both call it, so an edited ``update`` moves both. ``update`` acts on
    the last axis, so it also takes batched arrays. The fast path recognises a cell by its
    step being a ``GatedStep`` (an object, not a name), so a step replaced by any other
    function runs as written.

    Attributes:
      update: the element-wise update, see above.
      additive: whether ``update`` reads only ``gi + gh`` (its signature is then
        ``update(carry, z)``), which lets the fast path fold the two biases into one.
      hidden: ``hidden(carry) -> h``, the part of the carry that multiplies ``W_hh`` and is
        the output (:func:`whole` or :func:`first`).
      dtype: computation dtype (None: that of the inputs and parameters).
    """

    update: Callable[..., Carry]
    additive: bool = False
    hidden: Callable[[Carry], Array] = whole
    dtype: Any = None

    def __call__(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        dtype = _compute_dtype(params, x, self.dtype)
        gi = _linear(x, params["w_ih"], params.get("b_ih"), dtype)
        gh = _linear(self.hidden(carry), params["w_hh"], params.get("b_hh"), dtype)
        new = self.update(carry, gi + gh) if self.additive else self.update(carry, gi, gh)
        return new, self.hidden(new)


# The element-wise equations of the built-in cells. Each is the one definition of its cell;
# the fast path's hand-written derivatives (rnnjax.fused) are tested against autodiff of these.


def lstm_update(carry: tuple[Array, Array], z: Array) -> tuple[Array, Array]:
    """Returns ``(h', c')`` from ``z = x W_ih + b_ih + h W_hh + b_hh``, gate blocks i, f, g, o."""
    h, c = carry
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c.astype(f.dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def gru_update(h: Array, gi: Array, gh: Array) -> Array:
    """Returns ``h'`` of the PyTorch/cuDNN GRU: the reset gate scales ``h W_hn + b_hn``."""
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h.astype(n.dtype)


def _elman_tanh(h: Array, z: Array) -> Array:
    return jnp.tanh(z)


def _elman_relu(h: Array, z: Array) -> Array:
    return jax.nn.relu(z)


def _elman_identity(h: Array, z: Array) -> Array:
    return z


# h' = act(z): one function object per activation, so that two Elman cells with the same
# activation have equal steps (and a bidirectional layer can stack them).
ELMAN_UPDATES: dict[str, Callable[[Array, Array], Array]] = {
    "tanh": _elman_tanh,
    "relu": _elman_relu,
    "identity": _elman_identity,  # a linear RNN; the exact case for gradient-flow tests
}


def gated(
    hidden_size: int,
    num_gates: int,
    update: Callable[..., Carry],
    *,
    additive: bool = False,
    hidden: Callable[[Carry], Array] = whole,
    make_carry: Callable[[Array], Carry] = whole,
    use_bias: bool = True,
    kernel_init: Initializer = initializers.lecun_normal(),
    recurrent_init: Initializer = initializers.orthogonal(),
    bias_init: Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    kind: Any = "gated",
) -> Cell:
    """Returns a cell of the gated form: two matmuls, then the element-wise ``update``.

    The form of Elman, LSTM and GRU cells (see :class:`GatedStep`): your own cell of this
    form gets the fast path of the built-in ones (one weight GEMM per direction after the
    loop, a backward loop carrying only the state gradient), with JAX's derivative of your
    ``update``. A minimal gated unit, say::

        def mgu(h, gi, gh):                      # Zhou et al. 2016
            f = jax.nn.sigmoid(gi[..., :H] + gh[..., :H])
            n = jnp.tanh(gi[..., H:] + f * gh[..., H:])
            return (1 - f) * h + f * n
        cell = rnnjax.gated(H, 2, mgu)

    Args:
      hidden_size: size of h.
      num_gates: G, the number of ``(H,)`` blocks in ``gi`` and ``gh``.
      update: ``update(carry, gi, gh) -> carry'`` (or ``update(carry, gi + gh)`` when
        ``additive``); ``gi, gh: (G * H,)``.
      additive: ``update`` reads only ``gi + gh``.
      hidden: ``hidden(carry) -> h`` (default: the carry is h).
      make_carry: builds the initial carry from the zero ``h`` (default: h itself;
        ``lambda h: (h, h)`` for an ``(h, c)`` carry).
      kind: a label for messages and plots.
      Other arguments as in :func:`elman`.

    Params: ``w_ih: (input_size, G*H)``, ``w_hh: (H, G*H)``, ``b_ih, b_hh: (G*H,)``.
    """
    checks.positive_int("hidden_size", hidden_size)
    checks.positive_int("num_gates", num_gates)
    if not callable(update):
        raise TypeError(f"update must be callable as update(carry, gi, gh), got {update!r}")

    def init(key: Array, input_size: int) -> Params:
        return _gate_params(
            key,
            input_size,
            hidden_size,
            num_gates,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            use_bias=use_bias,
            param_dtype=param_dtype,
        )

    def initial_carry(params: Params) -> Carry:
        return make_carry(jnp.zeros((hidden_size,), dtype or params["w_hh"].dtype))

    step = GatedStep(update, additive, hidden, dtype)
    return Cell(init, initial_carry, step, hidden_size, kind, _input_size)


def elman(
    hidden_size: int,
    activation: str = "tanh",
    *,
    use_bias: bool = True,
    kernel_init: Initializer = initializers.lecun_normal(),
    recurrent_init: Initializer = initializers.orthogonal(),
    bias_init: Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Returns an Elman (vanilla) RNN cell, PyTorch's ``nn.RNN`` step.

    h_t = act(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)        (Elman 1990)

    Args:
      hidden_size: size of h.
      activation: ``"tanh"``, ``"relu"``, or ``"identity"`` (a linear RNN).
      use_bias: include ``b_ih`` and ``b_hh``.
      kernel_init, recurrent_init, bias_init: ``init(key, shape, dtype)`` functions.
        ``recurrent_init=rnnjax.initializers.identity()`` with ``activation="relu"``
        gives the IRNN of Le, Jaitly & Hinton (2015); see :func:`irnn`.
      dtype: computation dtype (default: that of the inputs and parameters).
      param_dtype: dtype of the initialised parameters.

    Params: ``w_ih: (input_size, H)``, ``w_hh: (H, H)``, ``b_ih, b_hh: (H,)``.
    Carry: ``h: (H,)``. Output: ``h``.
    """
    if activation not in ELMAN_UPDATES:
        raise ValueError(f"activation must be one of {sorted(ELMAN_UPDATES)}, got {activation!r}")
    return gated(
        hidden_size,
        1,
        ELMAN_UPDATES[activation],
        additive=True,
        use_bias=use_bias,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=param_dtype,
        kind=("elman", activation, dtype),
    )


def irnn(hidden_size: int, *, scale: float = 1.0, **kwargs: Any) -> Cell:
    """Returns the IRNN of Le, Jaitly & Hinton (2015): a ReLU Elman cell with W_hh = scale * I.

    Input weights are drawn from N(0, 0.001^2) as in the paper, and biases start at zero.
    Keyword arguments are passed to :func:`elman` and override these defaults.
    """
    kwargs.setdefault("recurrent_init", initializers.identity(scale))
    kwargs.setdefault("kernel_init", initializers.normal(1e-3))
    return elman(hidden_size, "relu", **kwargs)


def _pair(h: Array) -> tuple[Array, Array]:
    return h, h


def lstm(
    hidden_size: int,
    *,
    use_bias: bool = True,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    kernel_init: Initializer = initializers.lecun_normal(),
    recurrent_init: Initializer = initializers.orthogonal(),
    bias_init: Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Returns an LSTM cell, PyTorch's ``nn.LSTM`` step (gate order i, f, g, o).

    i = σ(x W_ii + b_ii + h W_hi + b_hi)
    f = σ(x W_if + b_if + h W_hf + b_hf)
    g = tanh(x W_ig + b_ig + h W_hg + b_hg)
    o = σ(x W_io + b_io + h W_ho + b_ho)
    c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')       (Hochreiter & Schmidhuber 1997;
                                                     Gers et al. 2000, forget gate)

    Args:
      hidden_size: size of h and c.
      forget_bias: added to ``b_ih``'s forget block at initialisation (1.0 by default,
        Jozefowicz, Zaremba & Sutskever 2015); ``b_hh`` stays as ``bias_init`` made it.
      chrono_t_max: if given, the chrono initialisation of Tallec & Ollivier (2018):
        ``b_f ~ log U[1, chrono_t_max - 1]`` and ``b_i = -b_f`` (replaces ``forget_bias``).
      Other arguments as in :func:`elman`.

    Params: ``w_ih: (input_size, 4H)``, ``w_hh: (H, 4H)``, ``b_ih, b_hh: (4H,)``.
    Carry: ``(h, c)``, each ``(H,)`` — h first, as PyTorch returns them.
    Output: ``h``.
    """
    cell = gated(
        hidden_size,
        4,
        lstm_update,
        additive=True,
        hidden=first,
        make_carry=_pair,
        use_bias=use_bias,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=param_dtype,
        kind=("lstm", dtype),
    )
    h_size = hidden_size

    def init(key: Array, input_size: int) -> Params:
        params = cell.init(key, input_size)
        if use_bias and chrono_t_max is not None:
            b_f = initializers.chrono_bias(chrono_t_max)(
                jax.random.fold_in(key, 1), (h_size,), params["b_ih"].dtype
            )
            params["b_ih"] = params["b_ih"].at[:h_size].set(-b_f).at[h_size : 2 * h_size].set(b_f)
        elif use_bias and forget_bias:
            params["b_ih"] = params["b_ih"].at[h_size : 2 * h_size].add(forget_bias)
        return params

    return cell._replace(init=init, carry_names=("h", "c"))


def _gru_reset_before_step(h_size: int, dtype: Any):
    def step(params: Params, h: Array, x: Array) -> tuple[Array, Array]:
        # Cho et al. (2014): the reset gate scales h before the matmul, so this cell is not
        # of the gated form (its gh depends on the gates) and runs as written.
        compute = _compute_dtype(params, x, dtype)
        gi = _linear(x, params["w_ih"], params.get("b_ih"), compute)
        i_r, i_z, i_n = jnp.split(gi, 3)
        w_rz, w_n = params["w_hh"][:, : 2 * h_size], params["w_hh"][:, 2 * h_size :]
        b_hh = params.get("b_hh")
        b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * h_size], b_hh[2 * h_size :])
        h_r, h_z = jnp.split(_linear(h, w_rz, b_rz, compute), 2)
        r = jax.nn.sigmoid(i_r + h_r)
        z = jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + _linear(r * h.astype(compute), w_n, b_n, compute))
        h = (1.0 - z) * n + z * h.astype(n.dtype)
        return h, h

    return step


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    use_bias: bool = True,
    kernel_init: Initializer = initializers.lecun_normal(),
    recurrent_init: Initializer = initializers.orthogonal(),
    bias_init: Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Returns a GRU cell, PyTorch's ``nn.GRU`` step (gate order r, z, n).

    r = σ(x W_ir + b_ir + h W_hr + b_hr)
    z = σ(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))      reset_after=True (PyTorch/cuDNN)
    n = tanh(x W_in + b_in + (r ⊙ h) W_hn + b_hn)      reset_after=False (Cho et al. 2014)
    h' = (1 - z) ⊙ n + z ⊙ h

    Args:
      hidden_size: size of h.
      reset_after: where the reset gate acts; see the equations above.
      Other arguments as in :func:`elman`.

    Params: ``w_ih: (input_size, 3H)``, ``w_hh: (H, 3H)``, ``b_ih, b_hh: (3H,)``.
    Carry: ``h: (H,)``. Output: ``h``.
    """
    kind = ("gru", "reset_after" if reset_after else "reset_before", dtype)
    cell = gated(
        hidden_size,
        3,
        gru_update,
        use_bias=use_bias,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=param_dtype,
        kind=kind,
    )
    if reset_after:
        return cell
    return cell._replace(step=_gru_reset_before_step(hidden_size, dtype))
