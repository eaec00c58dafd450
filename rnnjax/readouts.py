"""What reads a recurrent layer's outputs (a linear map, an MLP or GLU), embeds its tokens,
and maps a conditioning vector into a model's initial carry (:func:`carry_bridge`)."""

from rnnjax._src.language_models import carry_bridge
from rnnjax._src.readouts import embedding, linear, mlp

__all__ = ["carry_bridge", "embedding", "linear", "mlp"]
