# Quick start: `make demo` (set up + run the demo), `make test` (set up + lint + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	# --no-compile: modules are byte-compiled when first imported, not all of torch up front (README, "The demo")
	$(VENV)/bin/pip install --quiet --no-compile --disable-pip-version-check -r requirements.txt
	touch $@

demo: setup
	$(PY) demo.py

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q
