"""Attention over an encoder's annotations: additive (Bahdanau) and multiplicative (Luong) scores.

A decoder step asks a ``query`` (its state, ``(Q,)``) which source steps matter now. Each
source step ``j`` has an annotation ``h_j`` (the encoder's output there, ``(A,)``); a score
``e_j = score(query, h_j)`` is turned into weights by a softmax over the VALID source steps
only, and the context is the weighted sum of annotations:

    alpha_j = exp(e_j) / sum_{k < length} exp(e_k)   (0 for j >= length)
    c = sum_j alpha_j h_j

The part of the score that depends on ``h_j`` alone is computed once per source
(once per sequence), not once per decoder step (Bahdanau et al. 2015, appendix A.1.2, notes
``U_a h_j`` "can be pre-computed").

* :func:`additive`: ``e_j = v^T tanh(W s + U h_j)`` (Bahdanau, Cho & Bengio 2015, "Neural
  Machine Translation by Jointly Learning to Align and Translate", eq. 6 and A.1.2).
* :func:`general`: ``e_j = s^T W h_j`` (Luong, Pham & Manning 2015, "Effective Approaches
  to Attention-based Neural Machine Translation", eq. 8, the "general" score).

How a decoder uses them (which state is the query, where the context goes) is the decoder's
business: :func:`rnnjax.encoder_decoder` with ``attention="bahdanau"`` or ``"luong"``.
Padding is handled here once: padded annotations are set to zero before anything reads
them (so NaN or inf padding reaches neither a value nor a gradient) and a softmax
masked by the length gives padded steps exactly zero weight.
"""

from rnnjax._src.attention import additive, general

__all__ = ["additive", "general"]
