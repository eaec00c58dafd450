"""Training arrays from a time series or from sequences of different lengths, in NumPy on the host.

Four functions, for what a general input-pipeline library does not do for recurrent models:

- ``windows(array, length, stride)``: the sliding windows of a series, ``(N, length, ...)``;
- ``ahead(series, horizon)``: the next ``horizon`` values after every step (many-to-many
  forecasting targets) and which of them are known;
- ``forecast_pairs(series, context, horizon, stride, kind)``: (input window, target) pairs for
  a ``many_to_one`` or a ``many_to_many`` forecaster, built from the two above;
- ``pad(sequences)``: a list of ``(T_i, ...)`` arrays or token lists as ``(N, T_max, ...)``
  plus their lengths, for ``length=``; ``bucket_batches(lengths, batch_size, seed)``: batches
  of similar lengths, so that each pads to its bucket's bound and not to the longest sequence.

Everything else an input pipeline needs -- reading sources, shuffling with a seed, batching
equal shapes, multi-process prefetch, checkpointable iterators -- is Grain's
(``grain.MapDataset``, ``grain.DataLoader``); these functions return NumPy arrays and index
arrays that a Grain pipeline, or a ``batch_fn`` for ``rnnjax.training.fit``, can index.
Grain packs token sequences into fixed-length rows (``grain.experimental.FirstFitPackIterDataset``)
for models that read segment ids; a recurrent layer would carry its state across the packed
segments, hence padding with ``length=`` here.

Host NumPy, not ``jax.numpy``: data preparation runs once, before training, and an eager
``jnp`` operation would compile a program of its own for each new shape.
"""

from rnnjax._src.data import ahead, bucket_batches, forecast_pairs, pad, windows

__all__ = ["ahead", "bucket_batches", "forecast_pairs", "pad", "windows"]
