"""Figures for papers: gradient norms over time, their heat map, singular value and Lyapunov spectra."""

from rnnjax._src.plots import (
    gradient_heatmap,
    gradient_norms,
    lyapunov_spectra,
    singular_value_spectra,
)

__all__ = ["gradient_heatmap", "gradient_norms", "lyapunov_spectra", "singular_value_spectra"]
