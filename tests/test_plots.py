"""Plots: a figure comes back with labelled axes and the drawn data, and files are written."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from rnnjax import plots


def test_import_rnnjax_does_not_import_matplotlib():
    code = "import sys, rnnjax; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gradient_norms_one_line_per_cell_on_log_axis(tmp_path):
    norms = {"elman": 0.9 ** np.arange(10)[::-1], "lstm": np.linspace(0.5, 1.0, 10)}
    norms["lstm"][0] = 0.0  # padding: not drawn
    fig = plots.gradient_norms(norms, path=tmp_path / "norms.png")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["elman", "lstm"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), norms["elman"])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(1, 11))
    assert np.isnan(ax.lines[1].get_ydata()[0])
    assert (tmp_path / "norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_heatmap_shows_log10_and_saves_pdf(tmp_path):
    history = np.outer(np.arange(1.0, 4.0), 10.0 ** np.arange(5))
    fig = plots.gradient_heatmap(history, train_steps=[0, 100, 200], path=tmp_path / "heat.pdf")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), np.log10(history))
    assert ax.get_xlabel() == "time step $t$" and ax.get_ylabel() == "training step"
    assert fig.axes[1].get_ylabel()  # the colour bar is labelled
    assert (tmp_path / "heat.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="train_steps"):
        plots.gradient_heatmap(history, train_steps=[0, 1])


def test_singular_value_and_lyapunov_spectra(tmp_path):
    fig = plots.singular_value_spectra({"W_hh": [0.5, 2.0, 1.0]}, path=tmp_path / "sv.png")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.0, 1.0, 0.5])
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_yscale() == "log"
    assert (tmp_path / "sv.png").stat().st_size > 0

    fig = plots.lyapunov_spectra({"a": [0.1, -0.3], "b": [-0.2, -0.5]}, path=tmp_path / "ly.png")
    ax = fig.axes[0]
    assert len(ax.get_legend().get_texts()) == 2
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [-0.2, -0.5])
    assert ax.get_xlabel() and "Lyapunov" in ax.get_ylabel()
    assert (tmp_path / "ly.png").stat().st_size > 0
    with pytest.raises(ValueError, match="spectra"):
        plots.lyapunov_spectra(np.zeros((2, 2)))


def test_gradient_axes_name_the_carry_leaf_they_draw(tmp_path):
    # gradient_flow ends the label of an LSTM's leaves in /h and /c
    v = np.linspace(0.5, 1.0, 4)

    def ylabel(norms):
        return plots.gradient_norms(norms).axes[0].get_ylabel()

    assert ylabel({"rnn/0/forward/c": v, "rnn/0/backward/c": v}) == (
        r"$\|\partial L / \partial c_t\|$"
    )
    assert ylabel({"rnn/0/forward/h": v}) == r"$\|\partial L / \partial h_t\|$"
    state = r"$\|\partial L / \partial \mathrm{state}_t\|$"
    assert ylabel({"rnn/h": v, "rnn/c": v}) == state  # two leaves on one axis
    assert ylabel(v) == state  # a flattened carry, e.g. state_gradient_norms of an LSTM
    assert ylabel({"rnn/0/forward": v}) == state
    assert plots.gradient_norms(v, ylabel="mine").axes[0].get_ylabel() == "mine"
    fig = plots.gradient_heatmap(np.ones((2, 4)), label="rnn/0/forward/c")
    assert fig.axes[1].get_ylabel() == r"$\log_{10} \|\partial L / \partial c_t\|$"
