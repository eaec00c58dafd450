"""The implementation of :mod:`rnnjax.data` (its docstring describes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from rnnjax._src import checks

__all__ = ["Batch", "ahead", "bucket_batches", "forecast_pairs", "pad", "windows"]

# ------------------------------------------------------------------------------- windows


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not checks.is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def windows(array: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """Returns ``(N, length, *array.shape[1:])``: window ``n`` is ``array[n*stride : n*stride + length]``.

    ``array: (T, ...)`` is a series along its first axis; ``N = (T - length) // stride + 1``,
    every window complete. The result is a copy (NumPy's ``sliding_window_view`` with the
    window axis moved to second place), so writing to it leaves ``array`` alone.
    """
    array = np.asarray(array)
    _check_positive(length=length, stride=stride)
    if array.ndim == 0:
        raise ValueError("array must have a time axis (T, ...), got a scalar")
    if len(array) < length:
        raise ValueError(f"length must be at most the array's T={len(array)} steps, got {length}")
    view = np.lib.stride_tricks.sliding_window_view(array, length, axis=0)[::stride]
    return np.moveaxis(view, -1, 1).copy()


def ahead(
    series: np.ndarray, horizon: int, available: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(targets: (T, horizon, ...), valid: (T, horizon) bool)``: the values after each step.

    ``targets[t, k - 1] = series[t + k]`` for ``k = 1..horizon`` -- the targets of a
    many-to-many forecaster that emits the next ``horizon`` values at every step --
    and ``valid[t, k - 1] = t + k < available``: only the first ``available`` steps (by
    default all ``T``) may serve as targets, e.g. the training part of a series whose tail
    is held out. Targets past the end of the series are zeros (``valid`` is False there).
    """
    series = np.asarray(series)
    _check_positive(horizon=horizon)
    num_steps = len(series)
    available = num_steps if available is None else available
    if not 0 <= available <= num_steps:
        raise ValueError(f"available must be in [0, T={num_steps}], got {available}")
    step = np.arange(num_steps)[:, None] + np.arange(1, horizon + 1)  # (T, horizon): t + k
    inside = step < num_steps
    targets = np.where(
        inside.reshape(inside.shape + (1,) * (series.ndim - 1)),
        series[np.minimum(step, num_steps - 1)],
        0,
    ).astype(series.dtype)
    return targets, step < available


