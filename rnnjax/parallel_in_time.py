"""Parallel evaluation over time: ``scan(..., impl="parallel")`` for cells linear in their
state (one associative scan), and Newton's method (DEER, quasi-DEER, ELK) for any cell."""

from rnnjax._src.parallel_in_time import METHODS, Newton, evaluate

__all__ = ["METHODS", "Newton", "evaluate"]
