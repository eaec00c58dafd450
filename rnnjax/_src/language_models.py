"""The language model: an autoregressive network over tokens, with no input but the tokens.

``one_to_many`` generates from a fixed-size input (and needs one); a language model reads
its own tokens, ``p(y_1..y_T) = prod_t p(y_t | y_<t)``, and is continued from a prompt.
Its carry is explicit in and out, so that a long text is read in consecutive chunks with
the carry passed on (truncated backpropagation through time, :mod:`rnnjax.training.stateful`)
and so that a conditioning vector can set the carry a caption is generated from.
Decoding (sampling with temperature, top-k, top-p; greedy; beam search) is
:mod:`rnnjax.decoding`, which sees the model through :attr:`LanguageModel.step`.
:func:`carry_bridge` maps a conditioning vector (an image's pixels or features) to the
initial carry, so that the same model, step and decoders generate a caption for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks, decoding, layers, losses, padding, probes
from rnnjax._src import inputs as _inputs
from rnnjax._src.cells import Cell
from rnnjax._src.layers import Layer
from rnnjax._src.readouts import Readout, mlp

Array = jax.Array


class LanguageModel(NamedTuple):
    """An autoregressive token model as pure functions.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, tokens, *, length=None, carry=None, key=None, train=False)
        -> (final_carry, logits: (T, V))``: ``logits[t]`` is the distribution of the token
        after ``tokens[t]`` (train with ``targets = tokens[1:]``, or the next chunk's
        tokens shifted by one); padded steps ``t >= length`` give zero logits and leave the
        carry unchanged.
      step: ``step(params, carry, token) -> (carry, logits: (V,))``, one token read.
      initial_carry: ``initial_carry(params) -> carry`` (zeros).
      generate: ``generate(params, prompt, *, max_length, prompt_length=None, carry=None,
        key=None, temperature=None, top_k=None, top_p=None, beam_size=None,
        length_penalty=None, end_token=None, pad_token=0) -> (tokens: (max_length,), length)``,
        :func:`rnnjax.decoding.generate` from ``carry`` (default: the initial carry), the same
        keywords as :attr:`rnnjax.Generator.generate`.
      vocab_size: number of tokens.
    """

    init: Callable[[Array], Any]
    apply: Callable[..., tuple[Any, Array]]
    step: Callable[[Any, Any, Array], tuple[Any, Array]]
    initial_carry: Callable[[Any], Any]
    generate: Callable[..., tuple[Array, Array]]
    vocab_size: int


def language_model(
    layer: Layer,
    vocab_size: int,
    *,
    embed_size: int = 16,
    readout: Readout | None = None,
    dropout: float = 0.0,
) -> LanguageModel:
    """Returns the language model ``logits_t = readout(layer(embed(tokens))_t)``.

    Args:
      layer: a causal recurrent layer (``recurrent`` or a ``stack`` of them; a
        bidirectional layer would see the future).
      vocab_size: number of tokens.
      embed_size: size of the token embeddings.
      readout: maps the layer's outputs to logits (default :func:`rnnjax.readouts.linear`).
      dropout: dropout rate on the embeddings (the layer's inputs) and on the layer's
        outputs (the readout's inputs), never on the recurrent connections: the
        regularisation of Zaremba, Sutskever & Vinyals 2014 ("Recurrent Neural Network
        Regularization"). Kept entries are scaled by ``1 / (1 - dropout)``. Active only in
        ``apply(..., train=True, key=key)``; ``step`` and ``generate`` never drop.

    Params: ``{"embed": {"table"}, "rnn": layer params, "readout": ...}``; ``apply``
    checks them against what ``init`` makes (ValueError naming the first path that differs).
    Tokens outside ``[0, vocab_size)`` (``tokens``, ``prompt``) raise ValueError naming the
    argument and position when concrete; traced ones embed to zeros (or raise under
    :func:`rnnjax.checked`).
    """
    hint = "; wrap a cell in a layer: rnnjax.recurrent(cell)" if isinstance(layer, Cell) else ""
    _inputs.check_type("layer", layer, Layer, "an rnnjax.Layer (recurrent, stack)", hint)
    checks.positive_int("vocab_size", vocab_size)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    embed, readout = _inputs.token_embedding_and_readout(vocab_size, embed_size, readout)

    def init(key):
        k_emb, k_rnn, k_out = jax.random.split(key, 3)
        return {
            "embed": embed.init(k_emb),
            "rnn": layer.init(k_rnn, embed_size),
            "readout": readout.init(k_out, layer.output_size),
        }

    check_params = _inputs.params_checker(init)

    def initial_carry(params):
        return layer.initial_carry(params["rnn"])

    def apply(params, tokens, *, length=None, carry=None, key=None, train=False):
        if jnp.ndim(tokens) != 1:
            hint = " (batch with jax.vmap)" if jnp.ndim(tokens) == 2 else ""
            raise ValueError(
                f"tokens must have shape (T,) for one sequence{hint}; got {jnp.shape(tokens)}"
            )
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"tokens must be integers, got dtype {jnp.result_type(tokens)}")
        check_params(params)
        valid = None if length is None else padding.valid_steps(jnp.shape(tokens)[0], length)
        _inputs.check_ids(tokens, vocab_size, "tokens", valid=valid)
        use_dropout = train and dropout > 0.0
        if use_dropout and key is None:
            raise ValueError(
                "language_model(dropout>0).apply(train=True) needs a key, got key=None"
            )
        # Padded steps may hold any id: they read token 0, which the layer then ignores.
        xs = embed.apply(params["embed"], tokens if valid is None else jnp.where(valid, tokens, 0))
        k_out = None
        if use_dropout:  # without dropout the layer gets the caller's key unchanged
            assert key is not None  # checked above
            k_in, key, k_out = jax.random.split(key, 3)
            xs = layers.dropout(k_in, dropout, xs)
        with probes.scope("rnn"):
            final, ys = layer.apply(
                params["rnn"], xs, length=length, carry=carry, key=key, train=train
            )
        if k_out is not None:  # dropout runs
            ys = layers.dropout(k_out, dropout, ys)
        logits = readout.apply(params["readout"], ys)
        if length is not None:
            logits = padding.zero_outputs(padding.valid_steps(logits.shape[0], length), logits)
        return final, logits

    def step(params, carry, token):
        final, ys = layer.apply(
            params["rnn"], embed.apply(params["embed"], token[None]), carry=carry
        )
        return final, readout.apply(params["readout"], ys[0])

    def generate(
        params,
        prompt,
        *,
        max_length,
        prompt_length=None,
        carry=None,
        key=None,
        temperature=None,
        top_k=None,
        top_p=None,
        beam_size=None,
        length_penalty=None,
        end_token=None,
        pad_token=0,
    ):
        check_params(params)
        return decoding.generate(
            lambda c, t: step(params, c, t),
            initial_carry(params) if carry is None else carry,
            prompt,
            max_length=max_length,
            prompt_length=prompt_length,
            key=key,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            beam_size=beam_size,
            length_penalty=length_penalty,
            end_token=end_token,
            pad_token=pad_token,
        )

    return LanguageModel(init, apply, step, initial_carry, generate, vocab_size)


class CarryBridge(NamedTuple):
    """A map from a conditioning vector to a language model's initial carry, as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, x: (input_size,)) -> carry``, a pytree shaped like
        ``model.initial_carry(model_params)``; pass it as ``carry=`` to the model's
        ``apply`` and ``generate``, or to :func:`rnnjax.decoding.beam_search`.
    """

    init: Callable[[Array, int], Any]
    apply: Callable[[Any, Array], Any]


def carry_bridge(
    model: LanguageModel, hidden_sizes: tuple[int, ...] = (), *, activation: str = "relu"
) -> CarryBridge:
    """Returns the bridge ``carry_0 = tanh(f(x))``, split into the model's carry leaves.

    ``f`` is a feed-forward net, :func:`rnnjax.readouts.mlp` with ``hidden_sizes`` and
    ``activation`` and one output per carry entry (every leaf, every layer of a stack), so
    that without hidden layers each leaf is its own affine map of ``x``, ``tanh(x W_l + b_l)``,
    as :func:`rnnjax.one_to_many`'s bridge. Conditioning a generator on an image through its
    initial state is the captioning model of Karpathy & Fei-Fei 2015 ("Deep Visual-Semantic
    Alignments for Generating Image Descriptions", sec. 3.2: the image sets the first
    hidden state; Vinyals et al. 2015 feed it as the first input instead);
    ``tanh`` keeps the carry in the range a tanh cell's hidden state takes.

    Params: the :func:`rnnjax.readouts.mlp` params, a list of linear params, first layer first;
    the last layer's outputs are the carry leaves in ``jax.tree.leaves`` order, each flattened.
    """
    # The carry's leaves depend on the layer's structure only, not on its parameter values.
    shapes = jax.eval_shape(model.initial_carry, jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    leaves, treedef = jax.tree.flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    net = mlp(hidden_sizes, sum(sizes), activation)

    def init(key, input_size):
        checks.positive_int("input_size", input_size)
        return net.init(key, input_size)

    def apply(params, x):
        if jnp.ndim(x) != 1:
            hint = " (batch with jax.vmap)" if jnp.ndim(x) == 2 else ""
            raise ValueError(
                f"x must have shape (input_size,) for one example{hint}; got {jnp.shape(x)}"
            )
        flat = jnp.split(jnp.tanh(net.apply(params, x)), np.cumsum(sizes)[:-1])
        return jax.tree.unflatten(
            treedef,
            [part.reshape(leaf.shape).astype(leaf.dtype) for part, leaf in zip(flat, leaves)],
        )

    return CarryBridge(init, apply)


def chunk_loss(model: LanguageModel) -> Callable[..., tuple[Array, tuple[Any, dict]]]:
    """Returns ``loss_fn(params, batch, carry, key) -> (loss, (final_carry, aux))`` for stateful training.

    ``loss`` is the mean next-token cross-entropy (nats) over the valid steps of a batch of
    chunks (``batch.inputs``, ``batch.targets``: ``(B, K)``, ``batch.lengths``: ``(B,)``, as
    :func:`rnnjax.training.chunk_at` makes), each stream started from its row of ``carry``;
    ``aux["tokens"]`` counts the valid steps. For
    :func:`rnnjax.training.make_stateful_train_step`.

    With a ``key`` the model runs in training mode (``train=True``, one key per stream), so
    its dropout is active; with ``key=None`` (evaluation) it is not.
    """

    def loss_fn(params, batch, carry, key):
        if key is None:
            keys, train = None, False
        else:
            keys, train = jax.random.split(key, batch.inputs.shape[0]), True
        final, logits = jax.vmap(
            lambda x, n, c, k: model.apply(params, x, length=n, carry=c, key=k, train=train),
            in_axes=(0, 0, 0, None if keys is None else 0),
        )(batch.inputs, batch.lengths, carry, keys)
        mask = padding.valid_steps(batch.inputs.shape[1], batch.lengths)
        loss = losses.masked_cross_entropy(logits, batch.targets, mask)
        return loss, (final, {"tokens": jnp.sum(mask)})

    return loss_fn


__all__ = ["CarryBridge", "LanguageModel", "carry_bridge", "chunk_loss", "language_model"]
