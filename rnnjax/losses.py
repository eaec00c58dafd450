"""Losses over padded sequences: masked positions contribute exactly zero."""

from rnnjax._src.losses import masked_cross_entropy, masked_mse

__all__ = ["masked_cross_entropy", "masked_mse"]
