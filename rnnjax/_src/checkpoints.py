"""The implementation of :mod:`rnnjax.checkpoints` (its docstring describes it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "save_params",
    "load_params",
    "save_checkpoint",
    "restore_checkpoint",
    "checkpoint_steps",
    "checkpoint_step",
    "open_checkpoints",
    "save",
    "restore",
]


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
    manager = ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )
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
      CheckpointError: the checkpoint was saved from a state of another structure, shape or
        dtype (the message lists the paths that differ; nothing is read), or it cannot be
        read (corrupted).
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
    try:
        saved = _tree_of(manager.item_metadata(step))
        if saved is None:
            raise ValueError("no metadata of the saved arrays")
    except Exception as err:  # an unreadable metadata file: nothing to compare with
        raise _unreadable(path, err, resumable=True) from None
    return _restore_like(path, saved, like, manager.restore, step)


def _restore_like(path: str, saved: Any, like: Any, read: Any, step: int | None = None) -> Any:
    """Returns what ``read`` (a manager's restore of ``step``, or a checkpointer's of ``path``)
    gives in ``like``'s tree, once the checkpoint's metadata ``saved`` is known to match it."""
    _check_matches(path, saved, like)
    ocp = _ocp()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        where = path if step is None else step
        restored = read(where, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # a corrupted file surfaces as any of several deep errors.
        raise _unreadable(path, err, resumable=step is not None) from None
    # StandardRestore returns lists/dicts for some containers; put them back into `like`'s tree.
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored))


def _unreadable(path: str, err: Exception, resumable: bool = False) -> CheckpointError:
    hint = " Move it aside to resume from the previous checkpoint." if resumable else ""
    return CheckpointError(
        f"checkpoint {path} is corrupted: it cannot be read ({type(err).__name__}: "
        f"{str(err)[:500]}).{hint}"
    )


def _tree_of(metadata: Any) -> Any:
    """Returns the tree of array metadata inside what orbax's ``metadata()`` returns."""
    metadata = getattr(metadata, "item_metadata", metadata)
    return getattr(metadata, "tree", metadata)


def _path_name(path: tuple) -> str:
    """Returns ``params/rnn/w_hh`` for a key path: orbax stores a NamedTuple as a dict, a
    tuple as a list, so only the names and indices along the path are compared."""
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
        else:
            names.append(str(key))
    return "/".join(names)


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Returns ``{path: (shape, dtype)}`` of every leaf of a tree of arrays or metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    )[0]
    return {
        _path_name(path): (tuple(np.shape(x)), str(getattr(x, "dtype", np.asarray(x).dtype)))
        for path, x in leaves
    }


def _check_matches(path: str, saved: Any, like: Any, limit: int = 12) -> None:
    """Raises CheckpointError listing each path whose shape or dtype differs, or that only one
    of the checkpoint and the template has."""
    on_disk, template = _shapes(saved), _shapes(like)
    differences = []
    for name in sorted(set(on_disk) | set(template)):
        disk = _describe(on_disk[name]) if name in on_disk else "absent"
        wanted = _describe(template[name]) if name in template else "absent"
        if disk != wanted:
            differences.append(f"  {name}: {disk} in the checkpoint, {wanted} in the template")
    if differences:
        more = len(differences) - limit
        listed = differences[:limit] + ([f"  ... and {more} more"] if more > 0 else [])
        raise CheckpointError(
            f"checkpoint {path} does not match the template (`like`, or the state given to "
            f"fit): another model, size or optimizer? Nothing was read and the checkpoint is "
            f"left as it is. {len(differences)} "
            f"{'path differs' if len(differences) == 1 else 'paths differ'}:\n" + "\n".join(listed)
        )


def _describe(shape_dtype: tuple) -> str:
    shape, dtype = shape_dtype
    return f"shape {shape} {dtype}"


def save_params(path: str | os.PathLike, params: Any, *, overwrite: bool = False) -> str:
    """Returns the absolute path of the directory ``path`` into which ``params`` is written.

    ``params`` is any pytree of arrays (JAX or NumPy, any dtype) and Python scalars: the
    parameters alone, with no optimizer state or step. :func:`load_params` gives them back
    bitwise. The directory appears only once every file is written (orbax writes aside and
    renames).

    Args:
      path: the directory to create.
      params: the pytree to save.
      overwrite: replace an existing ``path`` (default: FileExistsError naming it).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"path {path} already exists; pass overwrite=True to replace it, or another path"
        )
    ocp = _ocp()
    try:
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            checkpointer.save(path, args=ocp.args.StandardSave(params), force=overwrite)
    except Exception as err:  # orbax/tensorstore raise many kinds; report the path.
        raise CheckpointError(
            f"could not write parameters to {path}: {type(err).__name__}: {err}"
        ) from None
    return path


def load_params(path: str | os.PathLike, like: Any = None) -> Any:
    """Returns the pytree saved by :func:`save_params` in ``path``, bitwise.

    Args:
      path: the directory written by :func:`save_params`.
      like: optional template (the parameters of a fresh ``init``, or a tree of
        ``jax.ShapeDtypeStruct``): the result then has its tree structure (NamedTuples and
        all), shardings and types of leaves. Without it, containers come back as dicts and
        lists, as orbax stores them.

    Raises:
      CheckpointNotFoundError: ``path`` does not exist.
      CheckpointError: ``like`` differs from what was saved (the message lists the paths,
        shapes and dtypes that differ; nothing is read), or ``path`` cannot be read.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise CheckpointNotFoundError(f"no saved parameters at {path}")
    ocp = _ocp()
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        try:
            saved = _tree_of(checkpointer.metadata(path))
            if like is None:
                return checkpointer.restore(path)
        except Exception as err:
            raise _unreadable(path, err) from None
        return _restore_like(path, saved, like, checkpointer.restore)


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
