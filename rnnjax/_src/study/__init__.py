"""The vanishing-gradient study (private; the public module is ``rnnjax.study``).

``config`` holds what defines a study, ``run`` trains and measures it, ``report`` turns the
records into tables, verdicts and figures.
"""

from rnnjax._src.study.config import PRESETS, Config, StudyCell, check_config, load_cell_factory
from rnnjax._src.study.report import cell_verdict, grad_ratio, make_figures, verdict
from rnnjax._src.study.run import _readout, main, parse_args, run_study

__all__ = [
    "PRESETS",
    "Config",
    "StudyCell",
    "_readout",
    "cell_verdict",
    "check_config",
    "grad_ratio",
    "load_cell_factory",
    "main",
    "make_figures",
    "parse_args",
    "run_study",
    "verdict",
]
