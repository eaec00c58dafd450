"""Figures of gradient flow: gradient norms over time, their evolution in training,
singular-value spectra and Lyapunov spectra.

Each function returns a ``matplotlib.figure.Figure`` and, given ``path``, saves it (PNG,
PDF or any format matplotlib infers from the suffix). matplotlib is imported only when a
figure is drawn, so ``import rnnjax`` never needs it; when no backend has been chosen
(no ``MPLBACKEND`` and pyplot not yet imported) the non-interactive Agg backend is used.
Curves are given as a mapping ``{label: values}`` (one line per cell) or as one array.
"""

from rnnjax._src.plots import (
    gradient_heatmap,
    gradient_norms,
    lyapunov_spectra,
    singular_value_spectra,
)

__all__ = ["gradient_heatmap", "gradient_norms", "lyapunov_spectra", "singular_value_spectra"]
