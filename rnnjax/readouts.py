"""Readouts and embeddings: the small feed-forward maps around a recurrent core.

Like a cell, each is a ``NamedTuple`` of pure functions over plain pytrees. A
:class:`Readout` maps feature vectors to outputs (``linear``, ``mlp``) and acts on any
leading axes, so the same readout serves one vector ``(F,)``, a sequence ``(T, F)`` or a
batch. An :class:`Embedding` maps integer tokens to vectors by table lookup.
"""

from rnnjax._src.language_models import carry_bridge
from rnnjax._src.readouts import embedding, linear, mlp

__all__ = ["carry_bridge", "embedding", "linear", "mlp"]
