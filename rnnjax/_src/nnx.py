"""The implementation of :mod:`rnnjax.nnx` (its docstring describes it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx as _nnx

from rnnjax._src import cells as _cells
from rnnjax._src import layers as _layers
from rnnjax._src import models as _models
from rnnjax._src import probes as _probes
from rnnjax._src import readouts as _readouts
from rnnjax._src.linen import (  # the same checks and batching as the linen wrappers
    _apply_over_batch,
    _batch_axes,
    _broadcast_carry,
    _check_layer,
)

Array = jax.Array


def _is_variable(v: Any) -> bool:
    return isinstance(v, _nnx.Variable)


def _example_keys(key: Array | None, batch_shape: tuple[int, ...]) -> Array | None:
    if key is None:
        return None
    keys = jax.random.split(key, int(np.prod(batch_shape)))
    return keys.reshape(*batch_shape, *keys.shape[1:])


class _Pure(_nnx.Module):
    """Holds a record (static) and its pure params as ``nnx.Param`` leaves."""

    def __init__(self, record: Any, params: Any):
        self.record = _nnx.static(record)
        self.params = _nnx.data(jax.tree.map(_nnx.Param, params))

    def pure_params(self) -> Any:
        """Returns the pure parameter tree (plain arrays), as the record's ``init`` makes it."""
        return jax.tree.map(lambda v: v[...], self.params, is_leaf=_is_variable)

    def load_pure(self, params: Any) -> None:
        """Sets the module's params from a pure tree of the same structure and shapes."""
        current = self.pure_params()
        if jax.tree.structure(current) != jax.tree.structure(params):
            raise TypeError(
                f"params must have the structure {jax.tree.structure(current)}, got "
                f"{jax.tree.structure(params)}"
            )
        for var, value in zip(
            jax.tree.leaves(self.params, is_leaf=_is_variable), jax.tree.leaves(params)
        ):
            if var[...].shape != jnp.shape(value):
                raise ValueError(
                    f"params leaf has shape {jnp.shape(value)}, expected {var[...].shape}"
                )
            var[...] = value


class RNNCell(_Pure):
    """A :class:`rnnjax.Cell` as an nnx module: ``(carry, x) -> (carry, y)``, one time step.

    ``RNNCell(cell, input_size, rngs=nnx.Rngs(0))``. ``__call__(carry, x)`` with
    ``x: (*batch, input_size)`` and carry leaves ``(*batch, ...)``; returns the new carry
    and ``y: (*batch, hidden_size)``. ``initial_carry(batch_shape=())`` gives zeros.
    """

    def __init__(self, cell: _cells.Cell, input_size: int, *, rngs: _nnx.Rngs):
        super().__init__(cell, cell.init(rngs.params(), input_size))

    def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
        params, step = self.pure_params(), self.record.step
        fn = lambda c, u: step(params, c, u)
        for _ in range(_batch_axes(x, 1, "x")):
            fn = jax.vmap(fn)
        return fn(carry, x)

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Any:
        """Returns the zero carry with leaves ``(*batch_shape, ...)``."""
        carry = self.record.initial_carry(self.pure_params())
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (*batch_shape, *a.shape)), carry)


class RNN(_Pure):
    """A :class:`rnnjax.Layer` as an nnx module over (batched) sequences.

    ``RNN(layer, input_size, rngs=nnx.Rngs(0), return_carry=False)``.
    ``__call__(xs, seq_lengths=None, initial_carry=None, *, key=None, train=False)``:
    ``xs: (*batch, T, input_size)``, ``seq_lengths: (*batch,)``; returns
    ``ys: (*batch, T, output_size)`` (the final carry first with ``return_carry``), equal to
    ``jax.vmap(layer.apply)``. ``key`` is split per example for dropout.
    """

    def __init__(
        self, layer: _layers.Layer, input_size: int, *, rngs: _nnx.Rngs, return_carry: bool = False
    ):
        _check_layer(layer)
        super().__init__(layer, layer.init(rngs.params(), input_size))
        self.return_carry = return_carry

    def __call__(self, xs, seq_lengths=None, initial_carry=None, *, key=None, train=False):
        num_batch = _batch_axes(xs, 2, "xs")
        batch_shape = xs.shape[:num_batch]
        params, layer = self.pure_params(), self.record
        if initial_carry is None:
            initial_carry = _broadcast_carry(layer.initial_carry(params), batch_shape)
        keys = _example_keys(key, batch_shape) if train else None
        with _probes.module_scope(self):  # labels of gradient_flow: this module's name
            final, ys = _apply_over_batch(
                layer, params, xs, seq_lengths, initial_carry, keys, train, num_batch
            )
        return (final, ys) if self.return_carry else ys


class Readout(_Pure):
    """A :class:`rnnjax.readouts.Readout` as an nnx module: ``(..., input_size) -> (..., output_size)``."""

    def __init__(self, readout: _readouts.Readout, input_size: int, *, rngs: _nnx.Rngs):
        super().__init__(readout, readout.init(rngs.params(), input_size))

    def __call__(self, x: Array) -> Array:
        return self.record.apply(self.pure_params(), x)


class Model(_Pure):
    """A :class:`rnnjax.Model` as an nnx module over a batch.

    ``Model(model, input_size, rngs=nnx.Rngs(0), example_ndim=2)``; ``example_ndim`` is
    the number of axes of one example (2 for sequences, 1 for one-to-one).
    ``__call__(inputs, length=None, *, key=None, train=False)`` with
    ``inputs: (*batch, *example)`` returns ``jax.vmap(model.apply)`` over the batch axes.
    """

    def __init__(
        self, model: _models.Model, input_size: int, *, rngs: _nnx.Rngs, example_ndim: int = 2
    ):
        super().__init__(model, model.init(rngs.params(), input_size))
        self.example_ndim = example_ndim

    def __call__(self, inputs, length=None, *, key=None, train=False):
        num_batch = _batch_axes(inputs, self.example_ndim, "inputs")
        params, model = self.pure_params(), self.record
        keys = _example_keys(key, inputs.shape[:num_batch]) if train else None

        def one(x, n, k):
            kwargs = {} if n is None else {"length": n}
            return model.apply(params, x, key=k, train=train, **kwargs)

        in_axes = (0, None if length is None else 0, None if keys is None else 0)
        fn = one
        for _ in range(num_batch):
            fn = jax.vmap(fn, in_axes=in_axes)
        with _probes.module_scope(self):  # labels of gradient_flow: this module's name
            return fn(inputs, length, keys)


__all__ = ["Model", "RNN", "RNNCell", "Readout"]
