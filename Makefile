# Two commands for a fresh clone with nothing but Python 3.11+:
#   make study   sets up .venv and runs the vanishing-gradient study (quick preset)
#   make test    sets up .venv and runs the test suite
#   make apps    sets up .venv and runs the applications on real data (quick presets)
# and `make reproduce` runs the quick reproductions of papers (docs/reproductions.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: study test test-all test-slow bench apps reproduce notebooks clean docs lint wheel-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

study: $(VENV)/.installed
	$(PY) -m rnnjax.study --preset quick

# What CI (.ci/run) runs: `make lint` and `make docs` (about a minute), then the suite
# without the slow end-to-end runs (about 7 minutes on 2 cores) ...
test: lint docs
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" --durations=15 tests

# ... and with them: every notebook executed, every experiment's tiny run, the learning checks.
test-all: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal --durations=15 tests

# Only what `make test` leaves out (CI runs it after `make test`): the tests marked slow,
# among them the check that `make reproduce` gives the docs' verdicts (11 minutes alone on
# 2 cores, 38 beside another job).
test-slow: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal -m slow --durations=25 tests

bench: $(VENV)/.installed
	$(PY) -m experiments.benchmark

# The applications on real data (quick presets, about two minutes each on a 2-core CPU).
apps: $(VENV)/.installed
	$(PY) -m experiments.forecasting
	$(PY) -m experiments.classification
	$(PY) -m experiments.anomaly_detection
	$(PY) -m experiments.char_lm
	$(PY) -m experiments.handwriting_ctc
	$(PY) -m experiments.captioning
	$(PY) -m experiments.sentiment
	$(PY) -m experiments.translation

# Every paper reproduction's quick preset, then one table: paper | claim | ours | reproduced?
reproduce: $(VENV)/.installed
	$(PY) -m experiments.reproduce.run_all

clean:
	rm -rf $(VENV) runs docs/_build build dist

# Execute every notebook at full size and store it, outputs included, beside its text form.
notebooks: $(VENV)/.installed
	cd notebooks && for nb in [0-9]*.py; do ../$(PY) -m jupytext --to ipynb --execute "$$nb" || exit 1; done

# The documentation site in docs/_build/html, strict: a warning (a broken cross-reference, a
# malformed docstring) fails the build, and so does a public name without an entry.
# Notebooks are shown with their stored outputs, not executed.
docs: $(VENV)/.installed
	$(PY) -m sphinx -b html -n -W --keep-going -q docs docs/_build/html
	$(PY) docs/check_api_entries.py docs/_build/html
	$(PY) docs/check_offline.py docs/_build/html

# Lint, format check and types (configured in pyproject.toml); .pre-commit-config.yaml runs
# the same commands.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/basedpyright

# Build the wheel and sdist, install the wheel into a fresh venv, import rnnjax and run the
# README's first example there.
wheel-check: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider tests/test_packaging.py
