"""Training with Optax: a train state, a jitted step, a scanned loop, and a resumable driver.

The pieces, from the inside out:

* :class:`TrainState` — ``(params, opt_state, step, key)``, a plain pytree.
* :func:`make_train_step` — ``train_step(state, batch) -> (state, metrics)``: one
  ``jax.value_and_grad`` and one Optax update. Gradient clipping by global norm
  (Pascanu, Mikolov & Bengio 2013) and learning-rate schedules are ordinary Optax
  transformations in the optimizer you pass (``optax.chain(optax.clip_by_global_norm(1.0),
  optax.inject_hyperparams(optax.adam)(learning_rate=schedule))``).
* :func:`run_steps` — ``num_steps`` train steps as one ``lax.scan`` on device, with the
  batch of step ``s`` made by ``batch_fn(key, s)`` from the state's key. Data order is a
  pure function of (seed, step), which is what makes a resumed run bitwise identical to an
  uninterrupted one and makes ``jax.vmap`` over seeds (or learning rates) one program.
* :func:`fit` — the host loop: chunks of ``run_steps``, a progress bar, a run directory
  (config, ``metrics.jsonl``, orbax checkpoints, ``summary.json``), evaluation, hooks,
  resumption, Ctrl-C, non-finite detection, and data parallelism over a device ``Mesh``.

Step numbering: a metrics row with ``"step": s`` describes the parameters after ``s``
updates — the training loss of ``batch_fn(key, s)`` at those parameters, their norm, and
(when they run at ``s``) evaluation and hook results. A checkpoint named ``s`` holds the
state after ``s`` updates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnjax import checkpoints

Array = jax.Array
Batch = Any
Metrics = dict[str, Array]
LossFn = Callable[[Any, Batch, Array], tuple[Array, Mapping[str, Array]]]
BatchFn = Callable[[Array, Array], Batch]
TrainStep = Callable[["TrainState", Batch], tuple["TrainState", Metrics]]
Hook = Callable[["TrainState"], Mapping[str, Any]]

DATA_AXIS = "data"
_log = logging.getLogger(__name__)


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next, as a plain pytree.

    Attributes:
      params: the model parameters (any pytree of arrays).
      opt_state: the Optax optimizer state.
      step: int32 scalar, the number of updates applied so far (``(N,)`` when N runs are
        vmapped).
      key: a raw ``uint32[2]`` PRNG key, fixed for the run; the data of step ``s`` and any
        dropout are derived from it with ``jax.random.fold_in(·, s)``, never by splitting
        it in place, so that every step's randomness is a function of (key, step) alone.
    """

    params: Any
    opt_state: Any
    step: Array
    key: Array


class NonFiniteError(FloatingPointError):
    """Training met a non-finite metric; ``step``, ``metric`` and ``checkpoint`` say where."""

    def __init__(self, message: str, *, step: int, metric: str, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------------------------------
# The pure part: state, step, scanned loop.


def _skipping(optimizer: optax.GradientTransformation, skip_nonfinite: bool | int):
    """Returns ``optimizer`` wrapped in ``optax.apply_if_finite`` when asked to skip."""
    if isinstance(skip_nonfinite, bool):
        if not skip_nonfinite:
            return optimizer
        max_errors = np.iinfo(np.int32).max  # never give up: skip every non-finite update
    elif isinstance(skip_nonfinite, int) and skip_nonfinite >= 0:
        max_errors = skip_nonfinite
    else:
        raise ValueError(
            f"skip_nonfinite must be a bool or a non-negative int (the number of consecutive "
            f"non-finite updates to skip), got {skip_nonfinite!r}"
        )
    return optax.apply_if_finite(optimizer, max_consecutive_errors=max_errors)


def _raw_key(key: Any) -> Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
            f"got an array of dtype {key.dtype} and shape {key.shape}"
        )
    return key


