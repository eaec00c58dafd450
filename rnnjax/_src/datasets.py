"""The implementation of :mod:`rnnjax.datasets` (its docstring describes it)."""

from __future__ import annotations

import csv
import importlib.util
import pathlib
from typing import NamedTuple

import numpy as np

__all__ = [
    "ANOMALY_SETS",
    "Anomalies",
    "Classification",
    "SERIES",
    "Series",
    "co2_monthly",
    "elnino_monthly",
    "gutentag_anomaly",
    "read_timeeval_csv",
    "read_ts",
    "sunspots_yearly",
    "uea_classification",
    "ucr_anomaly",
]

# ------------------------------------------------------------------------------ locating


def package_file(package: str, *parts: str) -> pathlib.Path:
    """Returns the path of ``parts`` inside the installed ``package``, without importing it.

    Raises FileNotFoundError naming the package when it is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; its wheel ships the data file "
            f"{'/'.join(parts)} (pip install 'rnnjax[apps]')"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the installed {package!r} package")
    return path


def _read_csv(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [h.strip().strip('"') for h in rows[0]], [r for r in rows[1:] if r]


# ---------------------------------------------------------------------------- forecasting


class Series(NamedTuple):
    """One univariate time series at a regular frequency.

    Attributes:
      name: short name (``"co2"``).
      values: ``(T,)`` float64, no NaN.
      times: ``(T,)`` float64 decimal years of each observation (for plotting).
      period: the seasonal period in steps (12 for monthly data; 11 for yearly sunspots,
        the Schwabe cycle, which is only roughly periodic).
      source: the file inside the wheel and where its data came from.
    """

    name: str
    values: np.ndarray
    times: np.ndarray
    period: int
    source: str


def co2_monthly() -> Series:
    """Returns the Mauna Loa CO2 record as monthly means (ppm), March 1958 - December 2001.

    statsmodels ships the weekly record (2284 weeks, some missing); a month's value is the
    mean of its observed weeks, and the five months with no observed week (1958-06, 1958-10,
    1964-02 to 1964-04) are linearly interpolated between their neighbours.
    """
    path = package_file("statsmodels", "datasets", "co2", "co2.csv")
    _, rows = _read_csv(path)
    sums: dict[tuple[int, int], list[float]] = {}
    for date, value in rows:
        key = (int(date[:4]), int(date[4:6]))
        sums.setdefault(key, [])
        if value.strip():
            sums[key].append(float(value))
    months = sorted(sums)
    values = np.array([np.mean(sums[m]) if sums[m] else np.nan for m in months])
    missing = np.isnan(values)
    if missing.any():
        idx = np.arange(len(values))
        values[missing] = np.interp(idx[missing], idx[~missing], values[~missing])
    times = np.array([y + (m - 0.5) / 12 for y, m in months])
    return Series(
        "co2",
        values,
        times,
        12,
        "statsmodels/datasets/co2/co2.csv: weekly atmospheric CO2 at Mauna Loa "
        "(Scripps), 1958-2001, averaged to months",
    )


def sunspots_yearly() -> Series:
    """Returns the yearly mean sunspot number, 1700-2008 (309 years)."""
    path = package_file("statsmodels", "datasets", "sunspots", "sunspots.csv")
    _, rows = _read_csv(path)
    years = np.array([float(r[0]) for r in rows])
    return Series(
        "sunspots",
        np.array([float(r[1]) for r in rows]),
        years + 0.5,
        11,
        "statsmodels/datasets/sunspots/sunspots.csv: yearly sunspot numbers "
        "1700-2008 (SIDC via NGDC)",
    )


def elnino_monthly() -> Series:
    """Returns the monthly sea-surface temperature of the El Niño region (deg C), 1950-2010."""
    path = package_file("statsmodels", "datasets", "elnino", "elnino.csv")
    _, rows = _read_csv(path)
    values = np.array([float(v) for r in rows for v in r[1:13]])
    times = np.array([float(r[0]) + (m + 0.5) / 12 for r in rows for m in range(12)])
    return Series(
        "elnino",
        values,
        times,
        12,
        "statsmodels/datasets/elnino/elnino.csv: monthly sea-surface temperature, "
        "El Niño region, 1950-2010 (NOAA)",
    )


#: The forecasting series by name: ``SERIES[name]()`` returns a :class:`Series`.
SERIES = {"co2": co2_monthly, "sunspots": sunspots_yearly, "elnino": elnino_monthly}


# ---------------------------------------------------------------------------- classification


class Classification(NamedTuple):
    """One split of a labelled multivariate sequence data set.

    Attributes:
      sequences: list of N arrays ``(T_i, D)``, float64 (lengths may differ).
      labels: ``(N,)`` int32 in ``[0, len(classes))``.
      classes: the class names, in label order.
    """

    sequences: list[np.ndarray]
    labels: np.ndarray
    classes: tuple[str, ...]


def read_ts(path: str | pathlib.Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Returns ``(sequences, labels, declared_classes)`` from a sktime/aeon ``.ts`` file.

    The format: ``#`` comments, ``@key value`` headers (``@classLabel true a b c`` lists
    the classes), then after ``@data`` one case per line, ``dim_1:dim_2:...:label``, each
    dimension a comma-separated list. Each sequence is returned as ``(T, D)``.
    """
    sequences, labels, declared = [], [], []
    in_data = False
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                words = line.split()
                if words[0].lower() == "@classlabel" and len(words) > 2:
                    declared = words[2:]
                in_data = words[0].lower() == "@data"
                continue
            *dims, label = line.split(":")
            sequences.append(np.array([[float(v) for v in d.split(",")] for d in dims]).T)
            labels.append(label.strip())
    return sequences, labels, declared


