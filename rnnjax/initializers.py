"""Weight initialisers with the ``init(key, shape, dtype) -> array`` signature of ``jax.nn.initializers``.

The standard ones are re-exported from ``jax.nn.initializers``, except ``orthogonal``, which
draws the same matrices without LAPACK (a Householder QR in ``jax.numpy``); ``identity`` (IRNN,
Le et al. 2015) and ``chrono_bias`` (Tallec & Ollivier 2018) are the recurrent-specific ones.
"""

from rnnjax._src.initializers import chrono_bias, identity, orthogonal, scaled_orthogonal

__all__ = ["chrono_bias", "identity", "orthogonal", "scaled_orthogonal"]
