"""Real data sets that ship inside PyPI wheels, read with NumPy from the installed package's files.

Nothing is downloaded: every loader opens a file that ``pip install`` put into site-packages,
found without importing its package (so ``import rnnjax`` stays light), and raises
``FileNotFoundError`` naming the package to install when it is absent. The files:

======================  =============================================================  ==========
loader                  file inside the wheel                                          package
======================  =============================================================  ==========
``co2_monthly``         ``statsmodels/datasets/co2/co2.csv`` (weekly, Mauna Loa)        statsmodels
``sunspots_yearly``     ``statsmodels/datasets/sunspots/sunspots.csv`` (1700-2008)      statsmodels
``elnino_monthly``      ``statsmodels/datasets/elnino/elnino.csv`` (1950-2010)          statsmodels
``uea_classification``  ``aeon/datasets/data/<name>/<name>_{TRAIN,TEST}.ts``            aeon
``ucr_anomaly``         ``aeon/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_...csv``      aeon
``gutentag_anomaly``    ``aeon/datasets/data/UnitTest/ecg-diff-count-3_*.csv``          aeon
======================  =============================================================  ==========

``pip install "rnnjax[apps]"`` installs both packages (aeon is pinned below 1.7, which
announces the removal of the GutenTAG file).
"""

from rnnjax._src.datasets import (
    co2_monthly,
    elnino_monthly,
    gutentag_anomaly,
    sunspots_yearly,
    ucr_anomaly,
    uea_classification,
)

__all__ = [
    "co2_monthly",
    "elnino_monthly",
    "gutentag_anomaly",
    "sunspots_yearly",
    "uea_classification",
    "ucr_anomaly",
]
