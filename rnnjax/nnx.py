"""Flax NNX modules over the same pure functions (``import rnnjax.nnx``)."""

from rnnjax._src.nnx import RNN, Model

__all__ = ["RNN", "Model"]
