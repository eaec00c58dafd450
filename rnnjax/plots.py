"""Figures of gradient flow (matplotlib is imported only when a figure is drawn)."""
