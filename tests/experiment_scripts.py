"""Loading the scripts of ``experiments/`` as modules, and reading the run directories they write."""

import importlib.util
import json
import os
import sys

EXPERIMENTS = os.path.join(os.path.dirname(__file__), os.pardir, "experiments")


def load(name):
    """Returns the module ``experiments/<name>.py``, registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up by name
    spec.loader.exec_module(module)
    return module


def read_run(run_dir):
    """Returns ``(config, results, summary)``: a run directory's config.json, results.json and summary.md."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "summary.md")) as f:
        summary = f.read()
    return config, results, summary
