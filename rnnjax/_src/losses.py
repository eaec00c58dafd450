"""The implementation of :mod:`rnnjax.losses` (its docstring describes it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import inputs as _inputs
from rnnjax._src import padding

Array = jax.Array

__all__ = ["masked_cross_entropy", "masked_mse"]


def _check_mask(mask: Any, lead_shape: tuple[int, ...], name: str) -> Array:
    mask = jnp.asarray(mask)
    if mask.shape != lead_shape[: mask.ndim]:
        raise ValueError(
            f"mask must have the leading shape of {name}: expected a prefix of {lead_shape}, "
            f"got {mask.shape}"
        )
    return mask.astype(bool)


def _masked_mean(per_position: Array, mask: Array | None) -> Array:
    """Returns the mean over ``mask``; 0 when no position counts (a batch of 0 included)."""
    if mask is None:
        return jnp.sum(per_position) / max(per_position.size, 1)
    count = jnp.sum(mask)
    total = jnp.sum(padding.clean(per_position, mask))
    return total / jnp.maximum(count, 1)


def masked_mse(predictions: Array, targets: Array, mask: Any = None) -> Array:
    """Returns the mean squared error over valid positions, a scalar.

    loss = Σ_{m_i} mean_f (p_{i,f} - y_{i,f})² / max(Σ m_i, 1)

    Args:
      predictions: ``(*lead, *features)``, e.g. ``(T, D)`` or ``(B, T, D)``.
      targets: same shape as ``predictions``.
      mask: bool ``lead`` (a prefix of ``predictions.shape``, e.g. ``(T,)`` or ``(B, T)``),
        true at valid positions; ``None`` means all valid. Each valid position contributes
        the mean of its squared errors over the remaining (feature) axes. With no valid
        position (or no position: a batch of 0) the loss is 0.
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets must have the shape of predictions {predictions.shape}, got {targets.shape}"
        )
    if mask is None:
        return _masked_mean(jnp.square(predictions - targets), None)
    mask = _check_mask(mask, predictions.shape, "predictions")
    error = padding.clean(predictions, mask) - padding.clean(targets, mask)
    feature_axes = tuple(range(mask.ndim, predictions.ndim))
    per_position = (
        jnp.mean(jnp.square(error), axis=feature_axes) if feature_axes else jnp.square(error)
    )
    return _masked_mean(per_position, mask)


def masked_cross_entropy(logits: Array, labels: Array, mask: Any = None) -> Array:
    """Returns the mean softmax cross-entropy over valid positions, a scalar.

    loss = Σ_{m_i} (logsumexp(z_i) - z_{i, y_i}) / max(Σ m_i, 1)

    Args:
      logits: ``(*lead, num_classes)``, e.g. ``(T, V)`` or ``(B, T, V)``.
      labels: integer ``lead``, each in ``[0, num_classes)`` at valid positions (padded
        positions may hold anything).
      mask: bool, a prefix of ``lead`` (e.g. ``(B, T)``, or ``(B,)`` to mask whole
        sequences), true at valid positions; ``None`` means all valid.

    A label outside ``[0, num_classes)`` at a valid position raises ValueError naming its
    position and value when ``labels`` (and ``mask``) are concrete. When they are traced
    it is ignored, as a masked position is: it adds nothing to the loss or the gradient
    and is not counted (the convention of PyTorch's ``ignore_index``); under
    :func:`rnnjax.checked` it raises. With no position counted (or a batch of 0) the loss
    is 0.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    num_classes = logits.shape[-1]
    if num_classes == 0:
        raise ValueError(f"logits must have at least one class, got shape {logits.shape}")
    if mask is not None:
        mask = _check_mask(mask, labels.shape, "labels")
        full = jnp.broadcast_to(
            mask.reshape(mask.shape + (1,) * (labels.ndim - mask.ndim)), labels.shape
        )
    else:
        full = None
    _inputs.check_ids(labels, num_classes, "labels", valid=full, bound="num_classes")
    # Out-of-range labels count as masked, cleaned before the loss as padding is.
    counted = (labels >= 0) & (labels < num_classes)
    counted = counted if full is None else counted & full
    logits, labels = padding.clean((logits, labels), counted)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = padding.clean(
        -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0], counted
    )
    if mask is None:
        return jnp.sum(nll) / jnp.maximum(jnp.sum(counted), 1)
    axes = tuple(range(mask.ndim, nll.ndim))
    if axes:  # the mean over each position's trailing entries that count
        per_position = jnp.sum(nll, axis=axes) / jnp.maximum(jnp.sum(counted, axis=axes), 1)
    else:
        per_position = nll
    return _masked_mean(per_position, mask)
