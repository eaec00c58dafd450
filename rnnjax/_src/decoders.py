"""The two decoders of :mod:`rnnjax.seq2seq`, behind one protocol (:class:`Decoder`).

Not API (the module name starts with an underscore): :func:`rnnjax.one_to_many` and
:func:`rnnjax.encoder_decoder` build them. The plain decoder reads a context vector (Cho et
al. 2014; Sutskever et al. 2014); the attention decoders read a softmax-weighted sum of the
encoder's annotations at every step (Bahdanau et al. 2015; Luong et al. 2015). Teacher
forcing runs each decoder's recurrence through :func:`rnnjax.recurrent`'s ``apply`` under
the probe scope ``cell``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import attention as attention_lib
from rnnjax._src import checks, decoding, probes
from rnnjax._src import inputs as _inputs
from rnnjax._src.cells import Cell
from rnnjax._src.layers import _UNCHECKED_APPLY, recurrent
from rnnjax._src.readouts import Readout, linear

Array = jax.Array


class Decoder(NamedTuple):
    """The protocol both decoders follow.

    ``init(key, context_size, annotation_size) -> params``;
    ``read(params, context, annotations, length) -> source``, what every step reads;
    ``start(params, context) -> state``, the carry before the first token;
    ``step(params, source, state, token) -> (state, logits: (V,))``;
    ``teacher_force(params, source, state, previous: (T,)) -> (logits: (T, V), weights)``
    (weights ``(T, T_src)`` with attention, else None).
    """

    init: Callable[[Array, int, int | None], Any]
    read: Callable[[Any, Array, Any, Any], Any]
    start: Callable[[Any, Array], Any]
    step: Callable[[Any, Any, Any, Array], tuple[Any, Array]]
    teacher_force: Callable[[Any, Any, Any, Array], tuple[Array, Array | None]]


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


def plain_decoder(
    cell: Cell,
    vocab_size: int,
    *,
    embed_size: int,
    readout: Readout | None,
    init_carry: bool,
    feed_context: bool,
) -> Decoder:
    """Returns the decoder that reads a context vector ``c: (C,)`` only.

    The context sets the initial carry through a bridge, one affine map per carry leaf,
    ``carry_0 = tanh(c W + b)``, and/or is concatenated to every step's input,
    ``x_t = [embed(y_{t-1}), c]`` (Cho et al. 2014, "Learning Phrase Representations using
    RNN Encoder-Decoder", eqs. for the decoder); ``logits_t = readout(h_t)``.
    """
    if not (init_carry or feed_context):
        raise ValueError("the context must initialise the carry, be fed at each step, or both")
    embed, readout = _inputs.token_embedding_and_readout(vocab_size, embed_size, readout)
    loop = recurrent(cell)

    def init(key, context_size, annotation_size=None):
        del annotation_size
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

    def read(params, context, annotations, length):
        del params, annotations, length
        return context

    def start(params, context):
        return _bridge(cell, params, context) if init_carry else cell.initial_carry(params["cell"])

    def step_input(params, context, tokens):
        e = embed.apply(params["embed"], tokens)
        if not feed_context:
            return e
        ctx = jnp.broadcast_to(context, e.shape[:-1] + context.shape)
        return jnp.concatenate([e, ctx.astype(e.dtype)], axis=-1)

    def step(params, context, carry, token):
        carry, y = cell.step(params["cell"], carry, step_input(params, context, token))
        return carry, readout.apply(params["readout"], y)

    def teacher_force(params, context, carry, previous):
        with probes.scope("cell"):
            _, ys = loop.apply(params["cell"], step_input(params, context, previous), carry=carry)
        return readout.apply(params["readout"], ys), None

    return Decoder(init, read, start, step, teacher_force)


def _cell_hidden(cell: Cell) -> Callable[[Any], Array]:
    """Returns ``carry -> h``, the decoder state attention reads (a query, an output)."""
    hidden = getattr(cell.step, "hidden", None)
    if hidden is not None:
        return hidden

    def whole_carry(carry):
        if not isinstance(carry, jax.Array) or carry.shape != (cell.hidden_size,):
            raise ValueError(
                f"an attention decoder reads the decoder's hidden state from its carry; for a "
                f"cell whose step is not a GatedStep the carry must be h: ({cell.hidden_size},), "
                f"got {jax.tree.map(jnp.shape, carry)}"
            )
        return carry

    return whole_carry


def attention_decoder(
    cell: Cell,
    vocab_size: int,
    kind: str,
    *,
    attention_size: int,
    embed_size: int,
    readout: Readout | None,
) -> Decoder:
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

    ``s_i``/``h_t`` is the hidden state in the cell's carry. Both start from the bridge
    ``carry_0 = tanh(c W + b)`` of the encoder's final carry ``c`` (Bahdanau et al.
    initialise from the backward encoder's first state, which a bidirectional encoder's
    final carry holds; Luong et al. from the last encoder state). The loop carries the
    cell's carry only, so :func:`rnnjax.diagnostics.gradient_flow` reports the decoder's
    state as for a plain decoder; the step's attention output (``c_i``, ``h~_{t-1}``) is
    recomputed from it.
    """
    embed, readout = _inputs.token_embedding_and_readout(vocab_size, embed_size, readout)
    bahdanau = kind == "bahdanau"
    score = attention_lib.additive(attention_size) if bahdanau else attention_lib.general()
    hidden = cell.hidden_size
    hidden_of = _cell_hidden(cell)

    def init(key, context_size, annotation_size):
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

    def read(params, context, annotations, length):
        del context
        return attention_lib.memory(score, params["attention"], annotations, length)

    def start(params, context):
        # (carry, first): Luong's first step reads h~_0 = 0, not h~ of the bridged carry.
        return _bridge(cell, params, context), jnp.array(True)

    def attentional(params, source, h):
        """Returns Luong's ``(h~_t, weights)`` for the state ``h_t`` (eq. 5)."""
        context, weights = attention_lib.attend(score, params["attention"], h, source)
        return jnp.tanh(jnp.concatenate([context, h]) @ params["combine"]["w"]), weights

    def recur(params_and_source, carry, x):
        """The loop's step, a cell's: ``(carry_{t-1}, x = [E y_{t-1}; first]) -> (carry_t, h_t)``.

        What the step reads besides the token comes from the previous state: Bahdanau's
        ``c_i`` (the query is ``s_{i-1}``), Luong's ``h~_{t-1}`` (0 at the first step),
        recomputed here rather than carried, so that the carry is the cell's alone.
        """
        params, source = params_and_source
        e, first = x[:-1], x[-1] > 0
        h = hidden_of(carry)
        if bahdanau:
            fed, _ = attention_lib.attend(score, params["attention"], h, source)
        else:
            fed = jnp.where(first, 0.0, attentional(params, source, h)[0])
        carry, _ = cell.step(params["cell"], carry, jnp.concatenate([e, fed.astype(e.dtype)]))
        return carry, hidden_of(carry)

    def loop_initial_carry(params_and_source: Any) -> Any:
        return cell.initial_carry(params_and_source[0]["cell"])

    loop = recurrent(
        Cell(
            init=lambda key, input_size: {},  # never called: the decoder's init makes params
            initial_carry=loop_initial_carry,
            step=recur,
            hidden_size=hidden,
            kind=("attention decoder", kind, cell.kind),
            carry_names=cell.carry_names,
        )
    )
    # Its params are the decoder's (checked by the model's apply), with the source beside
    # them: not what the wrapper cell's init makes, so the layer's own check is skipped.
    loop_apply = _UNCHECKED_APPLY[loop.apply]

    def emit(params, source, query, h, e):
        """Returns ``(logits: (V,), weights: (T_src,))`` of the step that reached ``h``.

        ``query`` is the state before the step (Bahdanau's ``s_{i-1}``; unused by Luong).
        """
        if bahdanau:
            context, weights = attention_lib.attend(score, params["attention"], query, source)
            return readout.apply(params["readout"], jnp.concatenate([h, context, e])), weights
        out, weights = attentional(params, source, h)
        return readout.apply(params["readout"], out), weights

    def step(params, source, state, token):
        carry, first = state
        e = embed.apply(params["embed"], token)
        new_carry, h = recur((params, source), carry, jnp.append(e, first.astype(e.dtype)))
        logits, _ = emit(params, source, hidden_of(carry), h, e)
        return (new_carry, jnp.zeros_like(first)), logits

    def teacher_force(params, source, state, previous):
        carry, _ = state
        es = embed.apply(params["embed"], previous)
        first = (jnp.arange(es.shape[0]) == 0).astype(es.dtype)[:, None]
        with probes.scope("cell"):
            _, hs = loop_apply((params, source), jnp.concatenate([es, first], 1), carry=carry)
        # Step t's query is the state before it: the start carry's, then the loop's outputs.
        queries = jnp.concatenate([hidden_of(carry)[None].astype(hs.dtype), hs[:-1]])
        return jax.vmap(emit, in_axes=(None, None, 0, 0, 0))(params, source, queries, hs, es)

    return Decoder(init, read, start, step, teacher_force)


# ------------------------------------------------------- generation after a start token


def check_targets(targets: Any, vocab_size: int) -> None:
    if jnp.ndim(targets) != 1 or jnp.shape(targets)[0] == 0:
        raise ValueError(
            f"targets must have shape (T,) with T >= 1 for one sequence, got {jnp.shape(targets)}"
        )
    if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
        raise TypeError(f"targets must be integer tokens, got dtype {jnp.result_type(targets)}")
    _inputs.check_ids(targets, vocab_size, "targets")


def previous(targets: Array, start_token: int) -> Array:
    """Returns what teacher forcing reads: ``[start_token, targets[:-1]]``."""
    return jnp.concatenate([jnp.array([start_token], targets.dtype), targets[:-1]])


def generate_after_start(
    decoder: Decoder,
    vocab_size: int,
    params: Any,
    source: Any,
    state: Any,
    *,
    start_token: int,
    max_length: int,
    prompt: Any,
    prompt_length: Any,
    options: dict,
) -> tuple[Array, Array]:
    """Returns ``(tokens, length)``: :func:`rnnjax.decoding.generate` after the start token."""
    checks.positive_int("max_length", max_length)
    if prompt is None:
        forced, forced_length = jnp.array([start_token], jnp.int32), None
    else:
        prompt = jnp.asarray(prompt)
        if prompt.ndim != 1 or prompt.shape[0] == 0:
            raise ValueError(f"prompt must have shape (P,) with P >= 1, got {prompt.shape}")
        if not jnp.issubdtype(prompt.dtype, jnp.integer):
            raise TypeError(f"prompt must be integer tokens, got dtype {prompt.dtype}")
        forced = jnp.concatenate([jnp.array([start_token], jnp.int32), prompt.astype(jnp.int32)])
        forced_length = None if prompt_length is None else prompt_length + 1
        if prompt.shape[0] > max_length:
            raise ValueError(
                f"prompt must have shape (P,) with 1 <= P <= max_length={max_length}, "
                f"got {prompt.shape}"
            )
        valid = None
        if prompt_length is not None:
            valid = jnp.arange(prompt.shape[0]) < prompt_length
        _inputs.check_ids(prompt, vocab_size, "prompt", valid=valid)
    tokens, length = decoding.generate(
        lambda s, t: decoder.step(params, source, s, t),
        state,
        forced,
        max_length=max_length + 1,
        prompt_length=forced_length,
        **options,
    )
    return tokens[1:], length - 1  # without the start token


UNSET: Any = object()


def generation_options(
    vocab_size,
    defaults,
    *,
    key,
    temperature,
    top_k,
    top_p,
    beam_size,
    length_penalty,
    end_token,
    pad_token,
) -> dict:
    end_token = defaults[0] if end_token is UNSET else end_token
    pad_token = defaults[1] if pad_token is UNSET else pad_token
    return dict(
        key=key,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        beam_size=beam_size,
        length_penalty=length_penalty,
        end_token=_inputs.optional_token("end_token", end_token, vocab_size),
        pad_token=_inputs.special_token("pad_token", pad_token, vocab_size),
    )
