"""Losses over padded sequences that average over the valid steps only.

A padded batch holds ``length[b]`` valid steps in row ``b`` and arbitrary values after
them. The losses here take a boolean ``mask`` over the leading (batch/time) axes and
return the mean over the positions where it is true, so padding changes neither the loss
nor its gradient, even when the padded predictions are ``inf`` or ``nan``: masked entries
are replaced by zeros BEFORE the per-step loss is computed (the "double where"), so no
``0 * nan`` reaches the gradient.
"""

from rnnjax._src.losses import masked_cross_entropy, masked_mse

__all__ = ["masked_cross_entropy", "masked_mse"]
