"""The kinds of recurrent network, by how inputs and outputs line up.

* :func:`one_to_one`: one vector in, one out; a feed-forward baseline.
* :func:`many_to_one`: a sequence in, one vector out (final step, or pooled).
* :func:`many_to_many`: a sequence in, one output per input step (aligned).

Each constructor takes layers and readouts and returns a :class:`Model`, a record of pure
functions that acts on ONE example; batch with ``jax.vmap``. The kinds that generate tokens
(``one_to_many``, ``encoder_decoder``) are in :mod:`rnnjax.seq2seq`; the language model is
in :mod:`rnnjax.language_models`.

A model's ``apply`` checks its ``params`` against what its ``init`` makes (structure and
shapes, at trace time), so parameters of another model or size fail naming the path that
differs; token inputs outside the embedding's vocabulary raise ValueError naming the
argument and position when concrete, and embed to zeros when traced (or raise under
:func:`rnnjax.checked`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import inputs as _inputs
from rnnjax._src import padding, probes
from rnnjax._src.cells import Cell
from rnnjax._src.layers import Layer
from rnnjax._src.readouts import Embedding, Readout

Array = jax.Array


class Model(NamedTuple):
    """A network mapping one input to its outputs, as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, inputs, *, length=None, key=None, train=False) -> outputs``;
        shapes depend on the kind (see the constructor). ``key`` and ``train`` matter
        only with dropout; one-to-one takes no ``length``.
      output_size: size of the last axis of ``outputs``.
    """

    init: Callable[..., Any]
    apply: Callable[..., Array]
    output_size: int


def _check_layer(layer: Any) -> None:
    hint = "; wrap a cell in a layer: rnnjax.recurrent(cell)" if isinstance(layer, Cell) else ""
    _inputs.check_type(
        "layer", layer, Layer, "an rnnjax.Layer (recurrent, bidirectional, stack)", hint
    )


def _check_model_params(
    check_params: Any, embedding: Embedding | None, params: Any, xs: Any
) -> None:
    """Checks ``params`` against ``init``'s for these inputs (other shapes: the layer says)."""
    if embedding is not None:
        check_params(params, None)
    elif jnp.ndim(xs) == 2:
        check_params(params, jnp.shape(xs)[1])


# --------------------------------------------------------------------------- one-to-one


def one_to_one(network: Readout) -> Model:
    """Returns the one-to-one model: a feed-forward ``network`` on a fixed-size input.

    The baseline the recurrent kinds are compared with (no time axis at all).
    ``apply(params, x)`` maps ``x: (input_size,)`` to ``(output_size,)``; params are
    ``network``'s. Build ``network`` with :func:`rnnjax.readouts.mlp`.
    """

    _inputs.check_readout(network, "network", optional=False)
    check_params = _inputs.params_checker(network.init)

    def apply(params, x, *, key=None, train=False):
        del key, train
        if jnp.ndim(x) != 1:
            hint = " (batch with jax.vmap)" if jnp.ndim(x) == 2 else ""
            raise ValueError(
                f"x must have shape (input_size,) for one example{hint}; got {jnp.shape(x)}"
            )
        check_params(params, jnp.shape(x)[0])
        return network.apply(params, x)

    return Model(network.init, apply, network.output_size)


# --------------------------------------------------------------------------- many-to-one


def _pool_last(final, ys, length):
    return padding.last_valid(ys, length)


def _pool_first_last(final, ys, length):
    first = ys[0] if length is None else padding.zero_outputs(length > 0, ys[0])
    return jnp.concatenate([first, padding.last_valid(ys, length)])


def _pool_mean(final, ys, length):
    return padding.masked_mean(ys, length)


def _pool_max(final, ys, length):
    return padding.masked_max(ys, length)


_POOLS: dict[str, Callable[[Any, Array, Any], Array]] = {
    "last": _pool_last,
    "first_last": _pool_first_last,
    "mean": _pool_mean,
    "max": _pool_max,
}


