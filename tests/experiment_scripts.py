"""Loading the scripts of ``experiments/`` as modules, and reading the run directories they write."""

import importlib
import json
import os


def load(name):
    """Returns the module ``experiments.<name>``."""
    return importlib.import_module(f"experiments.{name}")


def read_run(run_dir):
    """Returns ``(config, results, summary)``: a run directory's config.json, results.json and summary.md."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "summary.md")) as f:
        summary = f.read()
    return config, results, summary
