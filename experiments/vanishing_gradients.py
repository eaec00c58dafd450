"""The vanishing-gradient study: vanilla RNN vs LSTM vs GRU on long-range dependencies.

The study lives in the library, :mod:`rnnjax.study` (``python -m rnnjax.study``, which also
runs your own cells: ``--cell my_cells.py:make_cell``); its docstring gives the methods.
This script keeps the command line it always had, with run directories under
``runs/vanishing_gradients/<preset>``::

    python experiments/vanishing_gradients.py                   # quick preset, a few minutes
    python experiments/vanishing_gradients.py --preset full     # paper scale; rerun to resume
    python experiments/vanishing_gradients.py --preset linear   # + LRU, minGRU at T = 100
    python experiments/vanishing_gradients.py --cells elman lstm --lengths 10 200 --num-steps 3000
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnjax._src import study
from rnnjax._src.study import PRESETS, Config, grad_ratio, verdict

__all__ = ["PRESETS", "Config", "grad_ratio", "main", "parse_args", "verdict"]


def parse_args(argv: Sequence[str] | None = None):
    """Returns (config, other options): :func:`rnnjax.study.parse_args`, runs under
    ``runs/vanishing_gradients``."""
    return study.parse_args(argv, name="vanishing_gradients")


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the study; returns ``{"records", "verdict", "cell_verdicts", "run_dir"}``."""
    return study.main(argv, name="vanishing_gradients")


if __name__ == "__main__":
    main()
