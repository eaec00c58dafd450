"""What fit writes: metrics rows, the summary, TensorBoard events, the non-finite report."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rnnjax._src.training import run_dir as files
from rnnjax._src.training.step import (
    NonFiniteError,
    TrainState,
)

Hook = Callable[[TrainState], Mapping[str, Any]]


def tensorboard_writer(run_dir: str, history: Sequence[dict]):
    """Returns a tensorboardX writer of ``run_dir/tensorboard`` holding exactly ``history``.

    The event files are rewritten from ``metrics.jsonl``'s rows: a run killed after its
    last checkpoint had already logged the steps that the resumed run redoes, and event
    files cannot be truncated, so appending would show those steps twice.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "fit(tensorboard=True) needs tensorboardX: pip install "
            "'rnnjax[tensorboard]' (or tensorboardX)"
        ) from e
    directory = os.path.join(run_dir, "tensorboard")
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith("events.out.tfevents."):
                os.remove(os.path.join(directory, name))
    writer = SummaryWriter(directory)
    _write_scalars(writer, history)
    return writer


def _write_scalars(writer: Any, rows: Sequence[dict]) -> None:
    """Writes each row's scalars (and each vmapped run's, as ``key/run<i>``).

    ``train/*`` keys are left out: they repeat, at the last step, the training metrics of the
    step before, which TensorBoard already shows under their own names.
    """
    for row in rows:
        for k, v in row.items():
            if k == "step" or k.startswith("train/") or isinstance(v, (bool, str)):
                continue
            if isinstance(v, (int, float)):
                writer.add_scalar(k, v, row["step"])
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                for i, x in enumerate(v):  # one value per vmapped run
                    writer.add_scalar(f"{k}/run{i}", x, row["step"])
    writer.flush()


def metric_rows(
    metrics: Mapping[str, np.ndarray], start: int, n: int, batched: bool, time_per_step: float
) -> list[dict]:
    """Returns one dict per step of a chunk from metrics stacked to (n,) or (N, n)."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"step": start + i}
        for k, v in metrics.items():
            row[k] = files.to_python(v[:, i] if batched else v[i])
        row["time_per_step"] = time_per_step
        rows.append(row)
    return rows


def append_rows(
    history: list[dict], rows: list[dict], run_dir: str | None, writer: Any = None
) -> None:
    history.extend(rows)
    if run_dir is not None:
        files.append_metrics(run_dir, rows)
    if writer is not None:
        _write_scalars(writer, rows)


def nonfinite_error(step: int, bad: tuple, manager: Any, last_saved: str | None) -> NonFiniteError:
    _, metric, runs = bad
    where = f"step {step}" + (f" (runs {runs})" if runs is not None else "")
    if manager is None:
        ckpt = "no run_dir, so no checkpoint was kept"
    elif last_saved is None:
        ckpt = "no checkpoint had been saved yet"
    else:
        ckpt = f"the last good checkpoint, {last_saved}, is untouched"
    hint = (
        ""
        if metric == "param_norm"
        else "; to skip such updates instead, use make_train_step(..., skip_nonfinite=True) "
        "and init_train_state(..., skip_nonfinite=True)"
    )
    return NonFiniteError(
        f"training stopped: {metric} is not finite at {where}; {ckpt}{hint}",
        step=step,
        metric=metric,
        checkpoint=last_saved,
    )


def write_fit_summary(
    run_dir: str,
    history: list[dict],
    step: int,
    num_steps: int,
    interrupted: bool,
    wall_time: float,
    last_saved: str | None,
    early: dict | None = None,
) -> None:
    last_train = next((r for r in reversed(history) if "loss" in r), {})
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    files.write_summary(
        run_dir,
        {
            "step": step,
            "num_steps": num_steps,
            "finished": step == num_steps,
            "interrupted": interrupted,
            "wall_time_s": wall_time,
            "last_checkpoint": last_saved,
            "last_train_metrics": last_train,
            "last_eval": {
                k: v for k, v in evals[-1].items() if k == "step" or k.startswith("eval/")
            }
            if evals
            else None,
            **({"early_stopping": early} if early is not None else {}),
        },
    )
