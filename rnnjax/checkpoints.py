"""Checkpoints with ``orbax-checkpoint``: atomic, keep-last-N, clear errors.

:func:`save_params` / :func:`load_params` write and read any pytree of arrays (the
parameters alone, bitwise) in one directory. A training-state checkpoint directory
(:func:`rnnjax.training.fit`'s ``run_dir/checkpoints``, read by :func:`restore_checkpoint`) holds one sub-directory per saved step (``<directory>/<step>``).
Orbax writes each step to a temporary directory and renames it only once every file is
written, so a crash in the middle of a save leaves the previous checkpoints as they were and
never a half-written "latest" (a leftover ``*.orbax-checkpoint-tmp-*`` directory is ignored).

Failures are reported as :class:`CheckpointError` (a missing checkpoint also as
``FileNotFoundError``) naming the path, rather than a traceback from deep inside orbax or tensorstore. A template
(``like``) is compared with the checkpoint's metadata before any array is read: a checkpoint
of another model, size or optimizer is an error listing the paths and shapes that differ.
(Letting orbax find the mismatch instead fails in the middle of its concurrent reads, whose
unfinished tasks then print ``RuntimeError: Event loop is closed`` tracebacks.)
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
