# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ccdask-installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,hpc]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ccdask demo

test: lint
	$(PY) -m pytest -q

# ruff (lint and format) over the code, mypy strict over night/, calibrate/, combine/, cache/
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/gen_config_reference.py
	$(VENV)/bin/ruff format --check src tests benchmarks docs/gen_config_reference.py
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)
