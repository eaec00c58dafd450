"""The implementation of :mod:`rnnjax.plots` (its docstring describes it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["gradient_heatmap", "gradient_norms", "lyapunov_spectra", "singular_value_spectra"]


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(values: Any, name: str, ndim: int = 1) -> dict[str, np.ndarray]:
    """Returns ``{label: array}`` from a mapping or a single array (labelled ``""``)."""
    items = values.items() if isinstance(values, Mapping) else [("", values)]
    curves = {}
    for label, v in items:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != ndim:
            raise ValueError(
                f"{name}{f'[{label!r}]' if label else ''} must be a {ndim}-D array, got shape {a.shape}"
            )
        curves[str(label)] = a
    if not curves:
        raise ValueError(f"{name} is empty")
    return curves


def _finish(fig, ax, path: str | os.PathLike | None, title: str | None, legend: bool):
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=200, bbox_inches="tight")
    return fig


def _gradient_symbol(labels: Any) -> str:
    """Returns ``||∂L/∂h_t||`` in TeX, naming what every curve is the gradient with respect to.

    ``rnnjax.diagnostics.gradient_flow`` ends the label of each leaf of a tuple carry in its
    name (``.../h``, ``.../c`` for an LSTM); curves all of one such leaf name it, any other
    set (several leaves, a whole flattened carry, unlabelled) is the gradient of the state.
    """
    leaves = {str(label).rsplit("/", 1)[-1] if "/" in str(label) else None for label in labels}
    symbol = leaves.pop() if len(leaves) == 1 else None
    symbol = symbol if symbol in ("h", "c") else r"\mathrm{state}"
    return rf"\|\partial L / \partial {symbol}_t\|"


def _new_axes(ax, figsize):
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def gradient_norms(
    norms: Mapping[str, Any] | Any,
    *,
    ylabel: str | None = None,
    title: str | None = None,
    ax: Any = None,
    path: str | os.PathLike | None = None,
):
    """Returns a Figure of gradient norm against time step, log-scaled, one line per cell.

    Args:
      norms: ``{label: (T,)}`` or one ``(T,)`` array, e.g. from
        :func:`rnnjax.diagnostics.state_gradient_norms`. Steps with norm 0 (padding) are
        not drawn.
      ylabel: axis label; by default what the curves are the gradient with respect to:
        ``||∂L/∂h_t||`` or ``||∂L/∂c_t||`` when every label ends in that carry leaf (as
        :func:`rnnjax.diagnostics.gradient_flow` labels an LSTM's), else ``||∂L/∂state_t||``.
      title: optional title.
      ax: draw into these axes instead of a new figure.
      path: save the figure here.
    """
    curves = _curves(norms, "norms")
    fig, ax = _new_axes(ax, (5.0, 3.2))
    for label, v in curves.items():
        steps = np.arange(1, v.size + 1)
        v = np.where(v > 0, v, np.nan)
        ax.plot(steps, v, label=label or None, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("time step $t$")
    ax.set_ylabel(f"${_gradient_symbol(curves)}$" if ylabel is None else ylabel)
    return _finish(fig, ax, path, title, legend=any(curves))


def gradient_heatmap(
    history: Any,
    *,
    train_steps: Any = None,
    label: str | None = None,
    title: str | None = None,
    ax: Any = None,
    path: str | os.PathLike | None = None,
):
    """Returns a Figure: log10 gradient norm over time step (x) and training step (y).

    Args:
      history: ``(S, T)``, row ``s`` the gradient norms recorded at the ``s``-th
        evaluation (e.g. ``"gradient_flow/<label>"`` from
        :func:`rnnjax.diagnostics.gradient_flow_hook`).
      train_steps: ``(S,)`` training step of each row (default ``0, ..., S-1``).
      label: the label of the loop (and carry leaf) the rows belong to, which names the
        colour bar: ``log10 ||∂L/∂c_t||`` for ``"rnn/0/forward/c"`` (see
        :func:`gradient_norms`).
    """
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"history must have shape (S, T), got {h.shape}")
    if train_steps is None:
        train_steps = np.arange(h.shape[0])
    train_steps = np.asarray(train_steps)
    if train_steps.shape != (h.shape[0],):
        raise ValueError(
            f"train_steps must have shape ({h.shape[0]},) to match history, got {train_steps.shape}"
        )
    fig, ax = _new_axes(ax, (5.5, 3.5))
    with np.errstate(divide="ignore"):
        log_h = np.where(h > 0, np.log10(np.where(h > 0, h, 1.0)), np.nan)
    lo, hi = (train_steps[0], train_steps[-1]) if h.shape[0] > 1 else (0, 1)
    image = ax.imshow(
        log_h,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="viridis",
        extent=(0.5, h.shape[1] + 0.5, lo, hi),
    )
    symbol = _gradient_symbol([] if label is None else [label])
    fig.colorbar(image, ax=ax, label=rf"$\log_{{10}} {symbol}$")
    ax.set_xlabel("time step $t$")
    ax.set_ylabel("training step")
    return _finish(fig, ax, path, title, legend=False)


def singular_value_spectra(
    spectra: Mapping[str, Any] | Any,
    *,
    log: bool = True,
    title: str | None = None,
    ax: Any = None,
    path: str | os.PathLike | None = None,
):
    """Returns a Figure of singular values against their index (sorted descending), one line per label.

    Args:
      spectra: ``{label: (n,)}`` or one ``(n,)`` array, e.g. singular values of a
        recurrent matrix or of a Jacobian product. A horizontal line marks σ = 1.
      log: log-scaled y axis.
    """
    curves = _curves(spectra, "spectra")
    fig, ax = _new_axes(ax, (4.5, 3.2))
    for label, v in curves.items():
        v = np.sort(v)[::-1]
        ax.plot(np.arange(1, v.size + 1), v, marker="o", markersize=3, label=label or None)
    ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle="--")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("index $i$")
    ax.set_ylabel(r"singular value $\sigma_i$")
    return _finish(fig, ax, path, title, legend=any(curves))


def lyapunov_spectra(
    spectra: Mapping[str, Any] | Any,
    *,
    title: str | None = None,
    ax: Any = None,
    path: str | os.PathLike | None = None,
):
    """Returns a Figure of Lyapunov exponents λ_i (nats per step) against index i, one line per label.

    Args:
      spectra: ``{label: (k,)}`` or one ``(k,)`` array from
        :func:`rnnjax.diagnostics.lyapunov_spectrum`. A horizontal line marks λ = 0, the
        border between contracting and expanding directions.
    """
    curves = _curves(spectra, "spectra")
    fig, ax = _new_axes(ax, (4.5, 3.2))
    for label, v in curves.items():
        ax.plot(np.arange(1, v.size + 1), v, marker="o", markersize=3, label=label or None)
    ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--")
    ax.set_xlabel("index $i$")
    ax.set_ylabel(r"Lyapunov exponent $\lambda_i$ (nats/step)")
    return _finish(fig, ax, path, title, legend=any(curves))
