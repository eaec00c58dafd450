"""Several seeds trained as one vmapped program: their initial states, and early stopping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from rnnjax import training


def init_states(
    model: Any,
    input_size: int,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    num_seeds: int,
) -> training.TrainState:
    """Returns the ``num_seeds`` training states stacked on a leading axis, for a vmapped ``fit``.

    Seed i's key ``split(key, num_seeds)[i]`` splits into the key of its parameters
    (``model.init``) and the key of its data order. Each seed is initialised by one call of
    a jitted ``model.init``, not under ``vmap``: ``jit(vmap(model.init))`` with the
    orthogonal recurrent initialiser (a QR decomposition per gate) had not finished after
    5 minutes for a bidirectional GRU at H = 64, 5 seeds, on this (busy) 2-core CPU, where
    the loop takes 14 s; both give the same parameters (checked at H = 32).
    """
    init = jax.jit(lambda k: model.init(k, input_size))
    pairs = [jax.random.split(k) for k in jax.random.split(key, num_seeds)]
    # Stacked in NumPy: an eager jnp.stack would compile once per parameter shape.
    params = jax.tree.map(
        lambda *leaves: np.stack(leaves), *[jax.device_get(init(k_init)) for k_init, _ in pairs]
    )
    data_keys = np.stack([np.asarray(k_data) for _, k_data in pairs])
    return jax.jit(jax.vmap(lambda k, p: training.init_train_state(k, p, optimizer)))(
        data_keys, params
    )


def keep_best(validation_loss: Callable[[Any], Any], params: Any) -> tuple[Callable, dict]:
    """Returns ``(hook, best)``: a ``fit`` hook and the record it keeps up to date.

    Args:
      validation_loss: ``validation_loss(params) -> (N,)``, jitted and vmapped over the N
        seeds (lower is better).
      params: the seeds' initial parameters (leading axis N), the record's starting point.

    ``best`` holds ``"params"`` (each seed's parameters at its lowest validation loss so
    far, as NumPy arrays), ``"loss"`` ``(N,)`` and ``"step"`` ``(N,)``; the hook records
    ``val_loss``.
    """
    n = jax.tree.leaves(params)[0].shape[0]
    best = {
        "params": jax.tree.map(np.asarray, params),
        "loss": np.full(n, np.inf),
        "step": np.zeros(n, int),
    }

    def hook(state):
        loss = np.asarray(validation_loss(state.params))
        better = loss < best["loss"]
        # On the host, in NumPy: an eager jnp.where would compile once per parameter shape.
        best["params"] = jax.tree.map(
            lambda new, old: np.where(
                better.reshape((-1,) + (1,) * (old.ndim - 1)), np.asarray(new), old
            ),
            state.params,
            best["params"],
        )
        best["step"] = np.where(better, int(np.asarray(state.step).reshape(-1)[0]), best["step"])
        best["loss"] = np.minimum(loss, best["loss"])
        return {"val_loss": loss}

    return hook, best
