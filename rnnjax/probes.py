"""Probes on the hidden state of every recurrent loop inside a model, for gradient flow.

The probe trick: add a zero ``p_t`` to the carry leaving step ``t``. The model computes
exactly what it did, and the gradient of a loss with respect to ``p_t`` is the total
derivative dL/d(state_t), every path from that state to the loss, for all ``t`` in one
backward pass (Flax calls the same idea ``perturb``). Here the probes are placed without
touching the model: while a :func:`probing` context is active (at trace time, like
``jax.named_scope``), every :func:`rnnjax.scan` — the loop every layer, model and Flax
module ends in when probed — takes its probe from the context, under a label that names
where it sits: the path of its parameters in the model's parameter tree
(``"rnn/0/forward"`` for the forward direction of the first layer of a stack inside a
many-to-one model). Layers and models name their parts with :func:`scope`.

``rnnjax.diagnostics.gradient_flow`` is the user-facing function; this module is the
mechanism. Probes are given and returned in input order: row ``t`` of a backward
direction is the state after reading ``xs[t]``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Array = jax.Array


@dataclasses.dataclass
class Loop:
    """What a probed or captured loop saw: enough to rerun per-layer diagnostics on it."""

    cell: Any
    params: Any
    xs: Array
    carry: Any
    length: Array | None
    reverse: bool


@dataclasses.dataclass
class _Context:
    probes: dict[str, Array] | None  # None: discovering the labels and shapes
    scopes: list[str] = dataclasses.field(default_factory=list)
    loops: dict[str, Loop] = dataclasses.field(default_factory=dict)
    shapes: dict[str, jax.ShapeDtypeStruct] = dataclasses.field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    "rnnjax_probes", default=None
)


@contextlib.contextmanager
def probing(probes: dict[str, Array] | None = None) -> Iterator[_Context]:
    """Within it, every :func:`rnnjax.scan` adds its probe (zeros when ``probes`` is None)
    and records what it ran in ``context.loops``, keyed by label."""
    context = _Context(probes)
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


def active() -> bool:
    """Returns whether a :func:`probing` context is active."""
    return _CONTEXT.get() is not None


@contextlib.contextmanager
def scope(name: Any) -> Iterator[None]:
    """Names the loops run within it ``<outer scopes>/name/...`` while probing."""
    context = _CONTEXT.get()
    if context is None:
        yield
        return
    context.scopes.append(str(name))
    try:
        yield
    finally:
        context.scopes.pop()


def take(loop: Loop, state_size: int, dtype: Any) -> Array:
    """Returns the probe ``(T, state_size)`` of the loop about to run, recording it.

    A label seen twice (a layer applied twice) gets ``#2``, ``#3``, ... appended.
    """
    context = _CONTEXT.get()
    assert context is not None, "take() runs only inside probing() (see active())"
    label = "/".join(context.scopes) or "scan"
    if label in context.loops:
        k = 2
        while f"{label}#{k}" in context.loops:
            k += 1
        label = f"{label}#{k}"
    context.loops[label] = loop
    shape = (loop.xs.shape[0], state_size)
    context.shapes[label] = jax.ShapeDtypeStruct(shape, dtype)
    if context.probes is None:
        return jnp.zeros(shape, dtype)
    if label not in context.probes:
        raise KeyError(
            f"no probe for the loop {label!r}: the function ran other loops than when its "
            f"probes were discovered (it must run the same loops for the same inputs)"
        )
    return context.probes[label]


def add(new_carry: Any, y: Any, probe_t: Array) -> tuple[Any, Any]:
    """Returns ``(new_carry + probe_t, y)``, the probe unravelled like the carry.

    When the step's output is one of its new carry's leaves (``y = h``, as in every
    built-in cell), the output is the state itself and carries the probe too.
    """
    _, unravel = ravel_pytree(new_carry)
    leaves, treedef = jax.tree.flatten(new_carry)
    probes = jax.tree.leaves(unravel(probe_t.astype(ravel_pytree(new_carry)[0].dtype)))
    probed = [c + p.astype(c.dtype) for c, p in zip(leaves, probes)]
    for leaf, new_leaf in zip(leaves, probed):
        if y is leaf:
            y = new_leaf.astype(y.dtype)
            break
    return jax.tree.unflatten(treedef, probed), y


def state_size(carry: Any) -> tuple[int, Any]:
    """Returns ``(n, dtype)`` of the flattened carry: the state a probe is added to."""
    flat, _ = ravel_pytree(carry)
    return flat.size, flat.dtype
