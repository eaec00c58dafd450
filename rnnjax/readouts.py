"""Readouts and embeddings: the small feed-forward maps around a recurrent core.

Like a cell, each is a ``NamedTuple`` of pure functions over plain pytrees. A
readout (:func:`linear`, :func:`mlp`) maps feature vectors to outputs and acts on any
leading axes, so the same readout serves one vector ``(F,)``, a sequence ``(T, F)`` or a
batch; an embedding (:func:`embedding`) maps integer tokens to vectors by table lookup.
:func:`carry_bridge` maps a conditioning vector (an image's features, say) into a language
model's initial carry: the bridge of a captioning model.
"""

from rnnjax._src.language_models import carry_bridge
from rnnjax._src.readouts import embedding, linear, mlp

__all__ = ["carry_bridge", "embedding", "linear", "mlp"]
