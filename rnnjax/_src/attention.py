"""The implementation of :mod:`rnnjax.attention` (its docstring describes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, padding
from rnnjax._src.readouts import linear

Array = jax.Array


class Score(NamedTuple):
    """An attention score as pure functions.

    Attributes:
      init: ``init(key, query_size, annotation_size) -> params``.
      keys: ``keys(params, annotations: (T, A)) -> (T, K)``, the part of the score that
        depends on the annotations alone (computed once per source).
      scores: ``scores(params, query: (Q,), keys: (T, K)) -> (T,)``, unnormalised.
      name: what the score is, for messages.
    """

    init: Callable[[Array, int, int], Any]
    keys: Callable[[Any, Array], Array]
    scores: Callable[[Any, Array, Array], Array]
    name: str


class Memory(NamedTuple):
    """A source prepared for attention: what every decoder step reads.

    Attributes:
      annotations: ``(T, A)``, zero at padded steps.
      keys: ``(T, K)``, the score's ``keys`` of the cleaned annotations.
      length: valid source steps (``()`` int32), or None when all are valid.
    """

    annotations: Array
    keys: Array
    length: Array | None


def additive(size: int) -> Score:
    """Returns Bahdanau's additive score ``e_j = v^T tanh(W s + U h_j)``.

    Bahdanau, Cho & Bengio 2015, eq. 6 with appendix A.1.2: ``W: (Q, size)``,
    ``U: (A, size)``, ``v: (size,)``, no biases. ``s`` is the query (the decoder's previous
    state ``s_{i-1}`` in their decoder), ``h_j`` the annotation.

    Params: ``{"w": (Q, size), "u": (A, size), "v": (size,)}``.
    """
    checks.positive_int("size", size)
    project = linear(size, use_bias=False)

    def init(key, query_size, annotation_size):
        k_w, k_u, k_v = jax.random.split(key, 3)
        return {
            "w": project.init(k_w, query_size)["w"],
            "u": project.init(k_u, annotation_size)["w"],
            "v": linear(1, use_bias=False).init(k_v, size)["w"][:, 0],
        }

    def keys(params, annotations):
        return annotations @ params["u"]

    def scores(params, query, keys):
        return jnp.tanh(query @ params["w"] + keys) @ params["v"]

    return Score(init, keys, scores, f"additive({size})")


def general() -> Score:
    """Returns Luong's multiplicative ("general") score ``e_j = s^T W h_j``.

    Luong, Pham & Manning 2015, eq. 8: ``W: (Q, A)``; ``s`` is the query (the decoder's
    current hidden state ``h_t`` in their decoder), ``h_j`` the annotation (their
    ``h̄_s``). The keys are ``W h_j``, so each step's scores are one matrix-vector product.

    Params: ``{"w": (Q, A)}``.
    """

    def init(key, query_size, annotation_size):
        return {"w": linear(annotation_size, use_bias=False).init(key, query_size)["w"]}

    def keys(params, annotations):
        return annotations @ params["w"].T

    def scores(params, query, keys):
        return keys @ query

    return Score(init, keys, scores, "general")


def memory(score: Score, params: Any, annotations: Array, length: Any = None) -> Memory:
    """Returns the :class:`Memory` every decoder step attends over.

    ``annotations: (T, A)`` (an encoder's outputs for one source), ``length``: its valid
    steps (None: all). Padded annotations become zeros before the keys are computed, so
    that NaN or inf there cannot reach a score, a context or a gradient.
    """
    if jnp.ndim(annotations) != 2:
        hint = " (batch with jax.vmap)" if jnp.ndim(annotations) == 3 else ""
        raise ValueError(
            f"annotations must have shape (T, A) for one source{hint}; got {jnp.shape(annotations)}"
        )
    length = padding.check_length(length, annotations.shape[0])
    annotations = padding.clean(annotations, padding.valid_steps(annotations.shape[0], length))
    return Memory(annotations, score.keys(params, annotations), length)


def attend(score: Score, params: Any, query: Array, source: Memory) -> tuple[Array, Array]:
    """Returns ``(context: (A,), weights: (T,))``: the weights' sum of the annotations.

    ``weights = masked_softmax(score(query, h_j))`` over the valid source steps (summing to
    1 there, exactly 0 at padded steps; all 0 when ``length == 0``), ``context = weights @
    annotations``.
    """
    weights = padding.masked_softmax(score.scores(params, query, source.keys), source.length)
    return weights @ source.annotations, weights


__all__ = ["Memory", "Score", "additive", "attend", "general", "memory"]
