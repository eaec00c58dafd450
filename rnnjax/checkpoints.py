"""Checkpoints: a model's parameters, and a training state that :func:`rnnjax.fit` resumes.

:func:`save_params` / :func:`load_params` write and read parameters alone (checked against the
tree they should fit, with a message naming every mismatch); :func:`rnnjax.fit` saves
training states itself, and :func:`restore_checkpoint` / :func:`checkpoint_steps` read them.
"""

from rnnjax._src.checkpoints import (
    CheckpointError,
    checkpoint_steps,
    load_params,
    restore_checkpoint,
    save_params,
)

__all__ = [
    "CheckpointError",
    "checkpoint_steps",
    "load_params",
    "restore_checkpoint",
    "save_params",
]
