"""Checkpoints of a training state with ``orbax-checkpoint``: atomic, keep-last-N, clear errors.

A checkpoint directory holds one sub-directory per saved step (``<directory>/<step>``).
Orbax writes each step to a temporary directory and renames it only once every file is
written, so a crash in the middle of a save leaves the previous checkpoints as they were and
never a half-written "latest" (a leftover ``*.orbax-checkpoint-tmp-*`` directory is ignored).

Failures are reported as :class:`CheckpointError` (or :class:`CheckpointNotFoundError`)
naming the path, rather than a traceback from deep inside orbax or tensorstore.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


def _ocp():
    import orbax.checkpoint  # imported on first use: it takes longer to import than rnnjax

    return orbax.checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or written; the message names its path."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint exists at the requested path or step."""


def checkpoint_step(state: Any) -> int:
    """Returns the step a state is saved under: ``int(state.step)`` (the first of a vmapped batch)."""
    step = np.asarray(jax.device_get(state.step))
    return int(step.reshape(-1)[0])


@contextlib.contextmanager
def open_checkpoints(
    directory: str | os.PathLike, *, keep: int | None = 3, create: bool = True
) -> Iterator[ocp.CheckpointManager]:
    """Yields an orbax ``CheckpointManager`` over ``directory`` that keeps the last ``keep`` steps.

    Saving is synchronous, so a returned ``save`` has finished (and been renamed into place).
    """
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None, got {keep!r}")
    ocp = _ocp()
    directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, enable_async_checkpointing=False
    )
    manager = ocp.CheckpointManager(directory, options=options)
    try:
        yield manager
    finally:
        manager.close()


def save(manager: ocp.CheckpointManager, state: Any) -> str:
    """Returns the path of the checkpoint written for ``state`` at ``checkpoint_step(state)``.

    Saving the step that is already the latest checkpoint is a no-op (e.g. Ctrl-C right
    after a periodic save).
    """
    step = checkpoint_step(state)
    path = os.path.join(os.fspath(manager.directory), str(step))
    if step in manager.all_steps():
        return path
    ocp = _ocp()
    try:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
    except Exception as err:  # orbax/tensorstore raise many kinds; report the path.
        raise CheckpointError(
            f"could not write checkpoint {path}: {type(err).__name__}: {err}"
        ) from None
    return path


def restore(manager: ocp.CheckpointManager, like: Any, step: int | None = None) -> Any:
    """Returns the state saved at ``step`` (default: the latest), with the structure of ``like``.

    ``like`` is a state (or a tree of ``jax.ShapeDtypeStruct``) of the same structure; the
    restored arrays get its shapes, dtypes and shardings.

    Raises:
      CheckpointNotFoundError: there is no checkpoint at ``step`` (or none at all).
      CheckpointError: the checkpoint exists but cannot be read (corrupted, or saved from a
        state of a different structure).
    """
    directory = os.fspath(manager.directory)
    steps = manager.all_steps()
    if step is None:
        if not steps:
            raise CheckpointNotFoundError(f"no checkpoint found in {directory}")
        step = max(steps)
    path = os.path.join(directory, str(step))
    if step not in steps:
        raise CheckpointNotFoundError(
            f"no checkpoint at {path}; steps available in {directory}: {sorted(steps)}"
        )
    ocp = _ocp()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # a corrupted file surfaces as any of several deep errors.
        raise CheckpointError(
            f"checkpoint {path} is corrupted or does not match the training state "
            f"({type(err).__name__}: {str(err)[:500]}). Delete {path} to resume from the "
            f"previous checkpoint."
        ) from None
    # StandardRestore returns lists/dicts for some containers; put them back into `like`'s tree.
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored))


def save_checkpoint(directory: str | os.PathLike, state: Any, *, keep: int | None = 3) -> str:
    """Returns the path of the checkpoint of ``state`` written under ``directory/<step>``."""
    with open_checkpoints(directory, keep=keep) as manager:
        return save(manager, state)


def restore_checkpoint(directory: str | os.PathLike, like: Any, *, step: int | None = None) -> Any:
    """Returns the state saved in ``directory`` at ``step`` (default: latest), shaped like ``like``.

    Raises :class:`CheckpointNotFoundError` naming the path when ``directory`` or the step
    does not exist, and :class:`CheckpointError` naming the path when it cannot be read.
    """
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(f"checkpoint directory {os.fspath(directory)} does not exist")
    with open_checkpoints(directory, keep=None, create=False) as manager:
        return restore(manager, like, step)


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """Returns the sorted steps of the complete checkpoints in ``directory`` ([] if none)."""
    if not os.path.isdir(directory):
        return []
    with open_checkpoints(directory, keep=None, create=False) as manager:
        return sorted(manager.all_steps())
