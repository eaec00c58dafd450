"""Stateful training: truncated backpropagation through time over consecutive chunks.

A text (or any long sequence) too long to backpropagate through at once is cut into chunks
of ``K`` steps read in order; the carry at the end of one chunk starts the next, while the
gradient stops at the chunk boundary (truncated BPTT, Williams & Peng 1990; Sutskever 2013,
sec. 2.8.6). ``B`` streams are read side by side, one row of the batch each, and a stream's
carry is reset to the initial carry where a new document begins, so that nothing leaks
from one document into the next.

* :func:`document_chunks` lays documents out as ``(num_chunks, B, K)`` chunks, each
  document starting a chunk (the previous one padded), so resets fall on chunk starts,
  and the text cut into ``B`` consecutive runs, one per stream.
* :func:`init_stateful_train_state` and :func:`make_stateful_train_step` are
  :func:`~rnnjax.training.init_train_state` and :func:`~rnnjax.training.make_train_step`
  with the carry kept between steps. The carry rides in the optimizer-state slot
  (:class:`CarriedState`), so :func:`~rnnjax.training.fit`, its checkpoints (a resumed run
  continues with the carry it stopped with) and ``vmap`` over seeds work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax._src import checks
from rnnjax._src.training.step import TrainState, TrainStep, init_train_state, make_train_step

Array = jax.Array
StatefulLossFn = Callable[[Any, Any, Any, Array], tuple[Array, tuple[Any, dict]]]

_CARRY = "_carry"  # the aux entry the loss's final carry leaves through


class Chunks(NamedTuple):
    """Documents laid out as consecutive chunks of ``B`` parallel streams.

    Attributes:
      inputs: ``(N, B, K)`` int32, the tokens read at each step (``pad_token`` after ``lengths``).
      targets: ``(N, B, K)`` int32, the token after each input (``inputs`` shifted by one
        within the document).
      lengths: ``(N, B)`` int32, valid steps of each chunk (0 for an empty chunk at the end
        of a stream that ran out of documents).
      reset: ``(N, B)`` bool, true where the chunk starts a document (or is empty): the
        carry is reset before it.
    """

    inputs: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray
    reset: np.ndarray


def document_chunks(
    documents: Sequence[np.ndarray], *, num_streams: int, chunk_length: int, pad_token: int = 0
) -> Chunks:
    """Returns the :class:`Chunks` of ``documents`` (NumPy arrays), read in order by ``num_streams`` streams.

    A document of ``L`` tokens gives ``L - 1`` (input, next token) pairs in
    ``ceil((L - 1) / chunk_length)`` chunks; its last chunk is padded, so the next document
    starts a chunk. The chunks of all documents, in order, are cut into ``num_streams``
    consecutive runs of ``N = ceil(C / num_streams)`` chunks, one per stream (the last
    stream ends in empty chunks), as a text is cut into a batch of streams for truncated
    BPTT (Zaremba et al. 2014). A stream's first chunk resets the carry even when it
    continues a document (the carry is in another stream): ``num_streams`` resets an epoch
    more than the documents need. With ``num_streams=1`` every document is read whole, each
    character after all the characters before it. Documents of fewer than two tokens are
    skipped.
    """
    checks.positive_int("num_streams", num_streams)
    checks.positive_int("chunk_length", chunk_length)
    chunks: list[tuple[np.ndarray, np.ndarray, bool]] = []
    for doc in documents:
        doc = np.asarray(doc)
        if doc.ndim != 1:
            raise ValueError(f"documents must be 1-D token arrays, got shape {doc.shape}")
        for start in range(0, len(doc) - 1, chunk_length):
            stop = min(start + chunk_length, len(doc) - 1)
            chunks.append((doc[start:stop], doc[start + 1 : stop + 1], start == 0))
    if not chunks:
        raise ValueError("documents must hold at least one document of two or more tokens")
    num_chunks = -(-len(chunks) // num_streams)
    shape = (num_chunks, num_streams, chunk_length)
    inputs = np.full(shape, pad_token, np.int32)
    targets = np.full(shape, pad_token, np.int32)
    lengths = np.zeros(shape[:2], np.int32)
    reset = np.ones(shape[:2], bool)
    for i, (x, y, first) in enumerate(chunks):
        b, n = divmod(i, num_chunks)
        inputs[n, b, : len(x)], targets[n, b, : len(y)] = x, y
        lengths[n, b], reset[n, b] = len(x), first or n == 0
    return Chunks(inputs, targets, lengths, reset)


def chunk_at(chunks: Chunks, step: Any) -> Chunks:
    """Returns the batch of ``step``: chunk ``step mod N`` of every stream (leading axis dropped).

    A ``batch_fn`` for :func:`~rnnjax.training.fit` is ``lambda key, step: chunk_at(chunks, step)``
    (with ``chunks`` as device arrays): one pass over the text every ``N`` steps, in order.
    """
    index = jnp.asarray(step) % chunks.lengths.shape[0]
    return jax.tree.map(lambda a: jnp.asarray(a)[index], chunks)


def reset_carry(carry: Any, initial: Any, reset: Array) -> Any:
    """Returns ``carry`` with the rows where ``reset: (B,)`` is true replaced by ``initial``'s (both ``(B, ...)``)."""
    reset = jnp.asarray(reset)
    return jax.tree.map(
        lambda c, c0: jnp.where(reset.reshape((-1,) + (1,) * (c.ndim - 1)), c0, c), carry, initial
    )


