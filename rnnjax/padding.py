"""Padding: the one module that knows about lengths, masks and valid-prefix reversal.

A padded sequence ``xs: (T, ...)`` holds ``length`` valid steps and whatever a data
pipeline left after them (zeros, NaN, inf). Every loop in rnnjax (the reference scan, the
fast path, the diagnostics) and every model treats padding through the functions here, so
that it is done once and done the same way:

* :func:`check_length` gives ``length`` its contract: an int scalar in ``[0, T]``; concrete
  values outside raise ValueError, traced ones are clipped (or raise under
  :func:`rnnjax.checked`).
* :func:`clean` replaces the inputs of padded steps by zeros BEFORE any cell sees them, so a
  NaN or inf there cannot reach a value or a gradient (masking a cell's output with
  ``jnp.where`` alone still differentiates the cell at the NaN: 0 * NaN = NaN).
* :func:`keep_carry` and :func:`zero_outputs`: a padded step leaves the carry unchanged and
  emits zeros.
* :func:`reverse_valid`: the valid prefix reversed, padding left in place; a reverse scan is
  a forward scan between two of these.
"""

from rnnjax._src.padding import reverse_valid, valid_steps

__all__ = ["reverse_valid", "valid_steps"]
