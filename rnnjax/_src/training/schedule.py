"""fit's options for when things happen: Schedule (evaluation, checkpoints, logging) and EarlyStopping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rnnjax._src.training.step import (
    TrainState,
)

Hook = Callable[[TrainState], Mapping[str, Any]]


def check_interval(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When :func:`fit` stops a chunk of device steps to do something on the host.

    Attributes:
      chunk_size: steps per device program between host synchronisations.
      eval_every: steps between evaluations (None: at step 0 and at the end only).
      checkpoint_every: steps between checkpoints (None: at the end only).
      hook_every: steps between hook calls (None: every chunk).
      keep_checkpoints: how many of the latest checkpoints to keep.

    Chunks end at every multiple of each interval; make them multiples of ``chunk_size``
    to compile one program.
    """

    chunk_size: int = 100
    eval_every: int | None = None
    checkpoint_every: int | None = None
    hook_every: int | None = None
    keep_checkpoints: int = 3

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_interval(
                field.name,
                getattr(self, field.name),
                allow_none=field.name not in ("chunk_size", "keep_checkpoints"),
            )


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop training when a metric has not improved for ``patience`` evaluations.

    Attributes:
      metric: the history key watched, e.g. ``"eval/loss"`` (the ``"loss"`` of ``eval_fn``)
        or a hook's key; it is read each time it is recorded.
      patience: evaluations in a row without improvement after which training stops.
      mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
      min_delta: an improvement must exceed this (a NaN never improves).
      restore_best: :func:`fit` returns the state of the best evaluation, not the last.

    The best state is kept as an orbax checkpoint in ``run_dir/best`` (one step, the
    best's), and a resumed run continues the same count from its metrics history.
    """

    metric: str = "eval/loss"
    patience: int = 5
    mode: str = "min"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        check_interval("patience", self.patience, allow_none=False)
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def improves(self, value: float, best: float | None) -> bool:
        """Returns whether ``value`` beats ``best`` (None: nothing recorded yet)."""
        if not np.isfinite(value):
            return False
        if best is None:
            return True
        return (
            value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        )


class Watch:
    """The early-stopping count: best value and step, evaluations since the best."""

    def __init__(self, rule: EarlyStopping, history: Sequence[dict]):
        self.rule, self.best, self.best_step, self.wait = rule, None, None, 0
        for row in history:  # a resumed run replays the count from its history
            if rule.metric in row:
                self.update(row[rule.metric], row["step"])

    def update(self, value: Any, step: int) -> bool:
        """Records an evaluation; returns whether it is the new best."""
        value = float(value)
        if self.rule.improves(value, self.best):
            self.best, self.best_step, self.wait = value, step, 0
            return True
        self.wait += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.wait >= self.rule.patience
