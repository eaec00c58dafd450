"""Flax linen modules over the same pure functions (``import rnnjax.linen``)."""

from rnnjax._src.linen import RNN, Model, RNNCell, from_pure, to_pure

__all__ = ["RNN", "Model", "RNNCell", "from_pure", "to_pure"]
