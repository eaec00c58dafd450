"""Decoding: one generation loop and one beam search for every autoregressive model, and CTC.

Every model that generates (:func:`rnnjax.language_model`, :func:`rnnjax.one_to_many`,
:func:`rnnjax.encoder_decoder`) has ``generate`` with the keywords of :func:`generate`.
"""

from rnnjax._src.decoding import beam_search, ctc_greedy, ctc_prefix_beam_search, generate

__all__ = ["beam_search", "ctc_greedy", "ctc_prefix_beam_search", "generate"]
