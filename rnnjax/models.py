"""The kinds of recurrent network, by how inputs and outputs line up.

* :func:`one_to_one`: one vector in, one out; a feed-forward baseline.
* :func:`one_to_many`: one vector in, a token sequence out, generated step by step.
* :func:`many_to_one`: a sequence in, one vector out (final step, or pooled).
* :func:`many_to_many`: a sequence in, one output per input step (aligned).
* :func:`encoder_decoder`: a sequence in, a sequence of another length out.

Each constructor takes cells, layers and readouts and returns a record of pure functions.
:class:`Model` maps an input to outputs; :class:`Generator` also decodes tokens. Both act
on ONE example; batch with ``jax.vmap``. Generation runs inside ``jax.lax.scan`` for a fixed
``max_length`` of steps; after the end token, tokens are ``pad_token`` and the carry is frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import attention as attention_lib
from rnnjax import checks, decoding, fused, padding, probes
from rnnjax.cells import Cell
from rnnjax.layers import Layer
from rnnjax.readouts import Embedding, Readout, _token_embedding_and_readout, embedding, linear

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


class Generator(NamedTuple):
    """A network that emits a token sequence, trained by teacher forcing, as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, source, targets, **kw) -> logits: (T, vocab_size)``, the
        teacher-forced logits: step ``t`` reads ``targets[t-1]`` (``start_token`` at
        ``t = 0``) and predicts ``targets[t]``.
      decode: ``decode(params, source, *, max_length, key=None, temperature=1.0, **kw)
        -> (tokens: (max_length,) int32, length: () int32)``. Greedy when ``key`` is None,
        else sampled from ``softmax(logits / temperature)``. ``length`` counts the tokens
        up to and including the first ``end_token`` (``max_length`` if none); later
        positions hold ``pad_token``.
      vocab_size: number of output tokens.
    """

    init: Callable[..., Any]
    apply: Callable[..., Array]
    decode: Callable[..., tuple[Array, Array]]
    vocab_size: int


# --------------------------------------------------------------------------- token inputs


def _check_embedding(embedding: Any) -> None:
    if embedding is not None and not isinstance(embedding, Embedding):
        raise TypeError(
            f"embedding must be an rnnjax.readouts.embedding(vocab_size, features) or None, "
            f"got {type(embedding).__name__}"
        )


def _input_params(
    embedding: Embedding | None, key: Array, input_size: int | None, params: dict
) -> int:
    """Adds the embedding's table to ``params`` (as ``"source_embed"``) and returns the
    feature size the network reads: the embedding's, or ``input_size`` for vector inputs."""
    if embedding is None:
        if input_size is None:
            raise ValueError("init needs input_size (the input feature size) for vector inputs")
        return input_size
    if input_size not in (None, embedding.vocab_size):
        raise ValueError(
            f"input_size must be None for token inputs (the model embeds tokens of "
            f"vocab_size={embedding.vocab_size}), got {input_size}"
        )
    params["source_embed"] = embedding.init(key)
    return embedding.features


_TOKEN_SHAPES = {0: "() (one token)", 1: "(T,)"}


def _features(
    embedding: Embedding | None, params: Any, inputs: Array, name: str, ndim: int
) -> Array:
    """Returns the features the network reads: ``inputs``, or its ``ndim``-axis tokens embedded."""
    if embedding is None:
        return inputs
    if jnp.ndim(inputs) != ndim:
        raise ValueError(
            f"{name} must be integer tokens of shape {_TOKEN_SHAPES[ndim]} for one example "
            f"(the model embeds them), got shape {jnp.shape(inputs)}"
        )
    return embedding.apply(params["source_embed"], inputs)


# --------------------------------------------------------------------------- one-to-one


