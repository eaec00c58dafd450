"""Sequence to sequence: generators of tokens, from a vector (one-to-many) or a sequence (encoder-decoder).

A :class:`Generator` is built from two parts:

* an **encoder** that turns the input into what the decoder reads: for
  :func:`one_to_many` the input vector itself, for :func:`encoder_decoder` a recurrent layer's
  final carry (flattened to a context vector) and its outputs (the annotations attention
  reads);
* a **decoder**, one of two with the same functions (the protocol ``Decoder`` of the
  private ``rnnjax._src.decoders``): ``init``, ``read`` (what every step reads: the context, or
  the annotations prepared for attention), ``start`` (the loop's carry before the first
  token), ``step`` (one token read: the new carry and the next token's logits) and
  ``teacher_force`` (every step of a known target at once). The plain decoder (Sutskever et
  al. 2014; Cho et al. 2014) runs its cell on ``[embed(y_{t-1}), context]``; the attention
  decoders (Bahdanau et al. 2015, Luong et al. 2015) read a softmax-weighted sum of the
  annotations at every step.

Teacher forcing runs the decoder's recurrence through a layer's ``apply``
(:func:`rnnjax.recurrent`), the loop every layer runs: the fast path when the decoder's
step is a cell with one (the plain decoder), the reference loop otherwise (an attention
decoder's step reads the attention inside the recurrence), and the probes of
:func:`rnnjax.diagnostics.gradient_flow` under the label ``decoder/cell`` (``cell`` for
:func:`one_to_many`). What each step emits (logits, attention weights) is computed after
the loop from the loop's outputs, vectorised over time.

Generation is :func:`rnnjax.decoding.generate` over the decoder's ``step``, with the same
keywords as :meth:`rnnjax.LanguageModel.generate`. Every function acts on ONE example;
batch with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks, padding, probes
from rnnjax._src import decoders as _decoders
from rnnjax._src import inputs as _inputs
from rnnjax._src.cells import Cell
from rnnjax._src.layers import Layer
from rnnjax._src.readouts import Embedding, Readout, embedding

Array = jax.Array


class Generator(NamedTuple):
    """A network that emits a token sequence, trained by teacher forcing, as pure functions.

    Attributes:
      init: ``init(key, input_size=None) -> params``.
      apply: ``apply(params, source, targets, **kw) -> logits: (T, vocab_size)``, the
        teacher-forced logits: step ``t`` reads ``targets[t-1]`` (``start_token`` at
        ``t = 0``) and predicts ``targets[t]``.
      generate: ``generate(params, source, *, max_length, prompt=None, prompt_length=None,
        key=None, temperature=None, top_k=None, top_p=None, beam_size=None,
        length_penalty=None, end_token=..., pad_token=..., **kw) -> (tokens: (max_length,)
        int32, length: () int32)``: the prompt (the first target tokens, given; none by
        default) and its continuation, :func:`rnnjax.decoding.generate` after the start
        token. Greedy by default; sampled with a ``key``; beam search with ``beam_size``.
        ``end_token`` and ``pad_token`` default to the constructor's. ``length`` counts the
        tokens up to and including the first generated ``end_token`` (``max_length`` if
        none); later positions hold ``pad_token``.
      vocab_size: number of output tokens.
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    generate: Callable[..., Any]
    vocab_size: int


# --------------------------------------------------------------------------- generators