class CarriedState(NamedTuple):
    """The optimizer-state slot of a stateful :class:`~rnnjax.training.TrainState`.

    Attributes:
      carry: the streams' carry after the last step, ``(B, ...)`` per leaf.
      inner: the Optax optimizer's own state.
    """

    carry: Any
    inner: Any


def init_stateful_train_state(
    key: Array,
    params: Any,
    optimizer: optax.GradientTransformation,
    carry: Any,
    *,
    skip_nonfinite: bool | int = False,
) -> TrainState:
    """Returns the state at step 0, its ``opt_state`` a :class:`CarriedState` holding ``carry``.

    ``carry`` is the streams' initial carry, ``(B, ...)`` per leaf (e.g.
    ``jax.vmap(lambda _: model.initial_carry(params))(jnp.arange(B))``). Other arguments as
    in :func:`~rnnjax.training.init_train_state`.
    """
    state = init_train_state(key, params, optimizer, skip_nonfinite=skip_nonfinite)
    return state._replace(opt_state=CarriedState(carry, state.opt_state))


def make_stateful_train_step(
    loss_fn: StatefulLossFn,
    optimizer: optax.GradientTransformation,
    initial_carry: Any,
    **options: Any,
) -> TrainStep:
    """Returns ``train_step(state, batch) -> (state, metrics)`` with the carry passed from step to step.

    Before the loss, each stream whose ``batch.reset`` is true gets ``initial_carry`` back;
    the carry then enters the loss as data, so no gradient flows into the previous chunk
    (with one chunk per sequence this is full backpropagation through time).

    Args:
      loss_fn: ``loss_fn(params, batch, carry, key) -> (loss, (final_carry, aux))``:
        ``carry`` and ``final_carry`` are ``(B, ...)`` per leaf, ``aux`` a dict of scalar
        metrics as for :func:`~rnnjax.training.make_train_step`.
      optimizer: the Optax transformation (the state's ``opt_state.inner`` is its state).
      initial_carry: ``(B, ...)`` per leaf, the carry a reset stream starts from.
      **options: ``skip_nonfinite``, ``learning_rate``, as for ``make_train_step``.

    ``batch`` is anything with a ``reset: (B,)`` bool attribute, e.g. :func:`chunk_at`'s.
    """

    def plain_loss(params, batch_and_carry, key):
        batch, carry = batch_and_carry
        loss, (final, aux) = loss_fn(params, batch, carry, key)
        return loss, {**aux, _CARRY: final}

    plain_step = make_train_step(plain_loss, optimizer, **options)

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        if not isinstance(state.opt_state, CarriedState):
            raise TypeError(
                "make_stateful_train_step needs a state made by "
                "init_stateful_train_state; got an opt_state of type "
                f"{type(state.opt_state).__name__}"
            )
        carry = reset_carry(state.opt_state.carry, initial_carry, batch.reset)
        inner, metrics = plain_step(state._replace(opt_state=state.opt_state.inner), (batch, carry))
        final = metrics.pop(_CARRY)
        final = jax.tree.map(lambda n, o: n.astype(o.dtype), final, carry)
        return inner._replace(opt_state=CarriedState(final, inner.opt_state)), metrics

    return train_step


__all__ = [
    "CarriedState",
    "Chunks",
    "chunk_at",
    "document_chunks",
    "init_stateful_train_state",
    "make_stateful_train_step",
    "reset_carry",
]
