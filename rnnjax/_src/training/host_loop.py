"""The host driver :func:`fit`: chunks of jitted steps, a run directory, and nothing lost.

:func:`fit` runs :func:`rnnjax.training.run_steps` in chunks on device and, between
chunks, on the host: a progress bar, ``metrics.jsonl``, evaluation, hooks, orbax
checkpoints, resumption, Ctrl-C and non-finite detection, and data parallelism over a
device ``Mesh``. When chunks end is a :class:`Schedule`.

Step numbering: a metrics row with ``"step": s`` describes the parameters after ``s``
updates — the training loss of ``batch_fn(key, s)`` at those parameters, their norm, and
(when they run at ``s``) evaluation and hook results. A checkpoint named ``s`` holds the
state after ``s`` updates.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from rnnjax._src import checkpoints
from rnnjax._src.training import processes
from rnnjax._src.training import run_dir as files
from rnnjax._src.training.devices import DATA_AXIS, data_parallel_mesh, replicate, shard_batch
from rnnjax._src.training.records import (
    append_rows,
    metric_rows,
    nonfinite_error,
    tensorboard_writer,
    write_fit_summary,
)
from rnnjax._src.training.schedule import EarlyStopping, Schedule, Watch, check_interval
from rnnjax._src.training.step import (
    Array,
    BatchFn,
    TrainState,
    TrainStep,
    eval_key,
    run_steps,
)

Hook = Callable[[TrainState], Mapping[str, Any]]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState` (on the mesh's devices); with early stopping
        and ``restore_best``, the state of the best evaluation.
      history: one dict per step (see the module docstring for what ``step`` means), the
        same rows as ``metrics.jsonl``; values are floats (lists of N floats for N vmapped
        runs).
      interrupted: True if Ctrl-C stopped the run (with ``exit_on_interrupt=False``).
      stopped_early: True if :class:`EarlyStopping` ended the run before ``num_steps``.
      best_step: the step of the best evaluation under early stopping (else None).
    """

    state: TrainState
    history: list[dict]
    interrupted: bool
    stopped_early: bool = False
    best_step: int | None = None


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4, 5))
def _run_chunk(train_step, state, batch_fn, num_steps, batched, mesh):
    if mesh is not None:
        batch_fn = _sharded(batch_fn, mesh)
    run = functools.partial(run_steps, train_step, batch_fn=batch_fn, num_steps=num_steps)
    return jax.vmap(run)(state) if batched else run(state)


def _sharded(batch_fn, mesh):
    return lambda key, step: shard_batch(batch_fn(key, step), mesh)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _evaluate(eval_fn, params, key, batched):
    return jax.vmap(eval_fn)(params, key) if batched else eval_fn(params, key)