def init_train_state(
    key: Array,
    params: Any,
    optimizer: optax.GradientTransformation,
    *,
    skip_nonfinite: bool | int = False,
) -> TrainState:
    """Returns the state at step 0: ``TrainState(params, optimizer.init(params), 0, key)``.

    Args:
      key: the run's PRNG key (typed or raw); it drives the data order and dropout. Use a
        key independent of the one that initialised ``params``.
      params: the initial parameters.
      optimizer: an Optax transformation; pass the same one to :func:`make_train_step`.
      skip_nonfinite: must equal the value given to :func:`make_train_step` (it wraps the
        optimizer in ``optax.apply_if_finite``, which changes the state's structure).

    To train N seeds at once: ``jax.vmap(lambda k: init_train_state(k, init(k), opt))(keys)``.
    """
    optimizer = _skipping(optimizer, skip_nonfinite)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), _raw_key(key))


def _step_keys(key: Array, step: Array) -> tuple[Array, Array]:
    """Returns (data_key, loss_key) of ``step``: independent streams, functions of (key, step)."""
    train_stream = jax.random.fold_in(key, 0)
    return tuple(jax.random.split(jax.random.fold_in(train_stream, step)))


def eval_key(key: Array, step: Array) -> Array:
    """Returns the key :func:`fit` passes to ``eval_fn`` at ``step``: a stream apart from training."""
    return jax.random.fold_in(jax.random.fold_in(key, 1), step)


