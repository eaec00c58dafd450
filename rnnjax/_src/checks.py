"""Argument checks, and errors for values only known at run time (lengths, tokens under jit).

Shapes and dtypes are checked when a function is traced, so a wrong shape raises a
ValueError even under ``jax.jit``. A *value* inside a traced array (a ``length`` of 300 for
``T = 200``, a token id of ``-1``) is not known then. rnnjax gives such values a defined,
finite meaning by default (lengths are clipped to ``[0, T]``, out-of-range tokens embed to
zeros; see :func:`rnnjax.padding.check_length`) and raises a real error when asked to::

    safe_apply = rnnjax.checked(jax.jit(jax.vmap(layer.apply)))
    safe_apply(params, xs, lengths)   # InvalidValueError: length must be in [0, T=200],
                                      # got 300 at batch element 5

:func:`checked` traces the function with checks switched on and runs it under
``jax.experimental.checkify``; every check names the argument, the range expected, the
value received and, under ``jax.vmap``, the batch element (its flat index over all vmapped
axes). The switch is part of JAX's tracing context, so a function jitted earlier without
checks is traced again, never served from the cache without them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

__all__ = ["InvalidValueError", "checked"]

Array = jax.Array


def is_int(value: Any) -> bool:
    """Returns whether ``value`` is an int: Python or NumPy, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value: Any) -> None:
    """Raises ValueError unless ``value`` is a positive int (Python or NumPy; not a bool)."""
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _dtype_kind(dtype: Any) -> str:
    for kind in (jnp.bool_, jnp.integer, jnp.complexfloating, jnp.floating):
        if jnp.issubdtype(dtype, kind):
            return jnp.dtype(kind).name if kind is jnp.bool_ else kind.__name__
    return jnp.dtype(dtype).name


def check_tree(
    expected: Any, received: Any, *, name: str = "params", exact_dtypes: bool = True
) -> None:
    """Raises ValueError unless ``received`` has the structure, shapes and dtypes of ``expected``.

    ``expected`` is a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape`` of
    an ``init``). The message names the first leaf that differs by its path
    (``params/rnn/0/forward/w_hh``), with the expected and the received shape and dtype, or
    the keys that are missing or extra. With ``exact_dtypes=False`` a dtype need only be of
    the same kind (floating, complex, integer, bool), so that parameters cast to another
    precision pass. Runs at trace time: free under ``jit``.
    """
    exp_leaves = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    got = dict(jax.tree_util.tree_flatten_with_path(received)[0])
    if exp_leaves.keys() != got.keys():
        missing = sorted(f"{name}/{_path_name(p)}" for p in exp_leaves.keys() - got.keys())
        extra = sorted(f"{name}/{_path_name(p)}" for p in got.keys() - exp_leaves.keys())
        raise ValueError(
            f"{name} does not have the structure this model's init makes: "
            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'} "
            "(parameters of another cell, size or model?)"
        )
    for path, e in exp_leaves.items():
        g = got[path]
        # (a traced leaf under jit has a dtype; only a Python number needs converting)
        g_shape = np.shape(g)
        g_dtype = g.dtype if hasattr(g, "dtype") else np.asarray(g).dtype
        if tuple(g_shape) != tuple(e.shape):
            raise ValueError(
                f"{name}/{_path_name(path)} must have shape {tuple(e.shape)} (what init makes "
                f"for these inputs), got {tuple(g_shape)}"
            )
        same = (
            jnp.dtype(g_dtype) == jnp.dtype(e.dtype)
            if exact_dtypes
            else _dtype_kind(g_dtype) == _dtype_kind(e.dtype)
        )
        if not same:
            raise ValueError(
                f"{name}/{_path_name(path)} must have dtype {jnp.dtype(e.dtype)}"
                + ("" if exact_dtypes else f" (or another {_dtype_kind(e.dtype)} dtype)")
                + f", got {g_dtype}"
            )


class InvalidValueError(ValueError):
    """A value inside a traced array (a length, a token id) is out of its range."""


try:  # a JAX config state is part of the jit cache key, so toggling it retraces
    from jax._src import config as _config

    _CHECKS = _config.bool_state(
        "rnnjax_checks",
        False,
        help="Emit rnnjax's run-time value checks (rnnjax.checked).",
        include_in_jit_key=True,
        include_in_trace_context=True,
    )
except (ImportError, AttributeError, TypeError):  # pragma: no cover - older/newer JAX
    _CHECKS = None
    _enabled_fallback = [False]


def enabled() -> bool:
    """Returns whether run-time value checks are being traced (inside :func:`checked`)."""
    if _CHECKS is None:  # pragma: no cover
        return _enabled_fallback[0]
    return bool(_CHECKS.value)


