"""experiments/benchmark_parallel.py end to end at a tiny size: it writes its tables, and its
parallel timings compute the function of the sequential scan (the values it checks)."""

import json
import os

import pytest
from experiment_scripts import load


@pytest.mark.slow
def test_benchmark_parallel_runs_end_to_end_and_writes_its_tables(tmp_path):
    script = load("benchmark_parallel")
    run_dir = str(tmp_path / "bp")
    script.main(
        [
            "--linear-cells", "lru", "mlstm",
            "--newton-cells", "elman",
            "--methods", "quasi-deer",
            "--lengths", "16",
            "--batch-size", "2",
            "--reps", "1",
            "--train-steps", "2",
            "--train-length", "5",
            "--run-dir", run_dir,
            "--no-progress",
        ]
    )  # fmt: skip
    with open(os.path.join(run_dir, "timings.json")) as f:
        records = json.load(f)
    assert {r["cell"] for r in records} == {"lru", "mlstm", "elman"}
    with open(os.path.join(run_dir, "summary.md")) as f:
        summary = f.read()
    assert "## Forward + backward (B = 2)" in summary and "sequential / this" in summary
