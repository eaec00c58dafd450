"""Conversion from PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` to rnnjax layers.

rnnjax's cells use PyTorch's equations, gate order and two-bias convention, so conversion
is a transpose of each weight matrix, nothing more. torch is imported only when called:
rnnjax does not need it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnjax.cells import elman, gru, lstm
from rnnjax.layers import Layer, bidirectional, recurrent, stack


def _torch_direction_params(module: Any, layer: int, suffix: str) -> dict[str, Any]:
    def get(name: str):
        tensor = getattr(module, f"{name}_l{layer}{suffix}")
        return jnp.asarray(np.asarray(tensor.detach().cpu().float().numpy()))

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
    if kind == "RNN":
        cell = elman(hidden, str(module.nonlinearity), use_bias=module.bias)
    elif kind == "LSTM":
        cell = lstm(hidden, use_bias=module.bias)
    else:
        cell = gru(hidden, use_bias=module.bias)

    layers, params = [], []
    for layer in range(module.num_layers):
        forward = _torch_direction_params(module, layer, "")
        if module.bidirectional:
            layers.append(bidirectional(cell, cell))
            params.append(
                {"forward": forward, "backward": _torch_direction_params(module, layer, "_reverse")}
            )
        else:
            layers.append(recurrent(cell))
            params.append(forward)
    return stack(*layers, dropout=float(module.dropout)), params
