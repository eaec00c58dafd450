"""The vanishing-gradient study for any cell: ``python -m rnnjax.study --cell FILE.py:FACTORY``.

:func:`run_study` trains the cells of a :class:`Config` (a user's beside the baselines) on the
adding problem, copy memory or temporal order over a grid of T, seeds vmapped into one
program, and writes a run directory: config, results.json, summary.md with its verdict,
figures. :data:`PRESETS` names the budgets (``tiny``, ``quick``, ``linear``, ``full``).
"""

from rnnjax._src.study import PRESETS, Config, run_study

__all__ = ["PRESETS", "Config", "run_study"]
