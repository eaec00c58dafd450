"""Many training runs of one RNN on the adding problem as one vmapped program: a grid of
optimizer hyperparameters x seeds. Shared by ``pascanu2013.py`` (clipping thresholds) and
``le2015_irnn.py`` (learning rates).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import readouts, tasks, training


def train_on_adding(
    cell: rnnjax.Cell,
    optimizer: optax.GradientTransformation,
    hyperparams: list[dict[str, float]],
    *,
    length: int,
    batch_size: int,
    num_steps: int,
    num_seeds: int,
    seed: int,
    test_size: int = 2000,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Returns test MSEs ``(len(hyperparams), num_seeds)`` after training every run.

    The model is ``cell`` + a linear readout of the last state (``many_to_one``), trained on
    fresh batches of the adding problem of length ``length`` with MSE. Run (i, s) starts
    from ``optimizer``'s state with ``hyperparams[i]`` set by name (the optimizer must
    expose them with ``optax.inject_hyperparams``); seed s has the same initialisation and
    data order for every i, a paired comparison. Non-finite updates are skipped (and
    counted); a run whose parameters overflow scores ``inf``.

    Returns ``{"test_mse", "grad_norm_median_start" (the raw gradient norm of the first
    100 steps, median over runs), "skipped_updates", "baseline"}``.
    """
    task = tasks.adding_problem(length)
    model = rnnjax.many_to_one(rnnjax.recurrent(cell), readouts.linear(1))

    def mse(params, xs, targets):
        return jnp.mean(jnp.square(jax.vmap(lambda x: model.apply(params, x))(xs)[:, 0] - targets))

    def loss_fn(params, batch, key):
        del key
        return mse(params, *batch), {}

    states = []
    for values in hyperparams:
        for s in range(num_seeds):
            key = jax.random.fold_in(jax.random.key(seed), s)
            state = training.init_train_state(
                key, model.init(key, task.input_size), optimizer, skip_nonfinite=True
            )
            values = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
            states.append(
                state._replace(opt_state=optax.tree_utils.tree_set(state.opt_state, **values))
            )
    states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    train_step = training.make_train_step(loss_fn, optimizer, skip_nonfinite=True)

    def batch_fn(key, step):
        del step
        return tasks.sample_batch(task, key, batch_size)

    # In chunks of run_steps rather than fit: runs that are meant to blow up (no clipping)
    # would stop fit at their first non-finite parameter.
    chunk = max(1, num_steps // 20)
    run = jax.jit(
        jax.vmap(lambda st, n: training.run_steps(train_step, st, batch_fn, n), in_axes=(0, None)),
        static_argnums=1,
    )
    norms, done = [], 0
    bar = _progress(num_steps, progress)
    while done < num_steps:
        n = min(chunk, num_steps - done)
        states, metrics = run(states, n)
        norms.append(np.asarray(metrics["grad_norm"], np.float64))
        done += n
        bar.update(n)
    bar.close()
    test_xs, test_y = tasks.sample_batch(task, jax.random.key(10_000 + seed), test_size)
    test = np.asarray(jax.jit(jax.vmap(lambda p: mse(p, test_xs, test_y)))(states.params))
    shape = (len(hyperparams), num_seeds)
    norms = np.concatenate(norms, axis=1)  # (runs, steps)
    return {
        "test_mse": np.where(np.isfinite(test), test, np.inf).reshape(shape),
        "grad_norm_median_start": float(np.nanmedian(norms[:, :100])),
        "skipped_updates": np.asarray(states.opt_state.total_notfinite).reshape(shape),
        "baseline": task.baseline_loss,
    }


def _progress(total: int, show: bool | None):
    """Returns a tqdm bar (or a silent stand-in) over ``total`` steps."""
    import sys

    from tqdm import tqdm

    return tqdm(
        total=total,
        disable=not (sys.stderr.isatty() if show is None else show),
        desc="training",
        unit="step",
    )