@contextlib.contextmanager
def _checks_on():
    if _CHECKS is None:  # pragma: no cover
        _enabled_fallback[0] = True
        try:
            yield
        finally:
            _enabled_fallback[0] = False
        return
    with _CHECKS(True):
        yield


def checked(fn: Callable) -> Callable:
    """Returns ``fn`` with rnnjax's run-time value checks: it raises :class:`InvalidValueError`.

    Works on any function of arrays, jitted, vmapped or differentiated inside or not
    (``checked(jax.jit(jax.vmap(f)))``, ``checked(jax.grad(loss))``). Without it, invalid
    lengths are clipped to ``[0, T]`` and invalid token ids embed to zeros (finite, never
    NaN). The cost is measured in ``experiments/benchmark.py --case checks``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _checks_on():
            err, out = checkify.checkify(fn, errors=checkify.user_checks)(*args, **kwargs)
        try:
            err.throw()
        except checkify.JaxRuntimeError as e:
            message = str(e).replace(" (`check` failed)", "")
            raise InvalidValueError(message) from None
        return out

    return wrapper


# The position of one example within the enclosing jax.vmap calls, for error messages. A
# traced function cannot ask vmap where it is; this primitive's batching rule answers it:
# each vmap level over which `like` varies turns the index i into i * size + iota(size).
_element_index_p = Primitive("rnnjax_element_index")
_element_index_p.def_impl(lambda acc, like: acc)
_element_index_p.def_abstract_eval(lambda acc, like: jax.core.ShapedArray(acc.shape, jnp.int32))
mlir.register_lowering(
    _element_index_p, mlir.lower_fun(lambda acc, like: acc, multiple_results=False)
)


def _element_index_batch(args, dims):
    (acc, like), (acc_dim, like_dim) = args, dims
    if like_dim is None:  # `like` is the same along this axis: so is the answer
        return _element_index_p.bind(acc, like), acc_dim
    size = like.shape[like_dim]
    acc = (
        jnp.broadcast_to(acc, (size,) + acc.shape)
        if acc_dim is None
        else jnp.moveaxis(acc, acc_dim, 0)
    )
    outer = _element_index_p.bind(acc, jnp.take(like, 0, axis=like_dim))
    iota = jnp.arange(size, dtype=jnp.int32).reshape((size,) + (1,) * (acc.ndim - 1))
    return outer * size + iota, 0


batching.primitive_batchers[_element_index_p] = _element_index_batch


def element_index(like: Array) -> Array:
    """Returns the flat (row-major) index of this example over the vmapped axes ``like`` varies over."""
    return _element_index_p.bind(jnp.zeros((), jnp.int32), jnp.asarray(like))


def check(ok: Array, message: str, **values: Any) -> None:
    """Emits a checkify check of ``ok`` when checks are on; otherwise does nothing.

    ``message`` is a format string over ``values``; ", at batch element {index}" is added
    when the example is inside a ``jax.vmap``. Only call it with traced ``ok`` (concrete
    values are checked eagerly by the caller, with a plain ValueError).
    """
    if not enabled():
        return
    values = {k: jnp.asarray(v) for k, v in values.items()}
    index = element_index(values[next(iter(values))]) if values else jnp.zeros((), jnp.int32)
    checkify.check(jnp.all(ok), message + " (batch element {index})", index=index, **values)


def tokens_in_range(tokens: Any, vocab_size: int, *, name: str = "tokens") -> None:
    """Raises ValueError if concrete ``tokens`` leave ``[0, vocab_size)``; checks traced ones
    under :func:`checked` (the first bad token is named, with its batch element)."""
    if not isinstance(tokens, jax.core.Tracer):
        bad = np.flatnonzero((np.asarray(tokens) < 0) | (np.asarray(tokens) >= vocab_size))
        if bad.size:
            value = np.asarray(tokens).reshape(-1)[bad[0]]
            raise ValueError(
                f"{name} must be in [0, vocab_size={vocab_size}), got {value} at flat "
                f"position {bad[0]} of {name} with shape {np.shape(tokens)}"
            )
        return
    if not enabled():
        return
    flat = jnp.ravel(tokens)
    bad = (flat < 0) | (flat >= vocab_size)
    position = jnp.argmax(bad)
    check(
        ~jnp.any(bad),
        f"{name} must be in [0, vocab_size={vocab_size}), got {{value}} at "
        f"position {{position}} of {name} with shape {jnp.shape(tokens)}",
        value=flat[position],
        position=position,
    )
