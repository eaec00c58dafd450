"""Padding: the one module that knows about lengths, masks and valid-prefix reversal.

A padded sequence ``xs: (T, ...)`` holds ``length`` valid steps and whatever a data
pipeline left after them (zeros, NaN, inf). Every loop in rnnjax (the reference scan, the
fast path, the diagnostics) and every model treats padding through the functions here, so
that it is done once and done the same way:

* ``length`` is an int scalar in ``[0, T]``; concrete values outside raise ValueError, traced
  ones are clipped (or raise under :func:`rnnjax.checked`).
* the inputs of padded steps are replaced by zeros BEFORE any cell sees them, so a NaN or
  inf there cannot reach a value or a gradient (masking a cell's output with ``jnp.where``
  alone still differentiates the cell at the NaN: 0 * NaN = NaN);
* a padded step leaves the carry unchanged and emits zeros.

Two of its functions are public: :func:`valid_steps`, the ``(T,)`` mask of valid steps, and
:func:`reverse_valid`, the valid prefix reversed with the padding left in place (a reverse
scan is a forward scan between two of these).
"""

from rnnjax._src.padding import reverse_valid, valid_steps

__all__ = ["reverse_valid", "valid_steps"]
