"""Initialisers for recurrent weights and gate biases (``jax.nn.initializers`` has the rest)."""

from rnnjax._src.initializers import chrono_bias, identity, orthogonal, scaled_orthogonal

__all__ = ["chrono_bias", "identity", "orthogonal", "scaled_orthogonal"]