def uea_classification(name: str, split: str) -> Classification:
    """Returns the ``split`` ("train" or "test") of the UEA archive set ``name`` shipped by aeon.

    aeon's wheel ships ``JapaneseVowels`` (12 LPC coefficients, 7-29 frames, 9 speakers;
    Kudo et al. 1999) and ``BasicMotions`` (6 accelerometer/gyroscope channels, 100 steps,
    4 activities), with the archive's train/test splits (Bagnall et al. 2018).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    sequences, labels, declared = read_ts(
        package_file("aeon", "datasets", "data", name, f"{name}_{split.upper()}.ts")
    )
    # Labels map to the header's class order (case-insensitively, as files differ in case),
    # so that train and test agree even if one split lacks a class.
    order = [c.lower() for c in declared] or sorted({lab.lower() for lab in labels})
    unknown = sorted({lab for lab in labels if lab.lower() not in order})
    if unknown:
        raise ValueError(f"{name} {split}: labels {unknown} are not among the declared {order}")
    index = np.array([order.index(lab.lower()) for lab in labels], np.int32)
    return Classification(sequences, index, tuple(order))


# --------------------------------------------------------------------------- anomalies


class Anomalies(NamedTuple):
    """A labelled anomaly-detection series with a normal-only training part.

    Attributes:
      name: short name.
      train: ``(T_train, D)`` float64, normal data (no labelled anomaly).
      test: ``(T_test, D)`` float64, the series to score.
      labels: ``(T_test,)`` int32, 1 where ``test`` is anomalous.
      source: the files inside the wheel and where the data came from.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    source: str


def read_timeeval_csv(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(values: (T, D), labels: (T,))`` from a TimeEval CSV (timestamp, values..., is_anomaly)."""
    _, rows = _read_csv(pathlib.Path(path))
    values = np.array([[float(v) for v in r[1:-1]] for r in rows])
    labels = np.array([int(float(r[-1])) for r in rows], np.int32)
    return values, labels


def ucr_anomaly() -> Anomalies:
    """Returns UCR anomaly archive series 135, InternalBleeding16 (KDD Cup 2021; Wu & Keogh 2021).

    A patient's heart-rate-like vital sign, 7501 steps; the first 1200 are the normal training
    part, and one anomaly of 12 steps (4187-4198) is labelled in the rest. aeon's TEST file
    is the whole series (its first 1200 steps equal the TRAIN file), so the test part here
    is the series after the training part.
    """
    folder = ("datasets", "data", "KDD-TSAD_135")
    train, train_labels = read_timeeval_csv(
        package_file("aeon", *folder, "135_UCR_Anomaly_InternalBleeding16_TRAIN.csv")
    )
    whole, labels = read_timeeval_csv(
        package_file("aeon", *folder, "135_UCR_Anomaly_InternalBleeding16_TEST.csv")
    )
    n = len(train)
    if not np.array_equal(whole[:n], train) or train_labels.any():
        raise ValueError("KDD-TSAD_135: the TEST file no longer starts with the normal TRAIN part")
    return Anomalies(
        "ucr135",
        train,
        whole[n:],
        labels[n:],
        "aeon/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_"
        "{TRAIN,TEST}.csv: UCR time-series anomaly archive (Wu & Keogh 2021)",
    )


def gutentag_anomaly() -> Anomalies:
    """Returns GutenTAG's synthetic ``ecg-diff-count-3`` (Wenig et al. 2022): 3 labelled anomalies.

    A synthetic ECG-like series of 10000 steps; training on ``TRAIN_NA`` (no anomalies), the
    ``TEST`` series holds three anomalies of 100 steps each. Synthetic, unlike the UCR series.
    """
    folder = ("datasets", "data", "UnitTest")
    train, train_labels = read_timeeval_csv(
        package_file("aeon", *folder, "ecg-diff-count-3_TRAIN_NA.csv")
    )
    test, labels = read_timeeval_csv(package_file("aeon", *folder, "ecg-diff-count-3_TEST.csv"))
    if train_labels.any():
        raise ValueError("ecg-diff-count-3_TRAIN_NA.csv has labelled anomalies")
    return Anomalies(
        "gutentag_ecg",
        train,
        test,
        labels,
        "aeon/datasets/data/UnitTest/ecg-diff-count-3_{TRAIN_NA,TEST}.csv: "
        "synthetic ECG generated with GutenTAG (TimeEval)",
    )


#: The anomaly-detection sets by name: ``ANOMALY_SETS[name]()`` returns :class:`Anomalies`.
ANOMALY_SETS = {"ucr135": ucr_anomaly, "gutentag_ecg": gutentag_anomaly}
