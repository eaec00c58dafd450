"""Conversion from PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` to rnnjax layers.

rnnjax's cells use PyTorch's equations, gate order and two-bias convention, so conversion
is a transpose of each weight matrix, nothing more. torch is imported only when called:
rnnjax does not need it.
"""

from rnnjax._src.interop import from_torch

__all__ = ["from_torch"]