def one_to_one(network: Readout) -> Model:
    """Returns the one-to-one model: a feed-forward ``network`` on a fixed-size input.

    The baseline the recurrent kinds are compared with (no time axis at all).
    ``apply(params, x)`` maps ``x: (input_size,)`` to ``(output_size,)``; params are
    ``network``'s. Build ``network`` with :func:`rnnjax.readouts.mlp`.
    """

    def apply(params, x, *, key=None, train=False):
        del key, train
        if jnp.ndim(x) != 1:
            hint = " (batch with jax.vmap)" if jnp.ndim(x) == 2 else ""
            raise ValueError(
                f"x must have shape (input_size,) for one example{hint}; got {jnp.shape(x)}"
            )
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
    _check_embedding(embedding)
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
        input_size = _input_params(embedding, k_emb, input_size, params)
        rnn_params = layer.init(k_rnn, input_size)
        xs = jax.ShapeDtypeStruct((1, input_size), jnp.float32)
        shape = jax.eval_shape(lambda p, x: features(p, x, None, None, False), rnn_params, xs).shape
        if len(shape) != 1:
            raise ValueError(f"pool must return a vector (F,), got shape {shape}")
        return {**params, "rnn": rnn_params, "readout": readout.init(k_out, shape[0])}

    def apply(params, xs, *, length=None, key=None, train=False):
        xs = _features(embedding, params, xs, "xs", 1)
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
    _check_embedding(embedding)

    def init(key, input_size=None):
        k_rnn, k_out = jax.random.split(key)
        params = {}
        k_emb = jax.random.fold_in(key, 2)  # apart, so vector-input models keep their init
        input_size = _input_params(embedding, k_emb, input_size, params)
        return {
            **params,
            "rnn": layer.init(k_rnn, input_size),
            "readout": readout.init(k_out, layer.output_size),
        }

    def apply(params, xs, *, length=None, key=None, train=False):
        xs = _features(embedding, params, xs, "xs", 1)
        with probes.scope("rnn"):
            _, ys = layer.apply(params["rnn"], xs, length=length, key=key, train=train)
        outputs = readout.apply(params["readout"], ys)
        if length is None:
            return outputs
        length = padding.check_length(length, outputs.shape[0])
        return padding.zero_outputs(padding.valid_steps(outputs.shape[0], length), outputs)

    return Model(init, apply, readout.output_size)


# --------------------------------------------------------------------------- token decoder


def _flat_size(tree: Any) -> int:
    return sum(int(np.prod(jnp.shape(a))) for a in jax.tree.leaves(tree))


def _flatten(tree: Any) -> Array:
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


class _Decoder(NamedTuple):
    init: Callable[[Array, int], Any]
    teacher_force: Callable[[Any, Array, Array], Array]
    decode: Callable[..., tuple[Array, Array]]


def _bridge_init(cell: Cell, cell_params: Any, key: Array, context_size: int) -> list:
    """Returns the bridge's params: one affine map ``(context_size,) -> leaf`` per carry leaf."""
    leaves = jax.tree.leaves(cell.initial_carry(cell_params))
    keys = jax.random.split(key, len(leaves))
    return [linear(a.size).init(k, context_size) for a, k in zip(leaves, keys)]


def _bridge(cell: Cell, params: Any, context: Array) -> Any:
    """Returns the decoder's first carry, ``tanh(context W + b)`` for each leaf (``params["bridge"]``)."""
    leaves, treedef = jax.tree.flatten(cell.initial_carry(params["cell"]))
    new = [
        jnp.tanh(context @ p["w"] + p["b"]).reshape(a.shape).astype(a.dtype)
        for p, a in zip(params["bridge"], leaves)
    ]
    return jax.tree.unflatten(treedef, new)


