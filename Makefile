# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_PORT ?= 9000

.PHONY: demo test check lint typecheck format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) samples/run_demo.py --port $(DEMO_PORT)

check: $(STAMP)
	$(PY) -m ruff format --check src tests samples benchmarks
	$(PY) -m ruff check src tests samples benchmarks
	$(PY) -m mypy

test: check
	$(PY) -m pytest

format: $(STAMP)
	$(PY) -m ruff format src tests samples benchmarks
	$(PY) -m ruff check --fix src tests samples benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
