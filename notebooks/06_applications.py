# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Applications on real data: forecasting, classification, anomaly detection
#
# Everything before this notebook trained on synthetic tasks. Here rnnjax's RNNs learn real
# data that ships inside PyPI wheels (nothing is downloaded; `rnnjax.datasets` opens the
# files that `pip install "rnnjax[apps]"` put in site-packages), each next to the method a
# statistician would use, measured in the same run on the same split:
#
# | application | data (file inside the wheel) | RNN | baselines |
# |---|---|---|---|
# | forecasting | statsmodels: `datasets/co2/co2.csv`, `datasets/sunspots/sunspots.csv`, `datasets/elnino/elnino.csv` | many-to-many LSTM, H steps ahead at every step | naive, seasonal naive, SARIMA, ETS |
# | classification | aeon: `datasets/data/JapaneseVowels/*.ts`, `datasets/data/BasicMotions/*.ts` | bidirectional GRU on padded batches with `length=` | majority class, logistic regression on summary features, 1-NN DTW |
# | anomaly detection | aeon: `datasets/data/KDD-TSAD_135/*.csv` (UCR archive), `datasets/data/UnitTest/ecg-diff-count-3_*.csv` (GutenTAG, synthetic) | LSTM forecasting error under a Gaussian (Malhotra et al. 2015) | rolling z-score |
#
# Each application is a script in `experiments/` (`--help` lists its flags); this notebook
# shows each one's quick preset: the run that `make apps` left in `runs/<script>/quick` if
# there is one, else it runs the script as a subprocess. `docs/applications.md` also holds
# the full presets. With `RNNJAX_QUICK=1` (the test suite) only the anomaly experiment runs,
# shrunk to a few training steps on one data set (its numbers are then meaningless); the
# other two are skipped, as each run costs half a minute of compilation and
# `tests/test_applications.py` already runs all three scripts at a tiny size.

# %%
import json
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

from rnnjax import datasets

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
REPO = os.path.abspath(os.path.join(os.getcwd(), os.pardir))


def run(script, quick_flags=None):
    """Returns (results, run_dir) of experiments/<script>.py's quick preset, or None.

    Reuses ``runs/<script>/quick`` (what ``make apps`` writes) when it holds finished results.
    With RNNJAX_QUICK=1 runs the script with ``quick_flags`` (tiny), or returns None without
    them.
    """
    run_dir = os.path.join(REPO, "runs", script, "quick")
    if QUICK and quick_flags is None:
        print(f"{script}: skipped under RNNJAX_QUICK=1")
        return None
    if QUICK or not os.path.exists(os.path.join(run_dir, "results.json")):
        run_dir = os.path.join(tempfile.mkdtemp(prefix="rnnjax_apps_"), script)
        argv = [
            sys.executable,
            "-m",
            f"experiments.{script}",
            "--no-progress",
            "--run-dir",
            run_dir,
            *(quick_flags if QUICK else []),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
    else:
        print(f"the run `make apps` left in {os.path.relpath(run_dir, REPO)}")
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f), run_dir


def show(done, figures):
    """Displays the summary.md and the named figures of ``done = (results, run_dir)`` (None: nothing)."""
    if done is None:
        return
    run_dir = done[1]
    with open(os.path.join(run_dir, "summary.md")) as f:
        display(Markdown(f.read()))
    for name in figures:
        display(Image(os.path.join(run_dir, "figures", name)))


# %% [markdown]
# ## The data
# Three series for forecasting (CO2 has a trend and a 12-month season; sunspots have the
# roughly 11-year Schwabe cycle, whose peaks in the held-out 20th century are higher than any
# before; El Niño sea-surface temperature is seasonal with irregular warm years), two
# labelled sets of variable- and fixed-length multivariate sequences, and two series with
# labelled anomalies after a normal training part.

# %%
fig, axes = plt.subplots(2, 3, figsize=(13, 6))
for ax, loader in zip(
    axes[0], (datasets.co2_monthly, datasets.sunspots_yearly, datasets.elnino_monthly)
):
    s = loader()
    ax.plot(s.times, s.values, lw=0.8)
    ax.set_title(f"{s.name}: {len(s.values)} steps, period {s.period}")
jv = datasets.uea_classification("JapaneseVowels", "train")
for i in (0, 40, 80):
    axes[1, 0].plot(
        jv.sequences[i][:, 0],
        "o-",
        ms=2,
        lw=0.8,
        label=f"speaker {jv.classes[jv.labels[i]]}, {len(jv.sequences[i])} frames",
    )
axes[1, 0].set_title("JapaneseVowels: first LPC coefficient")
axes[1, 0].legend(fontsize=7)
for ax, loader in zip(axes[1, 1:], (datasets.ucr_anomaly, datasets.gutentag_anomaly)):
    a = loader()
    bad = np.flatnonzero(a.labels)
    ax.plot(a.test[:, 0], lw=0.4, color="k")
    ax.plot(bad, a.test[bad, 0], ".", ms=2, color="tab:red")
    ax.set_title(f"{a.name}: {len(bad)} anomalous of {len(a.labels)} test steps")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Forecasting: a many-to-many LSTM against naive, seasonal naive, SARIMA and ETS
# At every step the LSTM emits the next H values; the forecast from origin t is its output at
# t. Walk-forward over the held-out tail: every origin, every method, parameters fixed after
# training. MASE divides the MAE by the in-sample error of the seasonal naive forecast, so
# MASE < 1 beats it on the training part's terms.

# %%
forecasting = run("forecasting")
show(forecasting, ["forecasts.png"])

# %% [markdown]
# ## Sequence classification with variable lengths: a bidirectional GRU against 1-NN DTW
# JapaneseVowels' utterances last 7 to 29 frames; they are padded to the longest and the true
# lengths passed as `length=`, so each direction reads only the valid frames. 1-NN DTW on the
# raw data is the UEA archive's benchmark (this run reproduces the published accuracies).

# %%
classification = run("classification")
show(classification, ["accuracy.png", "confusion_JapaneseVowels.png"])

# %% [markdown]
# ## Anomaly detection: LSTM forecasting error against a rolling z-score
# Malhotra et al. (2015): an LSTM trained on normal data predicts the next l values; each
# point's l prediction errors are scored by their negative log-likelihood under a Gaussian
# fitted on held-out normal data. The UCR series' anomaly stays within the normal range of
# values, which a z-score cannot see.

# %%
anomalies = run(
    "anomaly_detection",
    [
        "--datasets",
        "ucr135",
        "--num-steps",
        "4",
        "--num-seeds",
        "1",
        "--eval-every",
        "2",
        "--context",
        "8",
        "--hidden-size",
        "4",
    ],
)
show(anomalies, [f"scores_{r['dataset']}.png" for r in anomalies[0]["results"]])

# %% [markdown]
# ## What the runs say
# The verdicts below are computed by the scripts from the numbers above, not written by hand.

# %%
for name, done in (
    ("forecasting", forecasting),
    ("classification", classification),
    ("anomaly detection", anomalies),
):
    if done is not None:
        print(f"{name}:")
        for line in done[0]["verdict"]:
            print("   ", line)
