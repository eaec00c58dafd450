"""The pure core of training: a train state, one Optax step, and a scanned loop of steps.

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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
Batch = Any
Metrics = dict[str, Array]
LossFn = Callable[[Any, Batch, Array], tuple[Array, Mapping[str, Array]]]
BatchFn = Callable[[Array, Array], Batch]
TrainStep = Callable[["TrainState", Batch], tuple["TrainState", Metrics]]
Hook = Callable[["TrainState"], Mapping[str, Any]]


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


def _injected_learning_rates(opt_state: Any) -> list[tuple[str, Array]]:
    """Returns ``(path, value)`` of each learning rate ``optax.inject_hyperparams`` put in the state.

    Only values in a ``hyperparams`` dict count: with a schedule, the state also holds the
    schedule's own state under ``hyperparams_states['learning_rate']``, which is not a rate.
    """
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate")
    return [
        (jax.tree_util.keystr(path), value)
        for path, value in found
        if len(path) >= 2 and getattr(path[-2], "name", None) == "hyperparams"
    ]


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
        learning rate (a constant or a schedule) to appear in the metrics (and to vmap over
        learning rates): the rate the update of step ``s`` used, ``schedule(s)``.
      skip_nonfinite: ``False`` (default) applies every update, so a non-finite gradient
        makes the parameters non-finite and :func:`fit` stops. ``True`` wraps the optimizer
        in ``optax.apply_if_finite`` so updates with non-finite gradients are skipped and
        counted (``metrics["nonfinite_count"]``); an int ``n`` gives up after ``n``
        consecutive skips. Initialise the state with the same value.
      learning_rate: a float or schedule ``step -> lr`` to record as
        ``metrics["learning_rate"]`` when the optimizer state holds not exactly one injected
        ``learning_rate`` (with several, as from ``optax.multi_transform``, and no
        ``learning_rate`` here, a warning says none is recorded).

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
        injected = _injected_learning_rates(opt_state)
        lr = injected[0][1] if len(injected) == 1 else None
        if lr is None and learning_rate is not None:
            lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
        elif len(injected) > 1:
            warnings.warn(
                f"the optimizer state holds {len(injected)} learning rates (at "
                f"{', '.join(path for path, _ in injected)}), so none is recorded as "
                f"metrics['learning_rate']; pass make_train_step(..., learning_rate=...) "
                f"to record one",
                stacklevel=2,
            )
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
