# Two commands for a fresh clone with nothing but Python 3.11+:
#   make study   sets up .venv and runs the vanishing-gradient study (quick preset)
#   make test    sets up .venv and runs the test suite
#   make apps    sets up .venv and runs the applications on real data (quick presets)
# and `make reproduce` runs the quick reproductions of papers (docs/reproductions.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: study test test-all bench apps reproduce notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

study: $(VENV)/.installed
	$(PY) experiments/vanishing_gradients.py --preset quick

# The suite without the slow end-to-end runs (about 7 minutes on 2 cores) ...
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" --durations=15 tests

# ... and with them: every notebook executed, every experiment's tiny run, the learning checks.
test-all: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal --durations=15 tests

bench: $(VENV)/.installed
	$(PY) experiments/benchmark.py

# The applications on real data (quick presets, about two minutes each on a 2-core CPU).
apps: $(VENV)/.installed
	$(PY) experiments/forecasting.py
	$(PY) experiments/classification.py
	$(PY) experiments/anomaly_detection.py
	$(PY) experiments/char_lm.py
	$(PY) experiments/handwriting_ctc.py

# Every paper reproduction's quick preset, then one table: paper | claim | ours | reproduced?
reproduce: $(VENV)/.installed
	$(PY) experiments/reproduce/run_all.py

clean:
	rm -rf $(VENV) runs

# Execute every notebook at full size and store it, outputs included, beside its text form.
notebooks: $(VENV)/.installed
	cd notebooks && for nb in [0-9]*.py; do ../$(PY) -m jupytext --to ipynb --execute "$$nb" || exit 1; done
