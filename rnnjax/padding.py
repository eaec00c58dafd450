"""Lengths of padded sequences: which steps are valid, and reversal within the valid steps."""

from rnnjax._src.padding import reverse_valid, valid_steps

__all__ = ["reverse_valid", "valid_steps"]