def _boundaries(start: int, num_steps: int, intervals: Iterable[int]) -> list[int]:
    """Returns the steps in (start, num_steps] where a chunk ends: multiples of any interval."""
    ends = {num_steps}
    for k in intervals:
        ends.update(range((start // k + 1) * k, num_steps, k))
    return sorted(s for s in ends if s > start)


def _first_nonfinite(
    metrics: Mapping[str, np.ndarray], skipping: bool
) -> tuple[int, str, Any] | None:
    """Returns (index in chunk, metric name, run indices) of the first non-finite metric."""
    names = ("param_norm",) if skipping else ("loss", "grad_norm", "param_norm")
    first = None
    for name in names:
        bad = ~np.isfinite(np.asarray(metrics[name], np.float64))  # (K,) or (N, K)
        steps_bad = bad.any(axis=0) if bad.ndim == 2 else bad
        if steps_bad.any():
            i = int(np.argmax(steps_bad))
            if first is None or i < first[0]:
                runs = np.flatnonzero(bad[:, i]).tolist() if bad.ndim == 2 else None
                first = (i, name, runs)
    return first


def fit(
    train_step: TrainStep,
    state: TrainState,
    batch_fn: BatchFn,
    num_steps: int,
    *,
    run_dir: str | os.PathLike | None = None,
    config: Any = None,
    eval_fn: Callable[[Any, Array], Mapping[str, Array]] | None = None,
    hooks: Sequence[Hook] = (),
    schedule: Schedule = Schedule(),
    mesh: Mesh | None = None,
    progress: bool | None = None,
    resume: bool = True,
    exit_on_interrupt: bool = True,
    early_stopping: EarlyStopping | None = None,
    tensorboard: bool = False,
) -> FitResult:
    """Returns the state after ``num_steps`` updates and the metrics history, training in chunks.

    Each chunk is one jitted :func:`run_steps` of up to ``schedule.chunk_size`` steps on
    device. A ``state`` whose ``step`` has shape ``(N,)`` (from
    ``jax.vmap(init_train_state)``) trains N runs as one program; metrics then hold N values
    each.

    Args:
      train_step: from :func:`make_train_step`.
      state: the initial state; when ``run_dir`` has checkpoints it is only the template
        (structure, shapes) for restoring the latest one.
      batch_fn: ``batch_fn(key, step) -> batch``, see :func:`run_steps`.
      num_steps: total number of updates of the run (not of this call).
      run_dir: directory for ``config.json``/``config.yaml``, ``metrics.jsonl``,
        ``checkpoints/<step>`` and ``summary.json``. ``None`` keeps everything in memory.
      config: a dataclass or dict saved as the run's config; on resume it must equal the
        saved one (ValueError otherwise).
      eval_fn: ``eval_fn(params, key) -> dict`` of scalars on held-out data, jitted; run at
        step 0, every ``schedule.eval_every`` steps and at the end; recorded as
        ``eval/<name>``.
      hooks: ``hook(state) -> dict`` called on the host at step 0, every
        ``schedule.hook_every`` steps and at the end; values (floats or arrays) are
        recorded under their keys.
      schedule: chunk size, evaluation, checkpoint and hook intervals (:class:`Schedule`).
      mesh: a ``Mesh`` with a ``"data"`` axis (:func:`data_parallel_mesh`); the state is
        replicated and each batch split along its leading axis. Default: all devices.
      progress: show a tqdm bar (step, loss, steps/s); default: only when stderr is a TTY.
      resume: continue from the latest checkpoint in ``run_dir``; ``False`` raises if there
        is one (it is never overwritten silently).
      exit_on_interrupt: on Ctrl-C, save a checkpoint of the last completed chunk, then
        ``SystemExit(130)`` if True, or return with ``interrupted=True`` if False. The
        first Ctrl-C takes effect when the running chunk ends; a second one at once.
      early_stopping: stop when a metric stops improving (:class:`EarlyStopping`); the
        run then ends with a row at the stopping step and ``summary.json`` says so.
      tensorboard: also write every scalar of every row to ``run_dir/tensorboard``
        (tensorboardX, the ``tensorboard`` extra); vmapped runs as ``<key>/run<i>``.

    The last row (at the last step) holds the evaluation and hook results of the final
    state and, under ``train/``, the training metrics of the last update, with the step
    they describe as ``train/step``.

    Raises:
      NonFiniteError: a loss, gradient norm or parameter norm became non-finite (only the
        parameter norm when skipping non-finite updates). Rows up to that step are written;
        no checkpoint after the last good one is.
      CheckpointError: the latest checkpoint cannot be read (the message names its path).
    """
    check_interval("num_steps", num_steps, allow_none=False)
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be a rnnjax.training.Schedule, got {type(schedule).__name__}"
        )
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    batched = np.ndim(state.step) == 1
    mesh = data_parallel_mesh() if mesh is None else mesh
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got {mesh.axis_names}")
    lead = jax.process_index() == 0  # only one host writes files and shows progress
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(
                f"early_stopping must be a rnnjax.training.EarlyStopping, got "
                f"{type(early_stopping).__name__}"
            )
        if batched:
            raise ValueError(
                "early_stopping needs a single run: vmapped runs (state.step of "
                f"shape {np.shape(state.step)}) would each stop at their own step"
            )
    if tensorboard and run_dir is None:
        raise ValueError("tensorboard=True needs a run_dir to write the event files to")
    processes.check_same_on_all_processes(
        state=state, num_steps=num_steps, schedule=schedule, config=config, resume=resume
    )

    state = replicate(state, mesh)
    history: list[dict] = []
    stack = contextlib.ExitStack()
    manager = best = writer = None
    if run_dir is not None:
        run_dir = os.path.abspath(os.fspath(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        files.check_or_save_config(run_dir, config, write=lead)
        manager = stack.enter_context(
            checkpoints.open_checkpoints(
                os.path.join(run_dir, "checkpoints"), keep=schedule.keep_checkpoints
            )
        )
        if early_stopping is not None:
            best = stack.enter_context(
                checkpoints.open_checkpoints(os.path.join(run_dir, "best"), keep=1)
            )
    with processes.note_failure(run_dir), stack:
        if manager is not None and manager.all_steps():
            if not resume:
                raise ValueError(
                    f"run_dir {run_dir} already has checkpoints "
                    f"{sorted(manager.all_steps())}; pass resume=True or a new run_dir"
                )
            state = checkpoints.restore(manager, state)
            start = checkpoints.checkpoint_step(state)
            # Rows from after the checkpoint (a crash between logging and saving) are redone.
            assert run_dir is not None  # a manager is made only for a run_dir
            history = [r for r in files.read_metrics(run_dir) if r["step"] < start]
            if lead:
                files.write_metrics(run_dir, history)
                print(
                    f"Resuming {run_dir} from step {start} (checkpoint "
                    f"{os.path.join(os.fspath(manager.directory), str(start))}).",
                    file=sys.stderr,
                )
        else:
            start = checkpoints.checkpoint_step(state)
            if run_dir is not None and lead:
                files.write_metrics(run_dir, [])
        if tensorboard and lead:
            assert run_dir is not None  # checked above
            writer = stack.enter_context(contextlib.closing(tensorboard_writer(run_dir, history)))
        if start > num_steps:
            raise ValueError(f"the state is at step {start}, past num_steps={num_steps}")
        return _loop(
            train_step,
            state,
            batch_fn,
            num_steps,
            start=start,
            history=history,
            run_dir=run_dir if lead else None,
            manager=manager,
            schedule=schedule,
            eval_fn=eval_fn,
            hooks=hooks,
            mesh=mesh,
            batched=batched,
            progress=(sys.stderr.isatty() if progress is None else progress) and lead,
            exit_on_interrupt=exit_on_interrupt,
            early_stopping=early_stopping,
            best=best,
            writer=writer,
        )


@contextlib.contextmanager
def _deferred_ctrl_c():
    """Yields ``pending() -> bool``: whether Ctrl-C was pressed, to be acted on at a safe point.

    Python raises KeyboardInterrupt wherever the main thread happens to be, and where that
    is a finaliser (a garbage-collected array's, say) Python prints "Exception ignored" and
    the interrupt is lost. So the first Ctrl-C only sets a flag that the loop checks after
    each chunk; a second one interrupts at once. Outside the main thread, signals cannot be
    handled and the default behaviour stays.
    """
    hits = []

    def handler(signum, frame):
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def _loop(
    train_step,
    state,
    batch_fn,
    num_steps,
    *,
    start,
    history,
    run_dir,
    manager,
    schedule,
    eval_fn,
    hooks,
    mesh,
    batched,
    progress,
    exit_on_interrupt,
    early_stopping,
    best,
    writer,
):
    from tqdm.auto import tqdm

    append = functools.partial(append_rows, run_dir=run_dir, writer=writer)
    watch = None if early_stopping is None else Watch(early_stopping, history)
    best_state, stopped_early = None, False
    if watch is not None and best is not None and best.all_steps():
        best_state = checkpoints.restore(best, state)

    skipping = isinstance(state.opt_state, optax.ApplyIfFiniteState)
    chunk_size = schedule.chunk_size
    eval_every = schedule.eval_every or num_steps
    ckpt_every = schedule.checkpoint_every or num_steps
    hook_every = schedule.hook_every or chunk_size
    t_start = time.perf_counter()
    bar = tqdm(
        total=num_steps,
        initial=start,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    last_saved = None
    if manager is not None and manager.all_steps():
        last_saved = os.path.join(os.fspath(manager.directory), str(max(manager.all_steps())))
    step = start
    pending: dict = {}  # eval/hook results at `step`, merged into that step's row
    interrupted = False
    try:
        with _deferred_ctrl_c() as ctrl_c_pressed:
            ends = _boundaries(start, num_steps, (chunk_size, eval_every, ckpt_every, hook_every))
            for end in [start, *ends]:
                if processes.any_process(ctrl_c_pressed()):  # all stop at the same step
                    raise KeyboardInterrupt
                if end > step:
                    t0 = time.perf_counter()
                    new_state, metrics = _run_chunk(
                        train_step, state, batch_fn, end - step, batched, mesh
                    )
                    metrics = jax.device_get(metrics)
                    dt = (time.perf_counter() - t0) / (end - step)
                    rows = metric_rows(metrics, step, end - step, batched, dt)
                    rows[0].update(pending)
                    pending = {}
                    bad = _first_nonfinite(metrics, skipping)
                    if bad is not None:
                        rows = rows[: bad[0] + 1]
                    append(history, rows)
                    if bad is not None:
                        raise nonfinite_error(step + bad[0], bad, manager, last_saved)
                    state, step = new_state, end
                    bar.update(end - bar.n)
                    bar.set_postfix(loss=f"{np.mean(rows[-1]['loss']):.4g}", refresh=False)
                # Events at `step`: eval and hooks describe the state after `step` updates.
                if eval_fn is not None and (step % eval_every == 0 or step == num_steps):
                    out = _evaluate(eval_fn, state.params, _eval_keys(state, batched), batched)
                    pending.update(
                        {f"eval/{k}": files.to_python(v) for k, v in jax.device_get(out).items()}
                    )
                if hooks and (step % hook_every == 0 or step == num_steps):
                    for hook in hooks:
                        pending.update({k: files.to_python(v) for k, v in hook(state).items()})
                if (
                    manager is not None
                    and step > start
                    and (step % ckpt_every == 0 or step == num_steps)
                ):
                    last_saved = checkpoints.save(manager, state)
                if watch is not None and watch.rule.metric in pending:
                    if watch.update(pending[watch.rule.metric], step):
                        best_state = state
                        if best is not None:
                            checkpoints.save(best, state)
                    if watch.exhausted and step < num_steps:
                        stopped_early = True
                        if manager is not None and step > start and step not in manager.all_steps():
                            last_saved = checkpoints.save(manager, state)
                        break
                elif watch is not None and step == 0:
                    raise ValueError(
                        f"early_stopping watches {watch.rule.metric!r}, which is not among "
                        f"the keys recorded at step {step}: {sorted(pending)} (evaluation "
                        f"keys are 'eval/<name>' of eval_fn's dict)"
                    )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted:
        # Ctrl-C can land between logging a chunk and taking its state: keep exactly the rows
        # before the state that is saved, as a resumed run expects.
        history[:] = [r for r in history if r["step"] < step]
        if run_dir is not None:
            files.write_metrics(run_dir, history)
        saved = checkpoints.save(manager, state) if manager is not None else None
        last_saved = saved or last_saved
        where = (
            f"checkpoint of step {step} saved to {saved}; run again to resume"
            if saved
            else "no run_dir, so nothing was saved"
        )
        if jax.process_index() == 0:
            print(f"Interrupted at step {step}: {where}.", file=sys.stderr)
    elif pending:
        last_train = next((r for r in reversed(history) if "loss" in r), None)
        train = (
            {}
            if last_train is None
            else {f"train/{k}": v for k, v in last_train.items() if k != "time_per_step"}
        )
        append(history, [{"step": step, **pending, **train}])
    best_step = None if watch is None else watch.best_step
    if run_dir is not None:
        write_fit_summary(
            run_dir,
            history,
            step,
            num_steps,
            interrupted,
            time.perf_counter() - t_start,
            last_saved,
            early={"stopped_early": stopped_early, "best_step": best_step, "best": watch.best}
            if watch is not None
            else None,
        )
    if interrupted and exit_on_interrupt:
        raise SystemExit(130)
    if watch is not None and watch.rule.restore_best and best_state is not None:
        state = best_state
    return FitResult(state, history, interrupted, stopped_early, best_step)


def _eval_keys(state: TrainState, batched: bool) -> Array:
    return jax.vmap(eval_key)(state.key, state.step) if batched else eval_key(state.key, state.step)