def _learning_rate(opt_state: Any) -> Array | None:
    try:
        return optax.tree_utils.tree_get(opt_state, "learning_rate")
    except KeyError:  # several injected learning rates (e.g. multi_transform): none is "the" lr
        return None


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    skip_nonfinite: bool | int = False,
    learning_rate: float | Callable[[Array], Array] | None = None,
) -> TrainStep:
    """Returns ``train_step(state, batch) -> (state, metrics)``, one Optax update.

    ``(loss, aux), g = value_and_grad(loss_fn)(params, batch, key)``, then
    ``params <- params + optimizer.update(g, opt_state, params)``, ``step <- step + 1``.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> (loss, aux)`` with a scalar ``loss`` and a
        dict ``aux`` of scalar metrics; ``key`` is fresh each step (for dropout).
      optimizer: an Optax transformation. Wrap it in ``optax.inject_hyperparams`` for its
        learning rate to appear in the metrics (and to vmap over learning rates).
      skip_nonfinite: ``False`` (default) applies every update, so a non-finite gradient
        makes the parameters non-finite and :func:`fit` stops. ``True`` wraps the optimizer
        in ``optax.apply_if_finite`` so updates with non-finite gradients are skipped and
        counted (``metrics["nonfinite_count"]``); an int ``n`` gives up after ``n``
        consecutive skips. Initialise the state with the same value.
      learning_rate: a float or schedule ``step -> lr`` to record as
        ``metrics["learning_rate"]`` when the optimizer state holds no ``learning_rate``.

    Returns:
      ``train_step``; its metrics are scalars: ``loss``, ``grad_norm`` (global norm of the
      raw gradient, before any clipping), ``param_norm`` (of the parameters the loss was
      computed at), ``learning_rate`` (when known), ``nonfinite`` (1 if the loss or gradient
      was non-finite), ``nonfinite_count`` (skipped updates so far, when skipping), and
      everything in ``aux``.
    """
    optimizer = _skipping(optimizer, skip_nonfinite)
    skipping = skip_nonfinite is not False

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        if skipping and not isinstance(state.opt_state, optax.ApplyIfFiniteState):
            raise TypeError(
                "make_train_step(..., skip_nonfinite=...) needs a state made by "
                "init_train_state(..., skip_nonfinite=...) with the same value; got an "
                f"opt_state of type {type(state.opt_state).__name__}"
            )
        _, loss_key = _step_keys(state.key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, loss_key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        nonfinite = jnp.logical_not(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
        metrics = dict(aux)
        metrics.update(
            loss=loss,
            grad_norm=grad_norm,
            param_norm=optax.global_norm(state.params),
            nonfinite=nonfinite.astype(jnp.int32),
        )
        lr = _learning_rate(opt_state)
        if lr is None and learning_rate is not None:
            lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
        if lr is not None:
            metrics["learning_rate"] = jnp.asarray(lr, jnp.float32)
        if isinstance(opt_state, optax.ApplyIfFiniteState):
            metrics["nonfinite_count"] = opt_state.total_notfinite
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    return train_step


def run_steps(
    train_step: TrainStep, state: TrainState, batch_fn: BatchFn, num_steps: int
) -> tuple[TrainState, Metrics]:
    """Returns (state after ``num_steps`` updates, metrics stacked to ``(num_steps,)`` each).

    One ``lax.scan``: at each step ``s = state.step`` the batch is ``batch_fn(data_key, s)``
    with ``data_key`` derived from ``(state.key, s)``, so the data order depends only on the
    seed and the step — never on how the run was chunked, interrupted or resumed.
    ``batch_fn`` should make the batch on device (random generation, or indexing into
    arrays closed over).

    Jit with ``jax.jit(run_steps, static_argnums=(0, 2, 3))``; for N seeds or
    hyperparameters, ``jax.vmap(lambda s: run_steps(train_step, s, batch_fn, n))(states)``.
    """

    def body(state, _):
        data_key, _ = _step_keys(state.key, state.step)
        return train_step(state, batch_fn(data_key, state.step))

    return jax.lax.scan(body, state, None, length=num_steps)


# ---------------------------------------------------------------------------------------------
# Data parallelism.


def use_cpu_cores(num: int | None = None) -> int:
    """Makes JAX show the host CPU as ``num`` devices, so that data parallelism uses every core.

    One XLA:CPU program runs a recurrent loop on one core: the matmuls of a step are too
    small for its thread pool. With one CPU device per core, :func:`fit` (whose default
    mesh is every device) and any ``jit`` over a batch split with :func:`shard_batch` run
    one slice of the batch per core: an LSTM's fwd+bwd at B=32, T=200, H=128 went from
    56.3 ms to 26.2 ms on two cores (docs/benchmarks.md). It changes nothing on GPU or
    TPU, and it takes precedence over ``--xla_force_host_platform_device_count``.

    Call it right after ``import rnnjax``, before JAX computes anything: JAX fixes its CPU
    devices when its backend starts.

    Args:
      num: the number of CPU devices; default: the cores this process may run on.

    Returns:
      ``num``.

    Raises:
      ValueError: ``num`` is not a positive int.
      RuntimeError: JAX's backend has already started with another number of CPU devices.
    """
    if num is None:
        num = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num must be a positive int (CPU devices), got {num!r}")
    num = int(num)
    try:
        jax.config.update("jax_num_cpu_devices", num)
    except RuntimeError:  # the backend has started: fine if it has what was asked
        have = len(jax.devices("cpu"))
        if have != num:
            raise RuntimeError(
                f"use_cpu_cores(num={num}) must run before JAX computes anything: its CPU "
                f"backend already started with {have} device(s); call it right after "
                f"`import rnnjax`"
            ) from None
    return num


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Returns a 1-D ``Mesh`` with axis ``"data"`` over ``devices`` (default: all, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must be a non-empty sequence of jax devices, got []")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Returns ``batch`` with every leaf's leading (batch) axis split over the mesh's devices.

    Usable inside ``jit`` (a sharding constraint) and outside it (a ``device_put``). Scalars
    are replicated. Raises ValueError if a leading axis is not divisible by the device count.
    """
    n = mesh.devices.size

    def put(x):
        shape = jnp.shape(x)
        if not shape:
            spec = PartitionSpec()
        elif shape[0] % n:
            raise ValueError(
                f"batch leading axis must be divisible by the {n} devices of the mesh, got "
                f"a leaf of shape {shape}; change the batch size or pass mesh="
                f"data_parallel_mesh(jax.devices()[:k])"
            )
        else:
            spec = PartitionSpec(DATA_AXIS)
        sharding = NamedSharding(mesh, spec)
        if isinstance(x, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(x, sharding)
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Returns ``tree`` with every array replicated on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


# ---------------------------------------------------------------------------------------------
# Run directory: config and metrics.


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def save_config(run_dir: str | os.PathLike, config: Any) -> str:
    """Returns the path of ``config.json`` written (with ``config.yaml``) into ``run_dir``."""
    import yaml

    d = _config_dict(config)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    _write_atomic(path, json.dumps(d, indent=2, sort_keys=True) + "\n")
    _write_atomic(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(d, sort_keys=True))
    return path


def load_config(path: str | os.PathLike, cls: type | None = None) -> Any:
    """Returns the config in ``path`` (a run dir, ``.json`` or ``.yaml``), as ``cls(**d)`` if given."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file at {path}")
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(f)
        else:
            d = json.load(f)
    return cls(**d) if cls is not None else d


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Returns the rows of ``run_dir/metrics.jsonl``, one dict per step, in step order."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _to_python(x: Any) -> Any:
    a = np.asarray(x)
    if a.ndim == 0:
        return a.item()
    return a.tolist()


# ---------------------------------------------------------------------------------------------
# The host loop.


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState` (on the mesh's devices).
      history: one dict per step (see the module docstring for what ``step`` means), the
        same rows as ``metrics.jsonl``; values are floats (lists of N floats for N vmapped
        runs).
      interrupted: True if Ctrl-C stopped the run (with ``exit_on_interrupt=False``).
    """

    state: TrainState
    history: list[dict]
    interrupted: bool


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


def _check_interval(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")


def _first_nonfinite(metrics: Mapping[str, np.ndarray], skipping: bool) -> tuple[int, str, Any] | None:
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
    chunk_size: int = 100,
    eval_fn: Callable[[Any, Array], Mapping[str, Array]] | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    hooks: Sequence[Hook] = (),
    hook_every: int | None = None,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    resume: bool = True,
    exit_on_interrupt: bool = True,
) -> FitResult:
    """Returns the state after ``num_steps`` updates and the metrics history, training in chunks.

    Each chunk is one jitted :func:`run_steps` of up to ``chunk_size`` steps on device; chunks
    end at every multiple of ``chunk_size``, ``eval_every``, ``hook_every`` and
    ``checkpoint_every`` (make them multiples of ``chunk_size`` to compile one program).
    A ``state`` whose ``step`` has shape ``(N,)`` (from ``jax.vmap(init_train_state)``) trains
    N runs as one program; metrics then hold N values each.

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
      chunk_size: steps per device program between host synchronisations.
      eval_fn: ``eval_fn(params, key) -> dict`` of scalars on held-out data, jitted; run at
        step 0, every ``eval_every`` steps and at the end; recorded as ``eval/<name>``.
      eval_every, checkpoint_every, hook_every: intervals in steps (``None``: eval and
        checkpoint only at the end, hooks at every chunk boundary).
      keep_checkpoints: how many of the latest checkpoints to keep.
      hooks: ``hook(state) -> dict`` called on the host at step 0, every ``hook_every`` steps
        and at the end; values (floats or arrays) are recorded under their keys.
      mesh: a ``Mesh`` with a ``"data"`` axis (:func:`data_parallel_mesh`); the state is
        replicated and each batch split along its leading axis. Default: all devices.
      progress: show a tqdm bar (step, loss, steps/s); default: only when stderr is a TTY.
      resume: continue from the latest checkpoint in ``run_dir``; ``False`` raises if there
        is one (it is never overwritten silently).
      exit_on_interrupt: on Ctrl-C, save a checkpoint of the last completed chunk, then
        ``SystemExit(130)`` if True, or return with ``interrupted=True`` if False. The
        first Ctrl-C takes effect when the running chunk ends; a second one at once.

    Raises:
      NonFiniteError: a loss, gradient norm or parameter norm became non-finite (only the
        parameter norm when skipping non-finite updates). Rows up to that step are written;
        no checkpoint after the last good one is.
      CheckpointError: the latest checkpoint cannot be read (the message names its path).
    """
    _check_interval("num_steps", num_steps, allow_none=False)
    for name, value in (("chunk_size", chunk_size), ("eval_every", eval_every),
                        ("checkpoint_every", checkpoint_every), ("hook_every", hook_every),
                        ("keep_checkpoints", keep_checkpoints)):
        _check_interval(name, value, allow_none=name != "chunk_size")
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    batched = jnp.ndim(state.step) == 1
    mesh = data_parallel_mesh() if mesh is None else mesh
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got {mesh.axis_names}")
    lead = jax.process_index() == 0  # only one host writes files and shows progress
    hook_every = chunk_size if hook_every is None else hook_every
    ckpt_every = checkpoint_every or num_steps
    eval_every_ = eval_every or num_steps

    state = replicate(state, mesh)
    history: list[dict] = []
    ckpt_ctx = contextlib.nullcontext(None)
    if run_dir is not None:
        run_dir = os.path.abspath(os.fspath(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        _check_or_save_config(run_dir, config, lead)
        ckpt_ctx = checkpoints.open_checkpoints(os.path.join(run_dir, "checkpoints"),
                                                keep=keep_checkpoints)
    with ckpt_ctx as manager:
        if manager is not None and manager.all_steps():
            if not resume:
                raise ValueError(f"run_dir {run_dir} already has checkpoints "
                                 f"{sorted(manager.all_steps())}; pass resume=True or a new run_dir")
            state = checkpoints.restore(manager, state)
            start = checkpoints.checkpoint_step(state)
            # Rows from after the checkpoint (a crash between logging and saving) are redone.
            history = [r for r in read_metrics(run_dir) if r["step"] < start]
            if lead:
                _write_atomic(os.path.join(run_dir, "metrics.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in history))
            _log.info("resumed %s from step %d", run_dir, start)
        else:
            start = checkpoints.checkpoint_step(state)
            if run_dir is not None and lead:
                _write_atomic(os.path.join(run_dir, "metrics.jsonl"), "")
        if start > num_steps:
            raise ValueError(f"the state is at step {start}, past num_steps={num_steps}")
        return _loop(
            train_step, state, batch_fn, num_steps, start=start, history=history,
            run_dir=run_dir if lead else None, manager=manager, chunk_size=chunk_size,
            eval_fn=eval_fn, eval_every=eval_every_, ckpt_every=ckpt_every,
            hooks=hooks, hook_every=hook_every, mesh=mesh, batched=batched,
            progress=(sys.stderr.isatty() if progress is None else progress) and lead,
            exit_on_interrupt=exit_on_interrupt,
        )


def _check_or_save_config(run_dir: str, config: Any, lead: bool) -> None:
    if config is None:
        return
    path = os.path.join(run_dir, "config.json")
    new = json.loads(json.dumps(_config_dict(config)))
    if os.path.exists(path):
        old = load_config(path)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"config differs from the one saved in {path} (keys {changed}); a run dir "
                f"holds one run — use a new run_dir"
            )
    elif lead:
        save_config(run_dir, config)


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


def _loop(train_step, state, batch_fn, num_steps, *, start, history, run_dir, manager,
          chunk_size, eval_fn, eval_every, ckpt_every, hooks, hook_every, mesh, batched,
          progress, exit_on_interrupt):
    from tqdm.auto import tqdm

    skipping = isinstance(state.opt_state, optax.ApplyIfFiniteState)
    metrics_path = os.path.join(run_dir, "metrics.jsonl") if run_dir else None
    t_start = time.perf_counter()
    bar = tqdm(total=num_steps, initial=start, unit="step", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
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
                if ctrl_c_pressed():
                    raise KeyboardInterrupt
                if end > step:
                    t0 = time.perf_counter()
                    new_state, metrics = _run_chunk(train_step, state, batch_fn, end - step,
                                                    batched, mesh)
                    metrics = jax.device_get(metrics)
                    dt = (time.perf_counter() - t0) / (end - step)
                    rows = _rows(metrics, step, end - step, batched, dt)
                    rows[0].update(pending)
                    pending = {}
                    bad = _first_nonfinite(metrics, skipping)
                    if bad is not None:
                        rows = rows[: bad[0] + 1]
                    _append(history, rows, metrics_path)
                    if bad is not None:
                        raise _nonfinite_error(step + bad[0], bad, manager, last_saved)
                    state, step = new_state, end
                    bar.update(end - bar.n)
                    bar.set_postfix(loss=f"{np.mean(rows[-1]['loss']):.4g}", refresh=False)
                # Events at `step`: eval and hooks describe the state after `step` updates.
                if eval_fn is not None and (step % eval_every == 0 or step == num_steps):
                    out = _evaluate(eval_fn, state.params, _eval_keys(state, batched), batched)
                    pending.update({f"eval/{k}": _to_python(v) for k, v in jax.device_get(out).items()})
                if hooks and (step % hook_every == 0 or step == num_steps):
                    for hook in hooks:
                        pending.update({k: _to_python(v) for k, v in hook(state).items()})
                if manager is not None and step > start and (step % ckpt_every == 0 or step == num_steps):
                    last_saved = checkpoints.save(manager, state)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted:
        # Ctrl-C can land between logging a chunk and taking its state: keep exactly the rows
        # before the state that is saved, as a resumed run expects.
        history[:] = [r for r in history if r["step"] < step]
        if metrics_path is not None:
            _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
        saved = checkpoints.save(manager, state) if manager is not None else None
        last_saved = saved or last_saved
        where = (f"checkpoint of step {step} saved to {saved}; run again to resume" if saved
                 else "no run_dir, so nothing was saved")
        print(f"Interrupted at step {step}: {where}.", file=sys.stderr)
    elif pending:
        _append(history, [{"step": step, **pending}], metrics_path)
    if run_dir is not None:
        _write_summary(run_dir, history, step, num_steps, interrupted,
                       time.perf_counter() - t_start, last_saved)
    if interrupted and exit_on_interrupt:
        raise SystemExit(130)
    return FitResult(state, history, interrupted)


def _rows(metrics: Mapping[str, np.ndarray], start: int, n: int, batched: bool,
          time_per_step: float) -> list[dict]:
    """Returns one dict per step of a chunk from metrics stacked to (n,) or (N, n)."""
    rows = []
    for i in range(n):
        row = {"step": start + i}
        for k, v in metrics.items():
            row[k] = _to_python(v[:, i] if batched else v[i])
        row["time_per_step"] = time_per_step
        rows.append(row)
    return rows


def _append(history: list[dict], rows: list[dict], path: str | None) -> None:
    history.extend(rows)
    if path is not None:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))


def _eval_keys(state: TrainState, batched: bool) -> Array:
    return jax.vmap(eval_key)(state.key, state.step) if batched else eval_key(state.key, state.step)


def _nonfinite_error(step: int, bad: tuple, manager: Any, last_saved: str | None) -> NonFiniteError:
    _, metric, runs = bad
    where = f"step {step}" + (f" (runs {runs})" if runs is not None else "")
    if manager is None:
        ckpt = "no run_dir, so no checkpoint was kept"
    elif last_saved is None:
        ckpt = "no checkpoint had been saved yet"
    else:
        ckpt = f"the last good checkpoint, {last_saved}, is untouched"
    hint = ("" if metric == "param_norm" else
            "; to skip such updates instead, use make_train_step(..., skip_nonfinite=True) "
            "and init_train_state(..., skip_nonfinite=True)")
    return NonFiniteError(
        f"training stopped: {metric} is not finite at {where}; {ckpt}{hint}",
        step=step, metric=metric, checkpoint=last_saved,
    )


def _write_summary(run_dir: str, history: list[dict], step: int, num_steps: int,
                   interrupted: bool, wall_time: float, last_saved: str | None) -> None:
    last_train = next((r for r in reversed(history) if "loss" in r), {})
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    summary = {
        "step": step,
        "num_steps": num_steps,
        "finished": step == num_steps,
        "interrupted": interrupted,
        "wall_time_s": wall_time,
        "last_checkpoint": last_saved,
        "last_train_metrics": last_train,
        "last_eval": {k: v for k, v in evals[-1].items() if k == "step" or k.startswith("eval/")}
        if evals else None,
    }
    _write_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
