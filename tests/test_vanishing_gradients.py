"""Smoke test of experiments/vanishing_gradients.py (a thin use of rnnjax.study) at a tiny
size: every output file is made and well-formed, and the command line is the one it had."""

import dataclasses
import importlib.util
import json
import math
import os
import sys

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "vanishing_gradients.py")


def _load():
    spec = importlib.util.spec_from_file_location("vanishing_gradients", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up by name
    spec.loader.exec_module(module)
    return module


vg = _load()

TINY = [
    "--cells",
    "elman",
    "lstm",
    "--lengths",
    "4",
    "--num-seeds",
    "2",
    "--num-steps",
    "4",
    "--eval-every",
    "2",
    "--hidden-size",
    "4",
    "--batch-size",
    "4",
    "--test-size",
    "16",
    "--diag-size",
    "4",
    "--lag-size",
    "2",
    "--no-progress",
]


@pytest.mark.slow
def test_tiny_study_writes_every_output(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    out = vg.main(TINY + ["--run-dir", run_dir])
    printed = capsys.readouterr().out
    assert "VERDICT" in printed

    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["cells"] == ["elman", "lstm"] and config["num_steps"] == 4

    with open(os.path.join(run_dir, "results.json")) as f:
        records = json.load(f)
    assert len(records) == 2 * 1 * 2  # cells x T x seeds
    assert {(r["cell"], r["seed"]) for r in records} == {
        (c, s) for c in ("elman", "lstm") for s in (0, 1)
    }
    for r in records:
        for key in (
            "task",
            "cell",
            "T",
            "seed",
            "steps",
            "final_test_loss",
            "baseline_loss",
            "solved",
            "grad_ratio_init",
            "grad_ratio_final",
            "jacobian_norm_first_init",
            "lyapunov_max_init",
            "long_lag_fraction_init",
            "long_lag_fraction_final",
        ):
            assert key in r, key
        assert r["task"] == "adding" and r["T"] == 4 and r["steps"] == 4
        assert r["baseline_loss"] == pytest.approx(1 / 6)
        assert math.isfinite(r["final_test_loss"]) and r["final_test_loss"] > 0
        assert r["solved"] == (r["final_test_loss"] <= 0.1 * r["baseline_loss"])
        assert math.isfinite(r["grad_ratio_init"]) and r["grad_ratio_init"] > 0
    assert records == out["records"]

    with open(os.path.join(run_dir, "summary.md")) as f:
        summary = f.read()
    assert "| cell | T=4 |" in summary
    assert "| vanilla RNN (tanh) |" in summary and "| LSTM |" in summary
    assert "VERDICT" in summary and "||dL/dh_1|| / ||dL/dh_T||" in summary

    for name in (
        "summary",
        "final_loss_vs_T",
        "learning_curves",
        "gradient_norms",
        "gradient_heatmap",
        "gradient_by_lag",
    ):
        path = os.path.join(run_dir, "figures", name + ".png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
        assert os.path.getsize(path) > 5000, path

    for group in ("elman_T4", "lstm_T4"):
        with open(os.path.join(run_dir, group, "group.json")) as f:
            g = json.load(f)
        assert g["hook_steps"] == [0, 2, 4]
        assert [len(g["grad_norms"][0]), len(g["grad_norms"][0][0])] == [2, 4]  # (seeds, T)
        assert len(g["train_loss"]) == 2 and len(g["train_loss"][0]) == 4  # (seeds, steps)
        for key in ("jacobian_norms_init", "lag_norms_init", "lag_norms_final"):
            assert [len(g[key]), len(g[key][0])] == [2, 4], key  # (seeds, T)
        assert os.path.exists(os.path.join(run_dir, group, "metrics.jsonl"))

    # Rerunning the same config resumes: finished groups are loaded, not retrained.
    again = vg.main(TINY + ["--run-dir", run_dir])
    assert again["records"] == records
    assert "done earlier, loaded" in capsys.readouterr().err

    # A different config in the same run dir is refused rather than mixed in.
    with pytest.raises(SystemExit, match="config differs"):
        vg.main(TINY + ["--run-dir", run_dir, "--learning-rate", "0.5"])


def test_flags_cover_every_field_and_override_the_preset(capsys):
    with pytest.raises(SystemExit):
        vg.parse_args(["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(vg.Config):
        assert "--" + field.name.replace("_", "-") in text, field.name
    config, args = vg.parse_args(["--preset", "full", "--num-seeds", "2", "--lengths", "7", "9"])
    assert config.num_seeds == 2 and config.lengths == (7, 9)
    assert config.num_steps == vg.PRESETS["full"]["num_steps"]
    assert args.run_dir == os.path.join("runs", "vanishing_gradients", "full")
    with pytest.raises(ValueError, match="cells must be among"):
        vg.parse_args(["--cells", "transformer"])


def test_grad_ratio_is_first_over_last():
    assert vg.grad_ratio([1e-6, 0.5, 2.0]) == pytest.approx(5e-7)
    # no gradient at the last state (a loss on the LRU's outputs): against the state before it
    assert vg.grad_ratio([1e-3, 0.5, 2.0, 0.0]) == pytest.approx(5e-4)
    assert math.isnan(vg.grad_ratio([1.0, 0.0, 0.0]))


def test_verdict_reports_the_linear_cells_from_their_records():
    # Hand-made records: the LRU solves T=100 (median 0.02 x baseline), minGRU does not
    # (median 0.9); ratios are the medians over seeds, written by hand below.
    config, _ = vg.parse_args(["--preset", "linear"])
    assert config.cells == ("elman", "lstm", "gru", "lru", "mingru") and config.lengths == (100,)
    losses = {
        "elman": [1.0, 1.1, 0.9],
        "lstm": [0.01, 0.02, 0.03],
        "gru": [0.01, 0.01, 0.01],
        "lru": [0.01, 0.02, 0.5],
        "mingru": [0.9, 0.8, 1.0],
    }
    records = [
        {
            "cell": c,
            "T": 100,
            "loss_over_baseline": v,
            "grad_ratio_init": 10.0 ** -(s + 1),
            "grad_ratio_final": 0.5 + s,
        }
        for c, vs in losses.items()
        for s, v in enumerate(vs)
    ]
    lines = vg.verdict(config, records)
    lru = next(ln for ln in lines if ln.startswith("LRU"))
    mingru = next(ln for ln in lines if ln.startswith("minGRU"))
    assert "0.020 x baseline (solves it)" in lru
    assert "0.900 x baseline (does not reach 0.1)" in mingru
    assert "1.0e-02 at init, 1.5e+00 after training" in lru
    assert lines[0] == "VERDICT: the vanishing-gradient effect IS reproduced."
