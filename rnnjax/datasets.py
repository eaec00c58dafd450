"""Real data that ships inside installed wheels (statsmodels, aeon): nothing is downloaded.

Forecasting series (:func:`co2_monthly`, :func:`sunspots_yearly`, :func:`elnino_monthly`),
multivariate classification (:func:`uea_classification`) and anomaly detection
(:func:`ucr_anomaly`, :func:`gutentag_anomaly`); each function names its source.
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