def many_to_one(
    layer: Layer,
    readout: Readout,
    pool: str | Callable[[Any, Array, Any], Array] = "last",
    *,
    embedding: Embedding | None = None,
) -> Model:
    """Returns the many-to-one model: ``readout(pool(layer(xs)))``, one output per sequence.

    Args:
      layer: the recurrent layer (``recurrent``, ``bidirectional``, ``stack``, ...).
      readout: maps the pooled features to the output.
      pool: how the sequence becomes one vector, over the valid steps ``t < length``:
        ``"last"``: ``ys[length-1]``, the last valid output (for a unidirectional top
        layer, its final hidden state).
        ``"first_last"``: ``concat(ys[0], ys[length-1])``; for a bidirectional top layer
        this holds both directions' final states (forward at ``length-1``, backward at 0).
        ``"mean"`` / ``"max"``: mean / max over valid steps (zeros when ``length == 0``).
        A callable ``pool(final_carry, ys, length) -> (F,)`` reads anything else, e.g.
        the LSTM cell state ``lambda carry, ys, n: carry[1]``.
      embedding: for token inputs, an :func:`rnnjax.readouts.embedding`; ``xs`` is then
        ``(T,)`` integer tokens, embedded before the layer reads them.

    Params: ``{"rnn": layer params, "readout": readout params[, "source_embed": {"table"}]}``.
    ``init(key, input_size=None)`` (omit ``input_size`` for token inputs).
    ``apply(params, xs, *, length=None, key=None, train=False)`` maps ``xs: (T, input_size)``
    (or tokens ``(T,)``), valid prefix ``length``, to ``(readout.output_size,)``.
    """
    _check_layer(layer)
    _inputs.check_readout(readout, optional=False)
    _inputs.check_embedding(embedding)
    if callable(pool):
        pool_fn = pool
    elif pool in _POOLS:
        pool_fn = _POOLS[pool]
    else:
        raise ValueError(f"pool must be one of {sorted(_POOLS)} or a callable, got {pool!r}")

    def features(rnn_params, xs, length, key, train):
        with probes.scope("rnn"):
            final, ys = layer.apply(rnn_params, xs, length=length, key=key, train=train)
        return pool_fn(final, ys, length)

    def init(key, input_size=None):
        k_rnn, k_out = jax.random.split(key)
        params = {}
        k_emb = jax.random.fold_in(key, 2)  # apart, so vector-input models keep their init
        input_size = _inputs.input_params(embedding, k_emb, input_size, params)
        rnn_params = layer.init(k_rnn, input_size)
        xs = jax.ShapeDtypeStruct((1, input_size), jnp.float32)
        shape = jax.eval_shape(lambda p, x: features(p, x, None, None, False), rnn_params, xs).shape
        if len(shape) != 1:
            raise ValueError(f"pool must return a vector (F,), got shape {shape}")
        return {**params, "rnn": rnn_params, "readout": readout.init(k_out, shape[0])}

    check_params = _inputs.params_checker(init)

    def apply(params, xs, *, length=None, key=None, train=False):
        _check_model_params(check_params, embedding, params, xs)
        xs = _inputs.features(embedding, params, xs, "xs", 1, length)
        length = padding.check_length(length, jnp.shape(xs)[0]) if jnp.ndim(xs) == 2 else length
        return readout.apply(params["readout"], features(params["rnn"], xs, length, key, train))

    return Model(init, apply, readout.output_size)


# --------------------------------------------------------------------------- many-to-many


def many_to_many(layer: Layer, readout: Readout, *, embedding: Embedding | None = None) -> Model:
    """Returns the aligned many-to-many model: ``outputs[t] = readout(layer(xs)[t])``.

    One output per input step (tagging, per-step forecasting); a bidirectional ``layer``
    lets ``outputs[t]`` depend on the whole valid sequence.

    ``embedding``: for token inputs (tagging words), an :func:`rnnjax.readouts.embedding`;
    ``xs`` is then ``(T,)`` integer tokens.

    Params: ``{"rnn": layer params, "readout": readout params[, "source_embed": {"table"}]}``.
    ``init(key, input_size=None)`` (omit ``input_size`` for token inputs).
    ``apply(params, xs, *, length=None, key=None, train=False)`` maps ``xs: (T, input_size)``
    (or tokens ``(T,)``) to ``outputs: (T, readout.output_size)``, zero at padded steps
    ``t >= length``.
    """
    _check_layer(layer)
    _inputs.check_readout(readout, optional=False)
    _inputs.check_embedding(embedding)

    def init(key, input_size=None):
        k_rnn, k_out = jax.random.split(key)
        params = {}
        k_emb = jax.random.fold_in(key, 2)  # apart, so vector-input models keep their init
        input_size = _inputs.input_params(embedding, k_emb, input_size, params)
        return {
            **params,
            "rnn": layer.init(k_rnn, input_size),
            "readout": readout.init(k_out, layer.output_size),
        }

    check_params = _inputs.params_checker(init)

    def apply(params, xs, *, length=None, key=None, train=False):
        _check_model_params(check_params, embedding, params, xs)
        xs = _inputs.features(embedding, params, xs, "xs", 1, length)
        with probes.scope("rnn"):
            _, ys = layer.apply(params["rnn"], xs, length=length, key=key, train=train)
        outputs = readout.apply(params["readout"], ys)
        if length is None:
            return outputs
        length = padding.check_length(length, outputs.shape[0])
        return padding.zero_outputs(padding.valid_steps(outputs.shape[0], length), outputs)

    return Model(init, apply, readout.output_size)


__all__ = ["Model", "many_to_many", "many_to_one", "one_to_one"]
