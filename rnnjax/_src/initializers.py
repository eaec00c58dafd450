"""The implementation of :mod:`rnnjax.initializers` (its docstring describes it)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn.initializers import (  # noqa: F401  (re-exported)
    constant,
    glorot_uniform,
    lecun_normal,
    normal,
    uniform,
    zeros,
)

from rnnjax._src import householder

__all__ = ["chrono_bias", "identity", "orthogonal", "scaled_orthogonal", "torch_uniform"]


def orthogonal(scale: float = 1.0, column_axis: int = -1):
    """Returns an initialiser of ``scale * Q``, Q Haar-distributed with orthonormal rows or columns.

    The same draw as ``jax.nn.initializers.orthogonal`` (same key use, same Q up to float
    rounding), computed by a Householder QR in ``jax.numpy`` instead of LAPACK: a batched LAPACK
    QR can deadlock XLA:CPU when two run at once (JAX >= 0.10; docs "Known issues"), and
    every cell draws one per gate under ``vmap``. If the shape is not square, the side that
    is smaller is orthonormal, as in JAX.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs at least a 2-D shape, got {shape}")
        if any(dim == 0 for dim in shape):
            return jnp.zeros(shape, dtype)
        n_cols = shape[column_axis]
        n_rows = math.prod(shape) // n_cols
        compute = jnp.promote_types(dtype, jnp.float32)
        q = householder.random_orthogonal(key, n_rows, n_cols, compute)
        rest = tuple(d for i, d in enumerate(shape) if i != column_axis % len(shape))
        q = jnp.moveaxis(q.reshape((*rest, n_cols)), -1, column_axis)
        return (scale * q).astype(dtype)

    return init


def identity(scale: float = 1.0):
    """Returns an initialiser of ``scale * I`` for square matrices (the IRNN of Le et al. 2015)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        del key
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"identity init needs a square 2-D shape, got {shape}")
        return scale * jnp.eye(shape[0], dtype=dtype)

    return init


def scaled_orthogonal(scale: float = 1.0):
    """Returns an initialiser of ``scale * Q`` with Q a random orthogonal matrix.

    Every singular value equals ``scale``, which sets the Jacobian norm of a linear RNN
    step exactly: the knob of gradient-flow experiments.
    """
    return orthogonal(scale)


def torch_uniform(hidden_size: int):
    """Returns PyTorch's default RNN initialiser: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    bound = 1.0 / float(hidden_size) ** 0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def chrono_bias(t_max: float):
    """Returns the chrono initialiser of Tallec & Ollivier (2018) for an LSTM forget-gate bias.

    b_f = log(u),  u ~ U[1, t_max - 1], and the input-gate bias b_i = -b_f; characteristic
    forgetting times are then spread between 1 and ``t_max`` steps. :func:`rnnjax.lstm`
    applies it with ``chrono_t_max=...``.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        u = jax.random.uniform(key, shape, jnp.float32, 1.0, max(t_max - 1.0, 1.0 + 1e-6))
        return jnp.log(u).astype(dtype)

    return init
