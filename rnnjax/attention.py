"""Attention scores for :func:`rnnjax.encoder_decoder`: Bahdanau's additive and Luong's general.

``encoder_decoder(..., attention=attention.additive(size))`` (Bahdanau, Cho & Bengio 2015) or
``attention=attention.general()`` (Luong, Pham & Manning 2015).
"""

from rnnjax._src.attention import additive, general

__all__ = ["additive", "general"]
