"""The implementation of :mod:`rnnjax.interop` (its docstring describes it)."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src.cells import elman, gru, lstm
from rnnjax._src.layers import Layer, bidirectional, recurrent, stack

__all__ = ["from_torch"]


def _torch_direction_params(module: Any, layer: int, suffix: str, dtype: Any) -> dict[str, Any]:
    def get(name: str):
        tensor = getattr(module, f"{name}_l{layer}{suffix}").detach().cpu()
        # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
        array = tensor.float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.numpy()
        return jnp.asarray(array, dtype)

    params = {"w_ih": get("weight_ih").T, "w_hh": get("weight_hh").T}
    if module.bias:
        params["b_ih"] = get("bias_ih")
        params["b_hh"] = get("bias_hh")
    return params


def from_torch(module: Any) -> tuple[Layer, list]:
    """Returns ``(layer, params)`` reproducing a ``torch.nn.RNN``, ``LSTM`` or ``GRU``.

    ``layer.apply(params, xs, length=n)`` on ONE sequence ``xs: (T, input_size)`` gives the
    module's output for that sequence (``batch_first`` is irrelevant for one sequence;
    batch with ``jax.vmap``), with padding past ``n`` as ``pad_packed_sequence`` gives it.
    The layer is always a :func:`rnnjax.stack` of ``num_layers`` layers, each
    :func:`rnnjax.bidirectional` if the module is; its final carry is a list with one
    carry per layer (``(h, c)`` for LSTM; a ``(forward, backward)`` pair if bidirectional),
    the same numbers as the module's ``h_n`` (and ``c_n``) in a nested form.

    Supports ``num_layers``, ``bidirectional``, ``batch_first``, ``bias`` and RNN's
    ``nonlinearity``; the module's inter-layer ``dropout`` becomes the stack's dropout.
    LSTM ``proj_size > 0`` is not supported.

    The parameters keep the module's dtype (``float32``, ``float64``, ``float16``,
    ``bfloat16``). A ``float64`` module needs JAX's 64-bit mode (``jax_enable_x64``, or
    ``with jax.enable_x64(True):``); without it the parameters are converted to
    ``float32`` and a warning says so.
    """
    import torch  # here, not at the top: rnnjax does not need torch unless this is called

    kind = type(module).__name__
    if kind not in ("RNN", "LSTM", "GRU") or not isinstance(module, torch.nn.RNNBase):
        raise TypeError(f"module must be a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"module.proj_size must be 0 (projected LSTMs are not supported), got {module.proj_size}"
        )
    hidden = module.hidden_size
    dtype = _jax_dtype(module)
    if kind == "RNN":
        cell = elman(hidden, str(module.nonlinearity), use_bias=module.bias)
    elif kind == "LSTM":
        cell = lstm(hidden, use_bias=module.bias)
    else:
        cell = gru(hidden, use_bias=module.bias)

    layers, params = [], []
    for layer in range(module.num_layers):
        forward = _torch_direction_params(module, layer, "", dtype)
        if module.bidirectional:
            layers.append(bidirectional(cell, cell))
            params.append(
                {
                    "forward": forward,
                    "backward": _torch_direction_params(module, layer, "_reverse", dtype),
                }
            )
        else:
            layers.append(recurrent(cell))
            params.append(forward)
    return stack(*layers, dropout=float(module.dropout)), params


def _jax_dtype(module: Any) -> Any:
    """Returns the JAX dtype of ``module``'s parameters, warning when JAX cannot hold it."""
    torch_dtype = str(next(module.parameters()).dtype).removeprefix("torch.")
    dtype = jnp.dtype(torch_dtype)
    available = jax.dtypes.canonicalize_dtype(dtype)
    if available != dtype:
        warnings.warn(
            f"module's parameters are {dtype}, which JAX holds only in 64-bit mode: they are "
            f"converted to {available}. Enable it (jax.config.update('jax_enable_x64', True), "
            f"or `with jax.enable_x64(True):`) to keep {dtype}.",
            stacklevel=3,
        )
    return available
