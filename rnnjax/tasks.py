"""Synthetic long-range tasks: the adding problem, copy memory and temporal order."""

from rnnjax._src.tasks import adding_problem, copy_memory, make_task, sample_batch, temporal_order

__all__ = ["adding_problem", "copy_memory", "make_task", "sample_batch", "temporal_order"]
