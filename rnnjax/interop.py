"""Weights from other libraries: a PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` as an rnnjax layer."""

from rnnjax._src.interop import from_torch

__all__ = ["from_torch"]
