"""What enters a model, checked once: token ids, special tokens, embeddings, parameter trees.

Shared by the model kinds (:mod:`rnnjax.models`, :mod:`rnnjax.seq2seq`,
:mod:`rnnjax.language_models`), the decoders (:mod:`rnnjax.decoding`) and the losses; not
API (the module name starts with an underscore), so its names carry none.

Token ids follow the contract lengths have (:func:`rnnjax.padding.check_length`): a
concrete id outside ``[0, vocab_size)`` raises ValueError naming the argument, the position
and the value; a traced one has one defined, finite meaning, said by each entry point, and
raises :class:`rnnjax.InvalidValueError` under :func:`rnnjax.checked`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks, padding
from rnnjax._src.readouts import Embedding, Readout, embedding, linear

Array = jax.Array


def is_traced(value: Any) -> bool:
    """Returns whether ``value`` is a tracer (its value unknown until run time)."""
    return isinstance(value, jax.core.Tracer)


def _concrete(*values: Any) -> bool:
    return not any(is_traced(v) for v in values)


def check_ids(
    ids: Any, vocab_size: int, name: str, *, valid: Any = None, bound: str = "vocab_size"
) -> None:
    """Raises ValueError if a concrete id of ``ids`` at a ``valid`` position leaves
    ``[0, vocab_size)``; emits the same check for traced ids under :func:`rnnjax.checked`.

    The message names ``name``, the position (an index into ``ids``; the flat index under
    ``jax.vmap`` is added by the check) and the value. ``valid``: bool, broadcastable to
    ``ids``, False where ids are padding that may hold anything (default: all valid).
    """
    if jnp.size(ids) == 0:
        return
    if _concrete(ids, valid):
        ids_np = np.asarray(ids)
        bad = (ids_np < 0) | (ids_np >= vocab_size)
        if valid is not None:
            bad &= np.broadcast_to(np.asarray(valid, bool), ids_np.shape)
        if bad.any():
            where = np.unravel_index(int(np.flatnonzero(bad)[0]), ids_np.shape)
            position = where[0] if len(where) == 1 else tuple(int(i) for i in where)
            raise ValueError(
                f"{name} must be in [0, {bound}={vocab_size}), got {ids_np[where]} at "
                f"position {position} of {name} (shape {ids_np.shape})"
            )
        return
    if not checks.enabled():
        return
    ids = jnp.asarray(ids)
    bad = (ids < 0) | (ids >= vocab_size)
    if valid is not None:
        bad &= jnp.broadcast_to(jnp.asarray(valid, bool), ids.shape)
    flat = jnp.argmax(jnp.ravel(bad))
    index = jnp.unravel_index(flat, ids.shape) if ids.ndim else ()
    if ids.ndim == 0:
        position = "()"
    elif ids.ndim == 1:
        position = "{p0}"
    else:
        position = "(" + ", ".join(f"{{p{i}}}" for i in range(ids.ndim)) + ")"
    checks.check(
        ~jnp.any(bad),
        f"{name} must be in [0, {bound}={vocab_size}), got {{value}} at position {position} "
        f"of {name} (shape {ids.shape})",
        value=jnp.ravel(ids)[flat],
        **{f"p{i}": p for i, p in enumerate(index)},
    )


def optional_token(name: str, value: Any, vocab_size: int) -> int | None:
    """Returns :func:`special_token` of ``value``, or None if it is None."""
    return None if value is None else special_token(name, value, vocab_size)


def special_token(name: str, value: Any, vocab_size: int) -> int:
    """Returns ``value`` as an int; raises ValueError unless it is an int (Python or NumPy)
    in ``[0, vocab_size)``."""
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, (bool, np.bool_))
        or not 0 <= value < vocab_size
    ):
        raise ValueError(
            f"{name} must be an int in [0, vocab_size={vocab_size}) (a concrete token), "
            f"got {value!r}"
        )
    return int(value)


def token_embedding_and_readout(
    vocab_size: int, embed_size: int, readout: Readout | None
) -> tuple[Embedding, Readout]:
    """Returns the embedding and readout of a model over tokens (default readout: linear).

    Raises ValueError unless the readout emits one logit per token.
    """
    check_readout(readout)
    embed = embedding(vocab_size, embed_size)
    readout = linear(vocab_size) if readout is None else readout
    if readout.output_size != vocab_size:
        raise ValueError(
            f"readout.output_size must equal vocab_size={vocab_size}, got {readout.output_size}"
        )
    return embed, readout


def check_type(name: str, value: Any, kind: type, what: str, hint: str = "") -> None:
    """Raises TypeError unless ``value`` is a ``kind`` (``what`` says how to make one)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}{hint}")


