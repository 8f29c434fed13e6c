# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_PORT ?= 9000

.PHONY: demo test check lint typecheck format clean bench soak

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

# Benchmarks and the soak run outside `make test`: they take minutes and measure, not check.
bench: $(STAMP)
	$(PY) benchmarks/bench.py

soak: $(STAMP)
	$(PY) benchmarks/soak.py --duration 180 --restart-every 30

format: $(STAMP)
	$(PY) -m ruff format src tests samples benchmarks
	$(PY) -m ruff check --fix src tests samples benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