def forecast_pairs(
    series: np.ndarray, context: int, horizon: int, *, stride: int = 1, kind: str = "many_to_one"
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(inputs: (N, context, ...), targets)``: input windows and the values to forecast.

    Window ``n`` starts at ``s = n * stride`` and holds ``series[s : s + context]``; its targets:

    - ``kind="many_to_one"`` (``models.many_to_one``): ``(N, horizon, ...)``, the
      ``horizon`` values after the window, ``series[s + context : s + context + horizon]``;
    - ``kind="many_to_many"`` (``models.many_to_many``): ``(N, context, horizon, ...)``,
      after each step ``i`` of the window the next ``horizon`` values,
      ``targets[n, i, k - 1] = series[s + i + k]``; the last step's are the many-to-one targets.

    Both kinds keep the same ``N = (T - context - horizon) // stride + 1`` windows, those whose
    every target lies in the series. For targets that run past the known part (masked
    rather than dropped), window ``ahead``'s ``(targets, valid)`` with ``windows``.
    """
    series = np.asarray(series)
    _check_positive(context=context, horizon=horizon, stride=stride)
    if kind not in ("many_to_one", "many_to_many"):
        raise ValueError(f"kind must be 'many_to_one' or 'many_to_many', got {kind!r}")
    if series.ndim == 0 or len(series) < context + horizon:
        raise ValueError(
            f"the series needs at least context + horizon = {context + horizon} "
            f"steps, got series of shape {series.shape}"
        )
    last = len(series) - horizon  # steps after this one have incomplete targets
    inputs = windows(series[:last], context, stride)
    if kind == "many_to_one":
        return inputs, windows(series[context:], horizon, stride)
    return inputs, windows(ahead(series, horizon)[0][:last], context, stride)


# ------------------------------------------------------------------------- padding, buckets


def pad(
    sequences: Sequence, length: int | None = None, dtype=None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(xs: (N, T_max, ...), lengths: (N,) int32)``: the sequences stacked, zeros after each length.

    ``sequences``: N arrays ``(T_i, ...)`` with the same trailing shape, or N lists of token
    ids (``[[5, 3, 9], [4]]`` gives ``xs: (2, 3)``). ``length`` fixes ``T_max`` (at least the
    longest; by default the longest). ``dtype`` by default is JAX's width of the sequences'
    kind: float32 for floating-point values, int32 for integers (token ids).
    """
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("sequences must hold at least one sequence, got an empty list")
    lengths = np.array([len(a) if a.ndim else -1 for a in arrays], np.int32)
    if (lengths < 0).any():
        scalar = int(np.argmax(lengths < 0))
        raise ValueError(f"every sequence must have a time axis, got a scalar as sequence {scalar}")
    # A sequence of zero steps (an empty token list reads as float64 of shape (0,)) says
    # nothing about the trailing shape or the dtype.
    given = [a for a in arrays if len(a)] or arrays
    features = given[0].shape[1:]
    for i, a in enumerate(arrays):
        if len(a) and a.shape[1:] != features:
            raise ValueError(
                f"sequence {i} has steps of shape {a.shape[1:]}, expected {features} "
                f"like sequence {arrays.index(given[0])}"
            )
    if dtype is None:
        kind = np.result_type(*given)
        dtype = (
            np.float32
            if np.issubdtype(kind, np.floating)
            else np.int32
            if np.issubdtype(kind, np.integer)
            else kind
        )
    t_max = int(lengths.max()) if length is None else length
    if t_max < lengths.max():
        raise ValueError(f"length must be >= the longest sequence ({lengths.max()}), got {length}")
    xs = np.zeros((len(arrays), t_max, *features), dtype)
    for i, a in enumerate(arrays):
        xs[i, : len(a)] = a
    return xs, lengths


class Batch(NamedTuple):
    """One batch of a bucketed epoch.

    Attributes:
      indices: ``(B,)`` int64, the examples in the batch (positions in the data set).
      length: the length to pad them to: the upper bound of their bucket.
    """

    indices: np.ndarray
    length: int


def bucket_batches(
    lengths,
    batch_size: int,
    seed: int,
    *,
    boundaries: Sequence[int] | None = None,
    drop_remainder: bool = False,
) -> list[Batch]:
    """Returns one epoch's batches, each of examples from one length bucket, in a seeded random order.

    ``lengths: (N,)``. Bucket ``b`` holds the examples with ``boundaries[b-1] < length <=
    boundaries[b]`` and its batches pad to ``boundaries[b]``; by default the boundaries are
    the powers of two up to the longest length, so a batch pads by less than 2x and a
    jitted step compiles for at most ``log2(T_max) + 1`` lengths. Within a bucket the
    examples are shuffled and cut into batches of ``batch_size`` (the last one smaller,
    or dropped with ``drop_remainder``); then all batches are shuffled together. The same
    ``seed`` gives the same batches (NumPy's PCG64); pass e.g. ``seed=epoch`` for a new
    order each epoch. (A host-side seed, as Grain's ``shuffle(seed=...)``, not a JAX key:
    this runs before any array reaches the device.)

    The bucketing of ``tf.data.experimental.bucket_by_sequence_length`` with
    ``pad_to_bucket_boundary``. Pad batch ``b`` with
    ``pad([sequences[i] for i in b.indices], b.length)``; padding to the batch's own longest
    (``length=None``) pads less but compiles a jitted step once per distinct length.
    Boundaries fitted to the data pay: on JapaneseVowels' 270 training sequences (7-26
    frames), batches of 32, padding is 39% of all steps when every sequence pads to 26, 34%
    in random batches padded to their longest, 29% with the powers of two, 10% with
    ``boundaries=(12, 16, 20, 26)``.
    """
    lengths = np.asarray(lengths)
    _check_positive(batch_size=batch_size)
    if lengths.ndim != 1 or not len(lengths) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be a non-empty 1-D array of integers, got shape "
            f"{lengths.shape} and dtype {lengths.dtype}"
        )
    if lengths.min() < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.min()}")
    longest = int(lengths.max())
    if boundaries is None:
        boundaries = [2**k for k in range(int(np.ceil(np.log2(max(longest, 1)))) + 1)]
    bounds = np.asarray(boundaries)
    if bounds.ndim != 1 or not len(bounds) or (np.diff(bounds) <= 0).any() or bounds[0] < 1:
        raise ValueError(f"boundaries must be increasing positive integers, got {list(boundaries)}")
    if bounds[-1] < longest:
        raise ValueError(
            f"boundaries must reach the longest length {longest}, got {list(boundaries)}"
        )
    rng = np.random.default_rng(seed)
    bucket = np.searchsorted(bounds, lengths, side="left")  # first bound >= length
    batches = []
    for b, bound in enumerate(bounds.tolist()):
        members = rng.permutation(np.flatnonzero(bucket == b))
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            if len(chunk) == batch_size or not drop_remainder:
                batches.append(Batch(chunk, bound))
    return [batches[i] for i in rng.permutation(len(batches))]
