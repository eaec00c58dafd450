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
direction is the state after reading ``xs[t]``. A probe is one example's: a loop that
runs under a ``jax.vmap`` entered inside the probed function (a loss over a batch) would
share it across the batch, so it is refused (see :func:`take`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["Loop", "scope"]

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
    # {label: ((leaf name, leaf size), ...)}: how the flat state splits into carry leaves
    leaves: dict[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)
    module_names: dict[int, str] = dataclasses.field(default_factory=dict)  # id(nnx module)
    trace: Any = None  # the JAX trace the context was entered in (see _under_inner_vmap)


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    "rnnjax_probes", default=None
)


def _current_trace() -> Any:
    # JAX has no public way to ask which transformations are active; its trace context is
    # the one place that knows whether a vmap was entered since the probes were placed.
    from jax._src import core

    return core.trace_ctx.trace


def _under_inner_vmap(start: Any) -> bool:
    """Returns whether a ``jax.vmap`` was entered since the trace ``start``."""
    from jax._src.interpreters import batching

    trace = _current_trace()
    while trace is not None and trace is not start:
        if isinstance(trace, batching.BatchTrace):
            return True
        trace = getattr(trace, "parent_trace", None)
    return False


def _nnx_module_names(args: Any) -> dict[int, str]:
    """Returns ``{id(module): "path/in/its/parent"}`` for every flax.nnx module in ``args``.

    An nnx module does not know its own name (its parent holds it), so the names are read
    off the modules handed to the probed function before it runs.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:  # no nnx module can exist
        return {}
    names = {}
    for root in jax.tree.leaves(args, is_leaf=lambda a: isinstance(a, nnx.Module)):
        if isinstance(root, nnx.Module):
            for path, node in nnx.iter_graph(root):
                if path and isinstance(node, nnx.Module):
                    names.setdefault(id(node), "/".join(map(str, path)))
    return names


@contextlib.contextmanager
def probing(probes: dict[str, Array] | None = None, modules: Any = ()) -> Iterator[_Context]:
    """Within it, every :func:`rnnjax.scan` adds its probe (zeros when ``probes`` is None)
    and records what it ran in ``context.loops``, keyed by label; flax.nnx modules found in
    ``modules`` (the probed function's arguments) name their loops by their attribute path."""
    context = _Context(probes, module_names=_nnx_module_names(modules), trace=_current_trace())
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


@contextlib.contextmanager
def module_scope(module: Any) -> Iterator[None]:
    """Names the loops run within it by the attribute path of the flax.nnx ``module`` in
    the probed function's arguments (nothing when it was not found there)."""
    context = _CONTEXT.get()
    name = None if context is None else context.module_names.get(id(module))
    if name is None:
        yield
        return
    with scope(name):
        yield


def _leaf_names(cell: Any, carry: Any) -> tuple[str, ...]:
    """Returns a name for each leaf of ``carry``: the cell's ``carry_names``, else its path."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(carry)[0]]
    names = getattr(cell, "carry_names", None)
    if names is not None and len(names) == len(paths):
        return tuple(names)
    return tuple(
        "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        for path in paths
    )


def take(loop: Loop, state_size: int, dtype: Any) -> Array:
    """Returns the probe ``(T, state_size)`` of the loop about to run, recording it.

    A label seen twice (a layer applied twice) gets ``#2``, ``#3``, ... appended. Raises
    ValueError when the loop runs under a ``jax.vmap`` entered inside the probed function:
    its one probe would be shared by the batch, its gradient the sum over the examples.
    """
    context = _CONTEXT.get()
    assert context is not None, "take() runs only inside probing() (see active())"
    label = "/".join(context.scopes) or "scan"
    if _under_inner_vmap(context.trace):
        raise ValueError(
            f"the loop {label!r} runs under a jax.vmap inside the function being probed (a "
            f"loss over a batch, e.g. a Flax module applied to xs of shape (B, T, I)): one "
            f"(T, n) probe would be shared by the batch and its gradient summed over the "
            f"examples. Gradient flow is per example: write the loss for one example, "
            f"without batch axes (rnnjax.linen and rnnjax.nnx modules take inputs of shape "
            f"(T, I) too), and vmap the diagnostic over the batch, e.g. "
            f"jax.vmap(lambda x, y: diagnostics.gradient_flow(loss, params, x, y))(xs, ys)"
        )
    if label in context.loops:
        k = 2
        while f"{label}#{k}" in context.loops:
            k += 1
        label = f"{label}#{k}"
    context.loops[label] = loop
    leaves = jax.tree.leaves(loop.carry)
    context.leaves[label] = tuple(
        zip(_leaf_names(loop.cell, loop.carry), (jnp.size(a) for a in leaves))
    )
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
