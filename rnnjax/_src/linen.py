"""The implementation of :mod:`rnnjax.linen` (its docstring describes it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import cells as _cells
from rnnjax._src import layers as _layers
from rnnjax._src import models as _models
from rnnjax._src import probes as _probes
from rnnjax._src import readouts as _readouts

Array = jax.Array

LIST_NAME = "layers"  # where a list-valued pure param tree lives in a module's params


def declare_params(module: nn.Module, init: Callable[[Array], Any]) -> Any:
    """Returns the pure param tree ``init(key)``, registered as ``module``'s Flax params.

    A dict tree becomes one ``module.param`` per top-level key, so the module's params
    equal the tree; any other tree (a list) is one param named ``"layers"``. The whole
    tree is drawn from ONE key (the first name's), exactly as the pure ``init`` draws it.
    Call it from a module's ``__call__`` (it is how every module here makes its params).
    """
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    cache: dict[str, Any] = {}

    def full(rng):
        if "tree" not in cache:
            cache["tree"] = init(rng)
        return cache["tree"]

    if isinstance(shapes, dict):
        return {name: module.param(name, lambda rng, n=name: full(rng)[n]) for name in shapes}
    return module.param(LIST_NAME, full)


def to_pure(params: Any) -> Any:
    """Returns the pure param tree held in a module's ``variables["params"]``.

    The identity for dict trees; unwraps the ``"layers"`` list of a ``stack`` or ``mlp``.
    """
    params = dict(params)
    if set(params) == {LIST_NAME} and isinstance(params[LIST_NAME], (list, tuple)):
        return params[LIST_NAME]
    return params


def from_pure(tree: Any) -> dict[str, Any]:
    """Returns the Flax ``params`` collection for a pure param tree (inverse of :func:`to_pure`)."""
    return dict(tree) if isinstance(tree, dict) else {LIST_NAME: tree}


def _vmap_leading(fn: Callable, num_axes: int) -> Callable:
    for _ in range(num_axes):
        fn = jax.vmap(fn)
    return fn


def _batch_axes(x: Any, example_ndim: int, name: str) -> int:
    n = jnp.ndim(x) - example_ndim
    if n < 0:
        raise ValueError(
            f"{name} must have at least {example_ndim} axes (one example), got shape {jnp.shape(x)}"
        )
    return n


@contextlib.contextmanager
def _named_loops(module: nn.Module) -> Iterator[None]:
    """Labels the loops run within it by the module's path (``"encoder"``, ``"RNN_0"``) for
    ``rnnjax.diagnostics.gradient_flow``, as its params sit under that path."""
    path = "/".join(map(str, module.scope.path)) if module.scope is not None else ""
    with _probes.scope(path) if path else contextlib.nullcontext():
        yield


def _check_layer(layer: Any) -> None:
    if not isinstance(layer, _layers.Layer):
        hint = " (wrap a cell with rnnjax.recurrent)" if isinstance(layer, _cells.Cell) else ""
        raise TypeError(f"layer must be an rnnjax.Layer{hint}, got {type(layer).__name__}")


class RNNCell(nn.RNNCellBase):
    """A :class:`rnnjax.Cell` as a Flax cell: ``(carry, x) -> (carry, y)``, one time step.

    Attributes:
      cell: the pure cell, e.g. ``rnnjax.lstm(32)``.

    ``__call__(carry, x)``: ``x: (*batch, input_size)``, carry leaves ``(*batch, ...)``,
    returns the new carry and ``y: (*batch, hidden_size)``. Params are the cell's params.
    Works inside ``flax.linen.RNN``: ``nn.RNN(RNNCell(rnnjax.gru(16)))``.
    """

    cell: _cells.Cell

    @nn.compact
    def __call__(self, carry, x):
        params = declare_params(self, lambda k: self.cell.init(k, x.shape[-1]))
        step = _vmap_leading(lambda c, u: self.cell.step(params, c, u), x.ndim - 1)
        return step(carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """Returns the zero carry for inputs of shape ``(*batch, input_size)``."""
        del rng
        *batch, input_size = input_shape
        params = jax.eval_shape(lambda k: self.cell.init(k, input_size), jax.random.PRNGKey(0))
        carry = jax.eval_shape(self.cell.initial_carry, params)
        return jax.tree.map(lambda a: jnp.zeros((*batch, *a.shape), a.dtype), carry)

    @property
    def num_feature_axes(self) -> int:
        return 1


def _example_keys(module: nn.Module, train: bool, batch_shape: tuple[int, ...]) -> Array | None:
    """Returns one dropout key per example, ``(*batch_shape, ...)``, or None when not training."""
    if not train:
        return None
    keys = jax.random.split(module.make_rng("dropout"), int(np.prod(batch_shape)))
    return keys.reshape(*batch_shape, *keys.shape[1:])


def _broadcast_carry(carry: Any, batch_shape: tuple[int, ...]) -> Any:
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (*batch_shape, *jnp.shape(a))), carry)


def _apply_over_batch(layer, params, xs, seq_lengths, carry, keys, train, num_batch):
    """Returns ``layer.apply`` vmapped over the ``num_batch`` leading axes of ``xs``.

    ``seq_lengths`` and ``keys`` (either may be None) and ``carry`` have the same leading axes.
    """

    def one(x, n, c, k):
        return layer.apply(params, x, length=n, carry=c, key=k, train=train)

    in_axes = (0, None if seq_lengths is None else 0, 0, None if keys is None else 0)
    fn = one
    for _ in range(num_batch):
        fn = jax.vmap(fn, in_axes=in_axes)
    return fn(xs, seq_lengths, carry, keys)


class RNN(nn.Module):
    """A :class:`rnnjax.Layer` as a Flax module over (batched) sequences.

    Attributes:
      layer: the pure layer, e.g. ``rnnjax.bidirectional(rnnjax.lstm(32))``.
      return_carry: also return the final carry, as ``flax.linen.RNN`` does.

    ``__call__(xs, seq_lengths=None, initial_carry=None, train=False)``:
    ``xs: (*batch, T, input_size)``, ``seq_lengths: (*batch,)`` int, ``initial_carry``
    leaves ``(*batch, ...)``. Returns ``ys: (*batch, T, output_size)`` (and the final carry
    first with ``return_carry``), equal to ``jax.vmap(layer.apply)``. Params are the
    layer's params.
    """

    layer: _layers.Layer
    return_carry: bool = False

    @nn.compact
    def __call__(self, xs, seq_lengths=None, initial_carry=None, train: bool = False):
        _check_layer(self.layer)
        num_batch = _batch_axes(xs, 2, "xs")
        params = declare_params(self, lambda k: self.layer.init(k, xs.shape[-1]))
        if initial_carry is None:
            initial_carry = _broadcast_carry(self.layer.initial_carry(params), xs.shape[:num_batch])
        keys = _example_keys(self, train, xs.shape[:num_batch])
        with _named_loops(self):
            final, ys = _apply_over_batch(
                self.layer, params, xs, seq_lengths, initial_carry, keys, train, num_batch
            )
        return (final, ys) if self.return_carry else ys


class Readout(nn.Module):
    """A :class:`rnnjax.readouts.Readout` (``linear``, ``mlp``) as a Flax module.

    ``__call__(x)``: ``x: (..., input_size) -> (..., output_size)``. Params are the
    readout's params (an ``mlp``'s list under ``"layers"``).
    """

    readout: _readouts.Readout

    @nn.compact
    def __call__(self, x):
        params = declare_params(self, lambda k: self.readout.init(k, x.shape[-1]))
        return self.readout.apply(params, x)


class Embed(nn.Module):
    """A :class:`rnnjax.readouts.Embedding` as a Flax module.

    ``__call__(tokens)``: integer ``tokens: (...) -> (..., features)``. Params:
    ``{"table": (vocab_size, features)}``.
    """

    embedding: _readouts.Embedding

    @nn.compact
    def __call__(self, tokens):
        params = declare_params(self, self.embedding.init)
        return self.embedding.apply(params, tokens)


class Model(nn.Module):
    """A :class:`rnnjax.Model` (``many_to_one``, ``many_to_many``, ``one_to_one``) as a Flax module.

    Attributes:
      model: the pure model.
      example_ndim: number of axes of one example (2 for ``(T, input_size)`` sequences,
        1 for one-to-one vectors); further leading axes are batch axes.

    ``__call__(inputs, length=None, train=False)``: ``inputs: (*batch, *example)``,
    ``length: (*batch,)``. Returns ``jax.vmap(model.apply)`` over the batch axes. Params
    are the model's params.
    """

    model: _models.Model
    example_ndim: int = 2

    @nn.compact
    def __call__(self, inputs, length=None, train: bool = False):
        num_batch = _batch_axes(inputs, self.example_ndim, "inputs")
        params = declare_params(self, lambda k: self.model.init(k, inputs.shape[-1]))
        keys = _example_keys(self, train, inputs.shape[:num_batch])

        def one(x, n, k):
            kwargs = {} if n is None else {"length": n}
            return self.model.apply(params, x, key=k, train=train, **kwargs)

        fn = one
        in_axes = (0, None if length is None else 0, None if keys is None else 0)
        for _ in range(num_batch):
            fn = jax.vmap(fn, in_axes=in_axes)
        with _named_loops(self):
            return fn(inputs, length, keys)


__all__ = ["Embed", "Model", "RNN", "RNNCell", "Readout", "declare_params", "from_pure", "to_pure"]
