# Quick start: `make demo` (set up + run the demo), `make test` (set up + lint + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_JOBS ?= 2  # pytest processes; one test file stays in one process (its fixtures are built once)
# --no-compile: modules are byte-compiled when first imported, not all of torch up front (docs/benchmarks.md)
PIP := $(VENV)/bin/pip install --quiet --no-compile --disable-pip-version-check

.PHONY: setup setup-dev demo test lint

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

demo: setup
	$(PY) demo.py

lint: setup-dev
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile
