# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_PORT ?= 9000

.PHONY: demo test check lint typecheck format clean bench soak soak-cluster screenshot

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
	$(VENV)/bin/lint-imports --no-cache

# The dashboard's browser test drives Debian's chromium (Playwright cannot download its own
# browser here); installed once per machine, with sudo unless we are root.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The cluster tests run their own redis-server processes (tests/redis_server.py) from Debian's
# package, never the machine's shared instance on 6379; installed like chromium.
REDIS_SERVER := /usr/bin/redis-server

$(REDIS_SERVER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

# The suite runs twice at once, the second time with AUTOGEN_HTTP_FASTPATH=0 (scripts/test.sh).
test: check $(CHROMIUM) $(REDIS_SERVER)
	scripts/test.sh

# Refresh docs/dashboard.png from the dashboard's browser test.
screenshot: $(STAMP) $(CHROMIUM)
	AUTOGEN_HTTP_DASHBOARD_SCREENSHOT=docs/dashboard.png $(PY) -m pytest -q tests/test_dashboard.py -k live

# Benchmarks and the soak run outside `make test`: they take minutes and measure, not check.
# The cluster's figures (issue 18) run after the rest, on their own throwaway redis-server.
bench: $(STAMP) $(REDIS_SERVER)
	$(PY) benchmarks/bench.py --runs 3
	$(PY) benchmarks/durable.py --runs 3
	$(PY) benchmarks/cluster_bench.py --runs 3

soak: $(STAMP)
	$(PY) benchmarks/soak.py --duration 180 --restart-every 30

# Three hosts of one cluster under load while a host, then Redis, are killed and Redis frozen (issue 18).
soak-cluster: $(STAMP) $(REDIS_SERVER)
	$(PY) benchmarks/cluster_soak.py --cycles 3 --settle 20

format: $(STAMP)
	$(PY) -m ruff format src tests samples benchmarks
	$(PY) -m ruff check --fix src tests samples benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
