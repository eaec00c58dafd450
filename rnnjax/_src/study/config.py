"""The study's configuration: :class:`Config`, the presets, the cells a study runs."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
import typing
from collections.abc import Callable
from typing import Any

from rnnjax._src import registry, runs, tasks
from rnnjax._src.cells import Cell


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a study; saved as ``config.json`` in the run directory."""

    task: str = runs.option("adding", "task: adding | copy | temporal_order")
    cells: tuple[str, ...] = runs.option(
        ("elman", "lstm", "gru"),
        "baseline cells from rnnjax.CELLS (elman: tanh, orthogonal W_hh; lstm: forget "
        "bias --forget-bias; gru; irnn: ReLU, W_hh = I; lru; mingru; ...)",
    )
    cell: tuple[str, ...] = runs.option(
        (), "your cells: factories make(hidden_size) -> Cell as file.py:name or module:name"
    )
    lengths: tuple[int, ...] = runs.option(
        (10, 50, 100),
        "sequence lengths T (for copy: the number of blanks between the symbols and the recall)",
    )
    num_seeds: int = runs.option(3, "seeds per (cell, T), trained together as one vmapped program")
    hidden_size: int = runs.option(32, "hidden units per cell")
    block: str = runs.option("none", "after the recurrent layer: none | glu (a residual gated MLP)")
    batch_size: int = runs.option(64, "training sequences per step (fresh every step)")
    num_steps: int = runs.option(1000, "Adam updates per run")
    learning_rate: float = runs.option(1e-2, "Adam learning rate (constant)")
    clip_norm: float = runs.option(1.0, "gradient clipping by global norm (Pascanu et al. 2013)")
    forget_bias: float = runs.option(1.0, "LSTM forget-gate bias at initialisation")
    test_size: int = runs.option(1000, "held-out test sequences per T (one fixed set for all runs)")
    diag_size: int = runs.option(128, "test sequences averaged for the gradient-norm diagnostics")
    lag_size: int = runs.option(
        16, "test sequences for the lag decomposition, Jacobian norms and Lyapunov exponents"
    )
    lyapunov_exponents: int = runs.option(8, "top Lyapunov exponents measured at initialisation")
    eval_every: int = runs.option(100, "steps between test-loss and gradient-norm measurements")
    solved_fraction: float = runs.option(
        0.1, "a run counts as solved when final test loss <= this fraction of the baseline"
    )
    checkpoint_every: int = runs.option(
        0, "steps between checkpoints within a group (0: at the end only)"
    )
    seed: int = runs.option(0, "master seed; seed s of every group is derived from it")


#: Named starting values for :class:`Config` (``--preset``): ``tiny``, ``quick`` (``make study``),
#: ``linear`` and ``full``; each maps field names to values, the rest keep their defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: the tests' run, and a check that a new cell runs at all.
    "tiny": dict(
        lengths=(5, 10),
        num_seeds=2,
        hidden_size=8,
        batch_size=16,
        num_steps=40,
        test_size=64,
        diag_size=8,
        lag_size=4,
        lyapunov_exponents=4,
        eval_every=20,
    ),
    # A few minutes on a 2-core CPU: the effect at T = 100 with 3 seeds (`make study`).
    "quick": dict(cells=("elman", "lstm", "gru", "irnn")),
    # The quick preset's settings at its longest T, with the cells linear in their state
    # (LRU, minGRU) beside the gated ones: does a linear recurrence solve it?
    "linear": dict(cells=("elman", "lstm", "gru", "lru", "mingru"), lengths=(100,)),
    # Paper scale: T up to 1000 (Le et al. 2015 go to 750), more seeds, more steps, and the
    # cells linear in their state.
    "full": dict(
        cells=("elman", "lstm", "gru", "irnn", "lru", "mingru"),
        lengths=(10, 50, 100, 200, 400, 750, 1000),
        num_seeds=5,
        hidden_size=128,
        batch_size=64,
        num_steps=20_000,
        learning_rate=1e-3,
        eval_every=500,
        checkpoint_every=2000,
    ),
}

_BLOCKS = ("none", "glu")
_USER_COLORS = ("black", "tab:olive", "tab:cyan", "tab:gray")


@dataclasses.dataclass(frozen=True)
class StudyCell:
    """A cell in the study: ``make(hidden_size) -> Cell``, its name in results, label and colour."""

    name: str
    make: Callable[[int], Cell]
    label: str
    color: str


def load_cell_factory(spec: str) -> Callable[[int], Cell]:
    """Returns the factory ``spec`` names: ``path/to/file.py:name`` or ``package.module:name``.

    Raises:
      ValueError: ``spec`` has no ``:name``, or the file, module or name does not exist.
    """
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ValueError(f"cell must be 'file.py:name' or 'module:name', got {spec!r}")
    if path.endswith(".py"):
        if not os.path.isfile(path):
            raise ValueError(f"cell file {path!r} (from {spec!r}) does not exist")
        module_name = "_rnnjax_study_" + re.sub(r"\W", "_", os.path.abspath(path))
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as e:
            raise ValueError(f"cannot import module {path!r} (from {spec!r}): {e}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{path!r} has no callable {name!r} (from {spec!r})")
    return typing.cast(Callable[[int], Cell], factory)


def _study_cells(config: Config) -> list[StudyCell]:
    """Returns the baselines (registry) then the user's cells (factories) of ``config``."""
    out = []
    for name in config.cells:
        spec = registry.CELLS[name]
        options = {"forget_bias": config.forget_bias} if name == "lstm" else {}
        make = lambda h, spec=spec, options=options: spec.make(h, **options)
        out.append(StudyCell(name, make, spec.label, spec.color))
    for i, cell_spec in enumerate(config.cell):
        name = cell_spec.rpartition(":")[2]
        if name in registry.CELLS:
            name = f"user_{name}"
        out.append(
            StudyCell(
                name,
                load_cell_factory(cell_spec),
                name,
                _USER_COLORS[i % len(_USER_COLORS)],
            )
        )
    return out


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if config.task not in tasks.TASKS:
        raise ValueError(f"task must be one of {sorted(tasks.TASKS)}, got {config.task!r}")
    for cell in config.cells:
        if cell not in registry.CELLS:
            raise ValueError(f"cells must be among {sorted(registry.CELLS)}, got {cell!r}")
    if not (config.cells or config.cell) or not config.lengths:
        raise ValueError("cells (or cell) and lengths must be non-empty")
    if config.block not in _BLOCKS:
        raise ValueError(f"block must be one of {_BLOCKS}, got {config.block!r}")
    for name in (
        "num_seeds",
        "hidden_size",
        "batch_size",
        "num_steps",
        "test_size",
        "diag_size",
        "lag_size",
        "lyapunov_exponents",
        "eval_every",
    ):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if any(t < 2 for t in config.lengths):
        raise ValueError(f"lengths must be >= 2, got {config.lengths}")
    if not config.learning_rate > 0 or not config.clip_norm > 0:
        raise ValueError("learning_rate and clip_norm must be > 0")
    for name in ("diag_size", "lag_size"):
        if getattr(config, name) > config.test_size:
            raise ValueError(
                f"{name} ({getattr(config, name)}) must be <= test_size ({config.test_size})"
            )


# --------------------------------------------------------------------------- one group
