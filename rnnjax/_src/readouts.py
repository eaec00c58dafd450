"""The implementation of :mod:`rnnjax.readouts` (its docstring describes it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, initializers

Array = jax.Array
Initializer = Callable[..., Array]


class Readout(NamedTuple):
    """A feed-forward map as pure functions over plain pytrees.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, x) -> y`` with ``x: (..., input_size)`` and
        ``y: (..., output_size)``; leading axes are carried through.
      output_size: size of the last axis of ``y``.
    """

    init: Callable[[Array, int], Any]
    apply: Callable[[Any, Array], Array]
    output_size: int


class Embedding(NamedTuple):
    """A token-to-vector table lookup as pure functions.

    Attributes:
      init: ``init(key) -> {"table": (vocab_size, features)}``.
      apply: ``apply(params, tokens) -> vectors`` with integer ``tokens: (...)`` and
        ``vectors: (..., features)``.
      vocab_size: number of rows of the table.
      features: size of each vector.
    """

    init: Callable[[Array], Any]
    apply: Callable[[Any, Array], Array]
    vocab_size: int
    features: int


def _check_features(params: Any, x: Array, name: str = "x") -> None:
    expected = params["w"].shape[0]
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != expected:
        raise ValueError(
            f"{name} must have shape (..., {expected}) for these parameters, got shape "
            f"{jnp.shape(x)}"
        )


def linear(
    output_size: int,
    *,
    use_bias: bool = True,
    kernel_init: Initializer = initializers.lecun_normal(),
    bias_init: Initializer = initializers.zeros,
    param_dtype: Any = jnp.float32,
) -> Readout:
    """Returns the affine readout ``y = x W + b``.

    Params: ``w: (input_size, output_size)`` and, with ``use_bias``, ``b: (output_size,)``.
    ``apply(params, x)`` maps ``x: (..., input_size)`` to ``(..., output_size)``.
    """
    checks.positive_int("output_size", output_size)

    def init(key: Array, input_size: int) -> dict[str, Array]:
        checks.positive_int("input_size", input_size)
        k_w, k_b = jax.random.split(key)
        params = {"w": kernel_init(k_w, (input_size, output_size), param_dtype)}
        if use_bias:
            params["b"] = bias_init(k_b, (output_size,), param_dtype)
        return params

    def apply(params: dict[str, Array], x: Array) -> Array:
        _check_features(params, x)
        y = x @ params["w"]
        return y + params["b"] if "b" in params else y

    return Readout(init, apply, output_size)


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
}


def mlp(
    hidden_sizes: Sequence[int],
    output_size: int,
    activation: str = "relu",
    **linear_kwargs: Any,
) -> Readout:
    """Returns a multilayer perceptron: affine maps with ``activation`` between them.

    ``y = L_n(act(L_{n-1}(... act(L_1(x)))))`` with ``L_i`` as in :func:`linear`; no
    activation after the last layer, so ``y`` are logits or regression outputs.

    Args:
      hidden_sizes: sizes of the hidden layers (empty: a single :func:`linear`).
      output_size: size of ``y``.
      activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"identity"``.
      **linear_kwargs: passed to every :func:`linear`.

    Params: a list of :func:`linear` params, first layer first.
    ``apply(params, x)`` maps ``x: (..., input_size)`` to ``(..., output_size)``.
    """
    hidden_sizes = tuple(hidden_sizes)
    for i, h in enumerate(hidden_sizes):
        checks.positive_int(f"hidden_sizes[{i}]", h)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    act = _ACTIVATIONS[activation]
    layers = [linear(h, **linear_kwargs) for h in hidden_sizes] + [
        linear(output_size, **linear_kwargs)
    ]

    def init(key: Array, input_size: int) -> list[dict[str, Array]]:
        params, size = [], input_size
        for layer, k in zip(layers, jax.random.split(key, len(layers))):
            params.append(layer.init(k, size))
            size = layer.output_size
        return params

    def apply(params: list[dict[str, Array]], x: Array) -> Array:
        if not isinstance(params, (list, tuple)) or len(params) != len(layers):
            raise ValueError(
                f"params must be a list of {len(layers)} linear params, got {type(params).__name__}"
            )
        for i, (layer, p) in enumerate(zip(layers, params)):
            x = layer.apply(p, x)
            if i < len(layers) - 1:
                x = act(x)
        return x

    return Readout(init, apply, output_size)


def embedding(
    vocab_size: int,
    features: int,
    *,
    embedding_init: Initializer = initializers.normal(1.0),
    param_dtype: Any = jnp.float32,
) -> Embedding:
    """Returns a lookup table mapping tokens in ``[0, vocab_size)`` to ``(features,)`` vectors.

    Params: ``table: (vocab_size, features)``. ``apply(params, tokens)`` maps integer
    ``tokens: (...)`` to ``(..., features)``; it is ``one_hot(tokens) @ table`` computed
    as a gather. A token outside ``[0, vocab_size)`` raises ValueError when ``tokens`` is
    concrete; when it is traced (under ``jit``/``vmap``) it embeds to zeros, as
    ``one_hot`` of it would, or raises under :func:`rnnjax.checked`.
    """
    checks.positive_int("vocab_size", vocab_size)
    checks.positive_int("features", features)

    def init(key: Array) -> dict[str, Array]:
        return {"table": embedding_init(key, (vocab_size, features), param_dtype)}

    def apply(params: dict[str, Array], tokens: Array) -> Array:
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"tokens must be integers, got dtype {jnp.result_type(tokens)}")
        checks.tokens_in_range(tokens, vocab_size)
        # An id out of range (negative ones included, which take would wrap around) is
        # sent past the table, where mode="fill" reads zeros.
        in_range = (tokens >= 0) & (tokens < vocab_size)
        ids = jnp.where(in_range, tokens, vocab_size)
        return jnp.take(params["table"], ids, axis=0, mode="fill", fill_value=0)

    return Embedding(init, apply, vocab_size, features)


__all__ = ["Embedding", "Readout", "embedding", "linear", "mlp"]