def _check_cell(name: str, value: Any) -> None:
    hint = "; a layer's cell is what belongs here" if isinstance(value, Layer) else ""
    _inputs.check_type(
        name, value, Cell, "an rnnjax.Cell (rnnjax.lstm(H), rnnjax.gru(H), ...)", hint
    )


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
    ``generate(params, x, *, max_length, ...) -> (tokens, length)``, see :class:`Generator`.

    Token ids (``targets``, a token ``x``, ``prompt``) outside ``[0, vocab_size)`` raise
    ValueError naming the argument and position when concrete; traced ones embed to zeros
    (or raise under :func:`rnnjax.checked`). ``params`` must have the structure and shapes
    ``init`` makes for this input (ValueError naming the first path that differs).
    """
    _check_cell("cell", cell)
    checks.positive_int("vocab_size", vocab_size)
    if condition not in _CONDITIONS:
        raise ValueError(f"condition must be one of {sorted(_CONDITIONS)}, got {condition!r}")
    start_token = _inputs.special_token("start_token", start_token, vocab_size)
    tokens = (
        _inputs.optional_token("end_token", end_token, vocab_size),
        _inputs.special_token("pad_token", pad_token, vocab_size),
    )
    _inputs.check_embedding(embedding)
    init_carry, feed_context = _CONDITIONS[condition]
    decoder = _decoders.plain_decoder(
        cell,
        vocab_size,
        embed_size=embed_size,
        readout=readout,
        init_carry=init_carry,
        feed_context=feed_context,
    )

    def init(key, input_size=None):
        params = {}
        input_size = _inputs.input_params(embedding, jax.random.fold_in(key, 2), input_size, params)
        return {**decoder.init(key, input_size, None), **params}

    check_params = _inputs.params_checker(init)

    def context(params, x):
        if embedding is None:
            if jnp.ndim(x) != 1:
                hint = " (batch with jax.vmap)" if jnp.ndim(x) == 2 else ""
                raise ValueError(
                    f"x must have shape (input_size,) for one example{hint}; got {jnp.shape(x)}"
                )
            check_params(params, jnp.shape(x)[0])
        else:
            check_params(params, None)
        return _inputs.features(embedding, params, x, "x", 0)

    def apply(params, x, targets, *, key=None, train=False):
        del key, train
        _decoders.check_targets(targets, vocab_size)
        c = context(params, x)
        logits, _ = decoder.teacher_force(
            params, c, decoder.start(params, c), _decoders.previous(targets, start_token)
        )
        return logits

    def generate(
        params,
        x,
        *,
        max_length,
        prompt=None,
        prompt_length=None,
        key=None,
        temperature=None,
        top_k=None,
        top_p=None,
        beam_size=None,
        length_penalty=None,
        end_token=_decoders.UNSET,
        pad_token=_decoders.UNSET,
    ):
        options = _decoders.generation_options(
            vocab_size, tokens, key=key, temperature=temperature, top_k=top_k, top_p=top_p,
            beam_size=beam_size, length_penalty=length_penalty, end_token=end_token,
            pad_token=pad_token,
        )  # fmt: skip
        c = context(params, x)
        return _decoders.generate_after_start(
            decoder,
            vocab_size,
            params,
            c,
            decoder.start(params, c),
            start_token=start_token,
            max_length=max_length,
            prompt=prompt,
            prompt_length=prompt_length,
            options=options,
        )

    return Generator(init, apply, generate, vocab_size)


# --------------------------------------------------------------------------- encoder-decoder


def _flat_size(tree: Any) -> int:
    return sum(int(np.prod(jnp.shape(a))) for a in jax.tree.leaves(tree))


def _flatten(tree: Any) -> Array:
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


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
      encoder: the encoder layer (``recurrent``, ``bidirectional``, ``stack``, ...); a
        cell here is a TypeError (wrap it: ``rnnjax.recurrent(cell)``).
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
    ``apply(params, source, targets, *, source_length=None, key=None, train=False,
    return_attention=False)`` returns teacher-forced logits ``(T_tgt, vocab_size)``; mask the
    loss with the target length. ``generate(params, source, *, max_length,
    source_length=None, ..., return_attention=False) -> (tokens, length)``, see
    :class:`Generator`. ``return_attention=True`` (with attention only) also returns the
    weights ``(T_tgt or max_length, T_src)``, row ``t`` those step ``t`` read (rows past
    the generated ``length`` are 0).

    Token ids (``targets``, token ``source``, ``prompt``) outside their vocabulary raise
    ValueError naming the argument and position when concrete; traced ones embed to zeros
    (or raise under :func:`rnnjax.checked`). ``params`` must have the structure and shapes
    ``init`` makes for this source (ValueError naming the first path that differs).
    """
    hint = "; wrap a cell in a layer: rnnjax.recurrent(cell)" if isinstance(encoder, Cell) else ""
    _inputs.check_type(
        "encoder", encoder, Layer, "an rnnjax.Layer (recurrent, bidirectional, stack)", hint
    )
    _check_cell("decoder_cell", decoder_cell)
    checks.positive_int("vocab_size", vocab_size)
    if attention is not None and attention not in _ATTENTION_KINDS:
        raise ValueError(f"attention must be None or one of {_ATTENTION_KINDS}, got {attention!r}")
    if attention is not None and feed_context:
        raise ValueError(
            f"feed_context must be False or None with attention={attention!r} "
            f"(the attended context is fed instead), got {feed_context!r}"
        )
    start_token = _inputs.special_token("start_token", start_token, vocab_size)
    tokens = (
        _inputs.optional_token("end_token", end_token, vocab_size),
        _inputs.special_token("pad_token", pad_token, vocab_size),
    )
    source_embed = (
        None if source_vocab_size is None else embedding(source_vocab_size, source_embed_size)
    )
    if attention is None:
        decoder = _decoders.plain_decoder(
            decoder_cell,
            vocab_size,
            embed_size=embed_size,
            readout=readout,
            init_carry=True,
            feed_context=True if feed_context is None else feed_context,
        )
    else:
        attention_size = decoder_cell.hidden_size if attention_size is None else attention_size
        checks.positive_int("attention_size", attention_size)
        decoder = _decoders.attention_decoder(
            decoder_cell,
            vocab_size,
            attention,
            attention_size=attention_size,
            embed_size=embed_size,
            readout=readout,
        )

    def init(key, input_size=None):
        k_src, k_enc, k_dec = jax.random.split(key, 3)
        params = {}
        input_size = _inputs.input_params(source_embed, k_src, input_size, params)
        params["encoder"] = encoder.init(k_enc, input_size)
        context_size = _flat_size(encoder.initial_carry(params["encoder"]))
        params["decoder"] = decoder.init(k_dec, context_size, encoder.output_size)
        return params

    check_params = _inputs.params_checker(init)

    def encode(params, source, source_length, key, train):
        """Returns ``(c, what the decoder reads, the decoder's start state)``."""
        if source_embed is not None:
            check_params(params, None)
        elif jnp.ndim(source) == 2:  # other shapes: the encoder says what it expects
            check_params(params, jnp.shape(source)[1])
        source = _inputs.features(source_embed, params, source, "source", 1, source_length)
        with probes.scope("encoder"):
            final, annotations = encoder.apply(
                params["encoder"], source, length=source_length, key=key, train=train
            )
        c = _flatten(final)
        read = decoder.read(params["decoder"], c, annotations, source_length)
        return read, decoder.start(params["decoder"], c)

    def check_return_attention(return_attention):
        if return_attention and attention is None:
            raise ValueError(
                "return_attention=True needs a model with attention (attention='bahdanau' or "
                "'luong'), got attention=None"
            )

    def apply(
        params,
        source,
        targets,
        *,
        source_length=None,
        key=None,
        train=False,
        return_attention=False,
    ):
        check_return_attention(return_attention)
        _decoders.check_targets(targets, vocab_size)
        read, state = encode(params, source, source_length, key, train)
        with probes.scope("decoder"):
            logits, weights = decoder.teacher_force(
                params["decoder"], read, state, _decoders.previous(targets, start_token)
            )
        return (logits, weights) if return_attention else logits

    def generate(
        params,
        source,
        *,
        max_length,
        source_length=None,
        prompt=None,
        prompt_length=None,
        key=None,
        temperature=None,
        top_k=None,
        top_p=None,
        beam_size=None,
        length_penalty=None,
        end_token=_decoders.UNSET,
        pad_token=_decoders.UNSET,
        return_attention=False,
    ):
        check_return_attention(return_attention)
        options = _decoders.generation_options(
            vocab_size, tokens, key=key, temperature=temperature, top_k=top_k, top_p=top_p,
            beam_size=beam_size, length_penalty=length_penalty, end_token=end_token,
            pad_token=pad_token,
        )  # fmt: skip
        read, state = encode(params, source, source_length, None, False)
        tokens_out, length = _decoders.generate_after_start(
            decoder,
            vocab_size,
            params["decoder"],
            read,
            state,
            start_token=start_token,
            max_length=max_length,
            prompt=prompt,
            prompt_length=prompt_length,
            options=options,
        )
        if not return_attention:
            return tokens_out, length
        # The weights of the emitted tokens: teacher forcing on them runs the same steps.
        _, weights = decoder.teacher_force(
            params["decoder"], read, state, _decoders.previous(tokens_out, start_token)
        )
        valid = padding.valid_steps(max_length, length)
        return tokens_out, length, padding.zero_outputs(valid, weights)

    return Generator(init, apply, generate, vocab_size)


__all__ = ["Generator", "encoder_decoder", "one_to_many"]
