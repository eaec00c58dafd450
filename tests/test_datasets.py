"""rnnjax.datasets: the files inside the statsmodels and aeon wheels, checked against hand-read values."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from rnnjax._src import datasets


def test_co2_months_are_the_means_of_their_weeks():
    s = datasets.co2_monthly()
    assert s.values.shape == (526,) and s.times.shape == (526,) and s.period == 12
    assert not np.isnan(s.values).any()
    np.testing.assert_allclose(np.diff(s.times), 1 / 12)
    assert s.times[0] == pytest.approx(1958 + 2.5 / 12)  # March 1958
    # co2.csv: 1958-03 has one week (316.1); 1958-04 has 317.3, 317.6, 317.5, 316.4.
    assert s.values[0] == pytest.approx(316.1)
    assert s.values[1] == pytest.approx((317.3 + 317.6 + 317.5 + 316.4) / 4)
    # 1958-06 has no observed week: halfway between May (316.9, 317.5, 317.9) and July
    # (315.8, 315.8, 315.4, 315.5).
    may, july = (316.9 + 317.5 + 317.9) / 3, (315.8 + 315.8 + 315.4 + 315.5) / 4
    assert s.values[3] == pytest.approx((may + july) / 2)


def test_sunspots_and_elnino_match_their_csv_files():
    s = datasets.sunspots_yearly()
    assert s.values.shape == (309,) and s.period == 11
    np.testing.assert_array_equal(s.values[:4], [5, 11, 16, 23])  # 1700-1703
    assert s.values[-1] == pytest.approx(2.9)  # 2008
    e = datasets.elnino_monthly()
    assert e.values.shape == (61 * 12,) and not np.isnan(e.values).any()
    np.testing.assert_allclose(e.values[:3], [23.11, 24.20, 25.37])  # Jan-Mar 1950
    assert e.values[12] == pytest.approx(24.19)  # Jan 1951
    np.testing.assert_allclose(np.diff(e.times), 1 / 12)


def _fingerprints(sequences):
    return {hashlib.sha1(np.round(s, 6).tobytes()).hexdigest() for s in sequences}


@pytest.mark.parametrize(
    "name, sizes, channels, lengths, counts",
    [
        ("JapaneseVowels", (270, 370), 12, (7, 29), [30] * 9),
        ("BasicMotions", (40, 40), 6, (100, 100), [10] * 4),
    ],
)
def test_uea_sets_have_the_archive_shapes_and_disjoint_splits(
    name, sizes, channels, lengths, counts
):
    train = datasets.uea_classification(name, "train")
    test = datasets.uea_classification(name, "test")
    assert (len(train.sequences), len(test.sequences)) == sizes
    assert train.classes == test.classes and len(train.classes) == len(counts)
    assert np.bincount(train.labels).tolist() == counts
    every = train.sequences + test.sequences
    assert {s.shape[1] for s in every} == {channels}
    assert (min(map(len, every)), max(map(len, every))) == lengths
    assert not any(np.isnan(s).any() for s in every)
    assert not _fingerprints(train.sequences) & _fingerprints(test.sequences)
    assert test.labels.min() >= 0 and test.labels.max() < len(test.classes)


def test_read_ts_parses_a_hand_written_file(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text(
        "# a comment\n@problemName tiny\n@classLabel true up down\n@data\n"
        "1,2,3:4,5,6:up\n7,8:9,10:DOWN\n"
    )
    sequences, labels, declared = datasets.read_ts(path)
    np.testing.assert_array_equal(sequences[0], [[1, 4], [2, 5], [3, 6]])  # (T, D)
    np.testing.assert_array_equal(sequences[1], [[7, 9], [8, 10]])
    assert labels == ["up", "DOWN"] and declared == ["up", "down"]


def test_ucr_anomaly_splits_the_series_after_its_normal_part():
    a = datasets.ucr_anomaly()
    assert a.train.shape == (1200, 1) and a.test.shape == (6301, 1)
    assert not np.isnan(a.train).any() and not np.isnan(a.test).any()
    # The file names the anomaly 4187-4199 of the whole series (end exclusive).
    np.testing.assert_array_equal(np.flatnonzero(a.labels), np.arange(4187, 4199) - 1200)
    assert a.train[0, 0] == pytest.approx(63.73215)


def test_gutentag_anomaly_has_three_labelled_segments():
    a = datasets.gutentag_anomaly()
    assert a.train.shape == a.test.shape == (10000, 1)
    starts = np.flatnonzero(np.diff(np.r_[0, a.labels]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[a.labels, 0]) == -1) + 1
    assert starts.tolist() == [1560, 6600, 6940] and (ends - starts).tolist() == [100] * 3


def test_a_missing_package_is_named():
    with pytest.raises(FileNotFoundError, match="'no_such_package_xyz' is not installed"):
        datasets.package_file("no_such_package_xyz", "data.csv")
    with pytest.raises(FileNotFoundError, match="is not in the installed 'numpy' package"):
        datasets.package_file("numpy", "no_such_file.csv")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        datasets.uea_classification("BasicMotions", "validation")


def test_importing_rnnjax_imports_neither_statsmodels_nor_aeon():
    code = (
        "import sys, rnnjax; print(sorted(m for m in ('statsmodels', 'aeon', 'pandas', "
        "'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
