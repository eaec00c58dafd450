"""Synthetic long-range-dependency tasks: the adding problem, copy memory and temporal order.

A task is a record of pure functions, like a cell: ``sample(key) -> (xs, target)`` draws
ONE example (batch with :func:`sample_batch` or ``jax.vmap``), and ``loss(outputs,
target)`` scores a model's per-step outputs ``(num_steps, output_size)`` against it. The
model is always "recurrent net + linear readout applied at every step"; a task whose answer
comes at the end (adding, temporal order) reads only ``outputs[-1]``. Each task also
carries the loss of the best predictor that ignores the long-range dependency
(``baseline_loss``): a model has learned something about the dependency only when it
goes clearly below that number.
"""

from rnnjax._src.tasks import adding_problem, copy_memory, make_task, sample_batch, temporal_order

__all__ = ["adding_problem", "copy_memory", "make_task", "sample_batch", "temporal_order"]
