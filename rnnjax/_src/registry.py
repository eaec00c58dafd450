"""The one table of built-in cells by name, shared by the study, the experiments, notebooks and tests.

Each entry is a :class:`CellSpec`: a factory ``make(hidden_size, **options) -> Cell``, the
label a figure or a table prints, and a colour that stays the same across figures. A new
built-in cell is one entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from rnnjax._src.cells import Cell, elman, gru, irnn, lstm
from rnnjax._src.griffin import rg_lru
from rnnjax._src.linear_cells import lru, mingru, minlstm
from rnnjax._src.mamba import selective_ssm
from rnnjax._src.xlstm import mlstm, slstm

__all__ = ["CELLS", "CellSpec", "make_cell"]


class CellSpec(NamedTuple):
    """A built-in cell: ``make(hidden_size, **options)``, its label and its colour in figures."""

    make: Callable[..., Cell]
    label: str
    color: str


#: The built-in cells by name, each a :class:`CellSpec` (:func:`make_cell` builds one).
CELLS: Mapping[str, CellSpec] = {
    "elman": CellSpec(lambda h, **kw: elman(h, "tanh", **kw), "vanilla RNN (tanh)", "tab:red"),
    "lstm": CellSpec(lstm, "LSTM", "tab:blue"),
    "gru": CellSpec(gru, "GRU", "tab:green"),
    "irnn": CellSpec(irnn, "IRNN (ReLU, W=I)", "tab:orange"),
    # Orvieto et al. (2023) use the ring r in [0.9, 0.999] and phases up to pi/10 on their
    # long-range tasks.
    "lru": CellSpec(
        lambda h, r_min=0.9, r_max=0.999, max_phase=math.pi / 10, **kw: lru(
            h, r_min, r_max, max_phase, **kw
        ),
        "LRU",
        "tab:purple",
    ),
    "mingru": CellSpec(mingru, "minGRU", "tab:brown"),
    "minlstm": CellSpec(minlstm, "minLSTM", "tab:pink"),
    "rg_lru": CellSpec(rg_lru, "RG-LRU (Hawk)", "darkgoldenrod"),
    "selective_ssm": CellSpec(selective_ssm, "selective SSM (Mamba S6)", "teal"),
    # xLSTM (Beck et al. 2024); one head by default (the paper's blocks use 4: num_heads=4)
    "slstm": CellSpec(slstm, "sLSTM", "tab:olive"),
    "mlstm": CellSpec(mlstm, "mLSTM", "tab:cyan"),
}


def make_cell(name: str, hidden_size: int, **options: Any) -> Cell:
    """Returns the built-in cell ``name`` of ``hidden_size`` units (``options`` go to its factory).

    Raises:
      ValueError: ``name`` is not in :data:`rnnjax.CELLS`; the message lists the names.
    """
    if name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {name!r}")
    return CELLS[name].make(hidden_size, **options)