def _check_token(name: str, value: Any, vocab_size: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be an int in [0, vocab_size={vocab_size}), got {value!r}")
    return value


def _check_tokens(vocab_size: int, start_token: Any, pad_token: Any, end_token: Any) -> None:
    """Raises ValueError naming the first of the decoder's special tokens outside the vocabulary."""
    _check_token("start_token", start_token, vocab_size)
    _check_token("pad_token", pad_token, vocab_size)
    if end_token is not None:
        _check_token("end_token", end_token, vocab_size)


def _token_decoder(
    cell: Cell,
    vocab_size: int,
    *,
    embed_size: int,
    readout: Readout | None,
    init_carry: bool,
    feed_context: bool,
    start_token: int,
    end_token: int | None,
    pad_token: int,
) -> _Decoder:
    """Returns a decoder that generates tokens from a context vector ``(C,)``.

    The context sets the initial carry through a bridge, one affine map per carry leaf,
    ``carry_0 = tanh(context W + b)``, and/or is concatenated to every step's input,
    ``x_t = [embed(token_{t-1}), context]`` (Cho et al. 2014, "Learning Phrase
    Representations using RNN Encoder-Decoder", eqs. for the decoder).
    """
    if not (init_carry or feed_context):
        raise ValueError("the context must initialise the carry, be fed at each step, or both")
    _check_tokens(vocab_size, start_token, pad_token, end_token)
    embed, readout = _token_embedding_and_readout(vocab_size, embed_size, readout)

    def init(key, context_size):
        k_emb, k_cell, k_out, k_bridge = jax.random.split(key, 4)
        cell_params = cell.init(k_cell, embed_size + (context_size if feed_context else 0))
        params = {
            "embed": embed.init(k_emb),
            "cell": cell_params,
            "readout": readout.init(k_out, cell.hidden_size),
        }
        if init_carry:
            params["bridge"] = _bridge_init(cell, cell_params, k_bridge, context_size)
        return params

    def start_carry(params, context):
        if not init_carry:
            return cell.initial_carry(params["cell"])
        return _bridge(cell, params, context)

    def step_input(params, context, tokens):
        e = embed.apply(params["embed"], tokens)
        if not feed_context:
            return e
        ctx = jnp.broadcast_to(context, e.shape[:-1] + context.shape)
        return jnp.concatenate([e, ctx.astype(e.dtype)], axis=-1)

    def teacher_force(params, context, targets):
        if jnp.ndim(targets) != 1:
            raise ValueError(
                f"targets must have shape (T,) for one sequence, got {jnp.shape(targets)}"
            )
        if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
            raise TypeError(f"targets must be integer tokens, got dtype {jnp.result_type(targets)}")
        previous = jnp.concatenate([jnp.array([start_token], targets.dtype), targets[:-1]])
        with probes.scope("cell"):
            _, ys = fused.scan(
                cell,
                params["cell"],
                step_input(params, context, previous),
                carry=start_carry(params, context),
            )
        return readout.apply(params["readout"], ys)

    def decode(params, context, max_length, key, temperature):
        checks.positive_int("max_length", max_length)

        def step_fn(carry, token):
            new_carry, y = cell.step(params["cell"], carry, step_input(params, context, token))
            return new_carry, readout.apply(params["readout"], y)

        # The same loop as every generator's: rnnjax.decoding.generate (the carry frozen
        # after the end token, as rnnjax.scan does on padding), read from the start token.
        tokens, length = decoding.generate(
            step_fn,
            start_carry(params, context),
            jnp.array([start_token], jnp.int32),
            max_length=max_length + 1,
            key=key,
            temperature=temperature,
            end_token=end_token,
            pad_token=pad_token,
        )
        return tokens[1:], length - 1  # generate returns the start token first

    return _Decoder(init, teacher_force, decode)


_CONDITIONS = {"carry": (True, False), "input": (False, True), "both": (True, True)}


def one_to_many(
    cell: Cell,
    vocab_size: int,
    *,
    start_token: int,
    end_token: int | None,
    pad_token: int = 0,
    embed_size: int = 16,
    condition: str = "both",
    readout: Readout | None = None,
    embedding: Embedding | None = None,
) -> Generator:
    """Returns the one-to-many model: a fixed-size input conditions a token generator.

    The input ``x: (input_size,)`` (an image's features, a vector) sets the initial carry
    through one affine map per carry leaf, ``carry_0 = tanh(x W + b)``, and/or is
    concatenated to every step's input ``[embed(token_{t-1}), x]`` (image captioning:
    Vinyals et al. 2015; Karpathy & Fei-Fei 2015). The logits are
    ``readout(h_t): (vocab_size,)``.

    Args:
      cell: the recurrent cell.
      vocab_size: number of tokens (including the start, end and pad tokens).
      start_token: fed at step 0.
      end_token: generation stops after it (``None``: always ``max_length`` tokens).
      pad_token: emitted after the end token.
      embed_size: size of the token embeddings.
      condition: ``"carry"``, ``"input"`` or ``"both"``, where ``x`` enters (see above).
      readout: maps ``h_t`` to logits (default :func:`rnnjax.readouts.linear`).
      embedding: for a token input (a class to describe), an
        :func:`rnnjax.readouts.embedding`; ``x`` is then one integer token ``()``.

    Params: ``{"embed": {"table"}, "cell": ..., "readout": ...[, "bridge": [linear, ...]]
    [, "source_embed": {"table"}]}``. ``init(key, input_size=None)`` (omit ``input_size``
    for a token input).
    ``apply(params, x, targets, *, key=None, train=False)``: ``x: (input_size,)``,
    ``targets: (T,)`` int, returns teacher-forced logits ``(T, vocab_size)``. Logits at
    ``t`` depend only on ``targets[:t]``, so padding after a target's end changes no
    logit before it; mask the loss with the target length.
    ``decode(params, x, *, max_length, key=None, temperature=1.0) -> (tokens, length)``,
    see :class:`Generator`.
    """
    if condition not in _CONDITIONS:
        raise ValueError(f"condition must be one of {sorted(_CONDITIONS)}, got {condition!r}")
    init_carry, feed_context = _CONDITIONS[condition]
    decoder = _token_decoder(
        cell,
        vocab_size,
        embed_size=embed_size,
        readout=readout,
        init_carry=init_carry,
        feed_context=feed_context,
        start_token=start_token,
        end_token=end_token,
        pad_token=pad_token,
    )

    _check_embedding(embedding)

    def init(key, input_size=None):
        params = {}
        input_size = _input_params(embedding, jax.random.fold_in(key, 2), input_size, params)
        return {**decoder.init(key, input_size), **params}

    def context(params, x):
        x = _features(embedding, params, x, "x", 0)
        if jnp.ndim(x) != 1:
            hint = " (batch with jax.vmap)" if jnp.ndim(x) == 2 else ""
            raise ValueError(
                f"x must have shape (input_size,) for one example{hint}; got {jnp.shape(x)}"
            )
        return x

    def apply(params, x, targets, *, key=None, train=False):
        del key, train
        return decoder.teacher_force(params, context(params, x), targets)

    def decode(params, x, *, max_length, key=None, temperature=1.0):
        return decoder.decode(params, context(params, x), max_length, key, temperature)

    return Generator(init, apply, decode, vocab_size)


# --------------------------------------------------------------------------- attention decoder


class _AttentionDecoder(NamedTuple):
    init: Callable[[Array, int, int], Any]
    memory: Callable[[Any, Array, Any], attention_lib.Memory]
    teacher_force: Callable[..., tuple[Array, Array]]
    decode: Callable[..., tuple[Array, Array, Array]]


def _cell_hidden(cell: Cell) -> Callable[[Any], Array]:
    """Returns ``carry -> h``, the decoder state Bahdanau's first query reads."""
    hidden = getattr(cell.step, "hidden", None)
    if hidden is not None:
        return hidden

    def whole_carry(carry):
        if not isinstance(carry, jax.Array) or carry.shape != (cell.hidden_size,):
            raise ValueError(
                f"attention='bahdanau' reads the decoder's hidden state from its carry; for a "
                f"cell whose step is not a GatedStep the carry must be h: ({cell.hidden_size},), "
                f"got {jax.tree.map(jnp.shape, carry)}"
            )
        return carry

    return whole_carry


def _attention_decoder(
    cell: Cell,
    vocab_size: int,
    kind: str,
    *,
    attention_size: int,
    embed_size: int,
    readout: Readout | None,
    start_token: int,
    end_token: int | None,
    pad_token: int,
) -> _AttentionDecoder:
    """Returns a decoder that attends over the encoder's annotations ``h_j`` at every step.

    ``kind="bahdanau"`` (Bahdanau, Cho & Bengio 2015, sec. 3.1 and appendix A.2): the
    previous state ``s_{i-1}`` is the query, ``e_ij = v^T tanh(W s_{i-1} + U h_j)``, the
    context ``c_i = sum_j alpha_ij h_j`` enters the step,
    ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])``, and ``logits_i = readout([s_i; c_i; E y_{i-1}])``
    (their ``g(y_{i-1}, s_i, c_i)``, eq. 4; a linear readout instead of their maxout layer).

    ``kind="luong"`` (Luong, Pham & Manning 2015, sec. 3.1 and 3.3, global attention with
    input feeding): the step comes first, ``h_t = f(h_{t-1}, [E y_{t-1}; h~_{t-1}])``; the
    current ``h_t`` is the query, ``score = h_t^T W_a h_j`` (eq. 8, "general"); the
    attentional hidden state ``h~_t = tanh(W_c [c_t; h_t])`` (eq. 5, no bias) gives
    ``logits_t = readout(h~_t)`` (eq. 6) and is fed to the next step (``h~_0 = 0``).

    Both start from the bridge ``carry_0 = tanh(c W + b)`` of the encoder's final carry
    ``c`` (Bahdanau et al. initialise from the backward encoder's first state, which a
    bidirectional encoder's final carry holds; Luong et al. from the last encoder state).
    """
    _check_tokens(vocab_size, start_token, pad_token, end_token)
    embed, readout = _token_embedding_and_readout(vocab_size, embed_size, readout)
    bahdanau = kind == "bahdanau"
    score = attention_lib.additive(attention_size) if bahdanau else attention_lib.general()
    hidden = cell.hidden_size
    hidden_of = _cell_hidden(cell)

    def init(key, annotation_size, context_size):
        k_emb, k_cell, k_out, k_bridge, k_att, k_comb = jax.random.split(key, 6)
        fed = annotation_size if bahdanau else hidden  # c_i (Bahdanau) or h~_{t-1} (Luong)
        cell_params = cell.init(k_cell, embed_size + fed)
        params = {
            "embed": embed.init(k_emb),
            "cell": cell_params,
            "attention": score.init(k_att, hidden, annotation_size),
            "bridge": _bridge_init(cell, cell_params, k_bridge, context_size),
        }
        if bahdanau:
            params["readout"] = readout.init(k_out, hidden + annotation_size + embed_size)
        else:
            params["combine"] = linear(hidden, use_bias=False).init(
                k_comb, annotation_size + hidden
            )
            params["readout"] = readout.init(k_out, hidden)
        return params

    def memory(params, annotations, length):
        return attention_lib.memory(score, params["attention"], annotations, length)

    def start(params, context):
        carry = _bridge(cell, params, context)
        if bahdanau:
            return carry, hidden_of(carry)
        return carry, jnp.zeros(hidden, context.dtype)

    def step(params, source, state, token):
        """Returns ``(state, logits: (V,), weights: (T_src,))`` for one target token read."""
        carry, fed = state  # s_{i-1} (Bahdanau) or h~_{t-1} (Luong)
        e = embed.apply(params["embed"], token)
        if bahdanau:
            context, weights = attention_lib.attend(score, params["attention"], fed, source)
            carry, s = cell.step(params["cell"], carry, jnp.concatenate([e, context]))
            logits = readout.apply(params["readout"], jnp.concatenate([s, context, e]))
            return (carry, s), logits, weights
        carry, h = cell.step(params["cell"], carry, jnp.concatenate([e, fed.astype(e.dtype)]))
        context, weights = attention_lib.attend(score, params["attention"], h, source)
        attentional = jnp.tanh(jnp.concatenate([context, h]) @ params["combine"]["w"])
        return (carry, attentional), readout.apply(params["readout"], attentional), weights

    def teacher_force(params, context, source, targets):
        if jnp.ndim(targets) != 1:
            raise ValueError(
                f"targets must have shape (T,) for one sequence, got {jnp.shape(targets)}"
            )
        if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
            raise TypeError(f"targets must be integer tokens, got dtype {jnp.result_type(targets)}")
        previous = jnp.concatenate([jnp.array([start_token], targets.dtype), targets[:-1]])

        def body(state, token):
            state, logits, weights = step(params, source, state, token)
            return state, (logits, weights)

        _, (logits, weights) = jax.lax.scan(body, start(params, context), previous)
        return logits, weights

    def decode(params, context, source, max_length, key, temperature, beam_size):
        step_fn = lambda state, token: step(params, source, state, token)[:2]
        state = start(params, context)
        if beam_size is None:
            tokens, length = decoding.generate(
                step_fn,
                state,
                jnp.array([start_token], jnp.int32),
                max_length=max_length + 1,
                key=key,
                temperature=temperature,
                end_token=end_token,
                pad_token=pad_token,
            )
            tokens, length = tokens[1:], length - 1  # generate returns the start token first
        else:
            history, _, lengths = decoding.beam_search(
                step_fn,
                state,
                start_token,
                beam_size=beam_size,
                max_length=max_length,
                end_token=end_token,
                pad_token=pad_token,
            )
            tokens, length = history[0], lengths[0]
        # The weights of the emitted tokens: teacher forcing on them runs the same steps.
        _, weights = teacher_force(params, context, source, tokens)
        return (
            tokens,
            length,
            padding.zero_outputs(padding.valid_steps(max_length, length), weights),
        )

    return _AttentionDecoder(init, memory, teacher_force, decode)


# --------------------------------------------------------------------------- encoder-decoder


_ATTENTION_KINDS = ("bahdanau", "luong")


def encoder_decoder(
    encoder: Layer,
    decoder_cell: Cell,
    vocab_size: int,
    *,
    start_token: int,
    end_token: int | None,
    pad_token: int = 0,
    embed_size: int = 16,
    source_vocab_size: int | None = None,
    source_embed_size: int = 16,
    feed_context: bool | None = None,
    readout: Readout | None = None,
    attention: str | None = None,
    attention_size: int | None = None,
) -> Generator:
    """Returns the encoder–decoder: a source sequence in, a target sequence of its own length out.

    The encoder reads the valid prefix of the source; its final carry, flattened to a
    context vector ``c`` (every leaf concatenated: both directions of a bidirectional
    encoder, every layer of a stack), initialises the decoder through a bridge
    ``carry_0 = tanh(c W + b)``. Without attention, ``c`` is also fed at every decoder
    step, ``x_t = [embed(y_{t-1}), c]`` (Sutskever, Vinyals & Le 2014; Cho et al. 2014):
    the whole source passes through one vector. With ``attention``, every decoder step
    reads a weighted sum of the encoder's outputs ``h_j`` (its annotations) instead, the
    weights a softmax over the valid source steps (:mod:`rnnjax.attention`):

    * ``"bahdanau"``: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
      Learning to Align and Translate": additive score ``v^T tanh(W s_{i-1} + U h_j)`` of
      the previous decoder state, context fed into the step, logits from
      ``[s_i; c_i; embed(y_{i-1})]``.
    * ``"luong"``: Luong, Pham & Manning 2015, "Effective Approaches to Attention-based
      Neural Machine Translation": multiplicative ("general") score ``h_t^T W_a h_j`` of
      the current state, attentional state ``h~_t = tanh(W_c [c_t; h_t])`` read out and fed
      to the next step (input feeding).

    Padded source steps (``t >= source_length``) get exactly zero weight, and a NaN or inf
    there reaches neither the outputs nor the gradients.

    Args:
      encoder: the encoder layer (``recurrent``, ``bidirectional``, ``stack``, ...).
      decoder_cell: the decoder's cell.
      vocab_size: number of target tokens (including start, end and pad).
      start_token, end_token, pad_token: target-side special tokens, see :class:`Generator`.
      embed_size: size of target token embeddings.
      source_vocab_size: if given, the source is integer tokens ``(T_src,)`` embedded with
        their own table of ``source_embed_size`` features; otherwise it is vectors
        ``(T_src, input_size)``.
      feed_context: feed ``c`` at every decoder step (default: True without attention;
        with attention it must be False or None, the attended context is fed instead).
      readout: maps decoder outputs to logits (default :func:`rnnjax.readouts.linear`).
      attention: None, ``"bahdanau"`` or ``"luong"``, see above.
      attention_size: size of Bahdanau's ``v`` (default: the decoder's hidden size).

    Params: ``{"encoder": ..., "decoder": {"embed", "cell", "readout", "bridge"[,
    "attention"][, "combine"]}[, "source_embed": {"table"}]}``. ``init(key,
    input_size=None)``: ``input_size`` is the source feature size (omit it for token sources).
    ``apply(params, source, targets, *, source_length=None, key=None, train=False)`` returns
    teacher-forced logits ``(T_tgt, vocab_size)``; mask the loss with the target length.
    ``decode(params, source, *, max_length, source_length=None, key=None, temperature=1.0)
    -> (tokens, length)``, see :class:`Generator`.

    With attention, ``apply`` and ``decode`` also take ``return_attention=False``; when
    true they also return the weights ``(T_tgt or max_length, T_src)``, row ``t`` those
    step ``t`` read (rows past the decoded ``length`` are 0). ``decode`` also takes
    ``beam_size=None``: an int runs :func:`rnnjax.decoding.beam_search` and returns its
    best sequence (``key`` must then be None).
    """
    if attention is not None and attention not in _ATTENTION_KINDS:
        raise ValueError(f"attention must be None or one of {_ATTENTION_KINDS}, got {attention!r}")
    if attention is not None and feed_context:
        raise ValueError(
            f"feed_context must be False or None with attention={attention!r} "
            f"(the attended context is fed instead), got {feed_context!r}"
        )
    source_embed = (
        None if source_vocab_size is None else embedding(source_vocab_size, source_embed_size)
    )

    def encode(params, source, source_length, key, train):
        source = _features(source_embed, params, source, "source", 1)
        with probes.scope("encoder"):
            final, annotations = encoder.apply(
                params["encoder"], source, length=source_length, key=key, train=train
            )
        return _flatten(final), annotations

    def init_encoder(k_src, k_enc, input_size):
        params = {}
        input_size = _input_params(source_embed, k_src, input_size, params)
        params["encoder"] = encoder.init(k_enc, input_size)
        return params, _flat_size(encoder.initial_carry(params["encoder"]))

    if attention is None:
        decoder = _token_decoder(
            decoder_cell,
            vocab_size,
            embed_size=embed_size,
            readout=readout,
            init_carry=True,
            feed_context=True if feed_context is None else feed_context,
            start_token=start_token,
            end_token=end_token,
            pad_token=pad_token,
        )

        def init(key, input_size=None):
            k_src, k_enc, k_dec = jax.random.split(key, 3)
            params, context_size = init_encoder(k_src, k_enc, input_size)
            params["decoder"] = decoder.init(k_dec, context_size)
            return params

        def apply(params, source, targets, *, source_length=None, key=None, train=False):
            c, _ = encode(params, source, source_length, key, train)
            with probes.scope("decoder"):
                return decoder.teacher_force(params["decoder"], c, targets)

        def decode(params, source, *, max_length, source_length=None, key=None, temperature=1.0):
            c, _ = encode(params, source, source_length, None, False)
            return decoder.decode(params["decoder"], c, max_length, key, temperature)

        return Generator(init, apply, decode, vocab_size)

    checks.positive_int(
        "attention_size", decoder_cell.hidden_size if attention_size is None else attention_size
    )
    attend = _attention_decoder(
        decoder_cell,
        vocab_size,
        attention,
        attention_size=decoder_cell.hidden_size if attention_size is None else attention_size,
        embed_size=embed_size,
        readout=readout,
        start_token=start_token,
        end_token=end_token,
        pad_token=pad_token,
    )

    def init_attending(key, input_size=None):
        k_src, k_enc, k_dec = jax.random.split(key, 3)
        params, context_size = init_encoder(k_src, k_enc, input_size)
        params["decoder"] = attend.init(k_dec, encoder.output_size, context_size)
        return params

    def apply_attending(
        params,
        source,
        targets,
        *,
        source_length=None,
        key=None,
        train=False,
        return_attention=False,
    ) -> Any:
        c, annotations = encode(params, source, source_length, key, train)
        source_memory = attend.memory(params["decoder"], annotations, source_length)
        logits, weights = attend.teacher_force(params["decoder"], c, source_memory, targets)
        return (logits, weights) if return_attention else logits

    def decode_attending(
        params,
        source,
        *,
        max_length,
        source_length=None,
        key=None,
        temperature=1.0,
        beam_size=None,
        return_attention=False,
    ) -> Any:
        checks.positive_int("max_length", max_length)
        if beam_size is not None and key is not None:
            raise ValueError("beam search is deterministic: pass key=None with beam_size")
        c, annotations = encode(params, source, source_length, None, False)
        source_memory = attend.memory(params["decoder"], annotations, source_length)
        tokens, length, weights = attend.decode(
            params["decoder"], c, source_memory, max_length, key, temperature, beam_size
        )
        return (tokens, length, weights) if return_attention else (tokens, length)

    return Generator(init_attending, apply_attending, decode_attending, vocab_size)


__all__ = [
    "Generator",
    "Model",
    "encoder_decoder",
    "many_to_many",
    "many_to_one",
    "one_to_many",
    "one_to_one",
]
