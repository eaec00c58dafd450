# Two commands for a fresh clone with nothing but Python 3.11+:
#   make study   sets up .venv and runs the vanishing-gradient study (quick preset)
#   make test    sets up .venv and runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: study demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

study: $(VENV)/.installed
	$(PY) experiments/vanishing_gradients.py --preset quick

demo: $(VENV)/.installed
	$(PY) experiments/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --durations=15 tests

bench: $(VENV)/.installed
	$(PY) experiments/benchmark.py

clean:
	rm -rf $(VENV) runs
