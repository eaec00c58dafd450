"""Early stopping for vmapped seeds: a :func:`rnnjax.training.fit` hook that keeps each seed's best parameters."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


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
    best = {"params": jax.tree.map(np.asarray, params), "loss": np.full(n, np.inf),
            "step": np.zeros(n, int)}

    def hook(state):
        loss = np.asarray(validation_loss(state.params))
        better = loss < best["loss"]
        # On the host, in NumPy: an eager jnp.where would compile once per parameter shape.
        best["params"] = jax.tree.map(
            lambda new, old: np.where(better.reshape((-1,) + (1,) * (old.ndim - 1)),
                                      np.asarray(new), old),
            state.params, best["params"])
        best["step"] = np.where(better, int(np.asarray(state.step).reshape(-1)[0]), best["step"])
        best["loss"] = np.minimum(loss, best["loss"])
        return {"val_loss": loss}

    return hook, best