def check_readout(readout: Any, name: str = "readout", *, optional: bool = True) -> None:
    """Raises TypeError unless ``readout`` is an :class:`rnnjax.readouts.Readout` (or None)."""
    if optional and readout is None:
        return
    check_type(name, readout, Readout, "an rnnjax.readouts.Readout (linear, mlp)")


def check_embedding(value: Any) -> None:
    """Raises TypeError unless ``value`` is an :func:`rnnjax.readouts.embedding` or None."""
    if value is not None:
        check_type(
            "embedding", value, Embedding, "an rnnjax.readouts.embedding(vocab_size, features)"
        )


def input_params(
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


def features(
    embedding: Embedding | None,
    params: Any,
    inputs: Array,
    name: str,
    ndim: int,
    length: Any = None,
) -> Array:
    """Returns the features the network reads: ``inputs``, or its ``ndim``-axis tokens embedded.

    Token ids are checked here, under the argument's own ``name`` (see :func:`check_ids`),
    at the valid steps ``t < length`` only: padding may hold any id (it reads token 0,
    which the layer then ignores). A traced id out of range embeds to zeros.
    """
    if embedding is None:
        return inputs
    if jnp.ndim(inputs) != ndim:
        raise ValueError(
            f"{name} must be integer tokens of shape {_TOKEN_SHAPES[ndim]} for one example "
            f"(the model embeds them), got shape {jnp.shape(inputs)}"
        )
    if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
        raise TypeError(f"{name} must be integer tokens, got dtype {jnp.result_type(inputs)}")
    valid = None if length is None or ndim == 0 else padding.valid_steps(inputs.shape[0], length)
    check_ids(inputs, embedding.vocab_size, name, valid=valid)
    if valid is not None:
        inputs = jnp.where(valid, inputs, 0)
    return embedding.apply(params["source_embed"], inputs)


def params_checker(init: Any) -> Any:
    """Returns ``check(params, *init_args)``: raises ValueError unless ``params`` has the
    structure and shapes ``init(key, *init_args)`` makes, naming the first path that differs.

    Floating dtypes may differ (parameters cast to float64 or bfloat16 are the same model).
    The expected tree is computed once per ``init_args`` (``jax.eval_shape``, no FLOPs).
    """
    cache: dict[tuple, Any] = {}

    def check(params: Any, *init_args: Any) -> None:
        if init_args not in cache:
            # In a fresh context: an init that runs a layer to learn a size must not meet
            # the probes of a gradient_flow this apply may run under.
            cache[init_args] = contextvars.Context().run(
                jax.eval_shape, lambda k: init(k, *init_args), jax.random.key(0)
            )
        expected = cache[init_args]
        # A float leaf may arrive in another float dtype; if the structures differ,
        # check_tree names where.
        with contextlib.suppress(ValueError, TypeError):
            expected = jax.tree.map(
                lambda e, g: jax.ShapeDtypeStruct(
                    e.shape,
                    jnp.result_type(g)
                    if jnp.issubdtype(e.dtype, jnp.floating)
                    and jnp.issubdtype(jnp.result_type(g), jnp.floating)
                    else e.dtype,
                ),
                expected,
                params,
            )
        # Compared as shapes: check_tree reads a leaf's dtype with np.asarray, which a
        # tracer refuses (under jit, grad, vmap).
        received = jax.tree.map(
            lambda g: jax.ShapeDtypeStruct(jnp.shape(g), jnp.result_type(g)), params
        )
        checks.check_tree(expected, received, name="params")

    return check
