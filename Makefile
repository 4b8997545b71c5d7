# The README's two commands: `make run` and `make test`. Both build .venv from scratch.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-core lint typecheck bench soak clean

# The suites CI also runs on each other supported Python (.ci/run): the pure unit tests and
# the sandbox's (real jailed processes and the parent-child boundary, no scheduler fleet).
SANDBOX_SUITE := escapes defence_in_depth sandbox_lifecycle policy faulty run_cli frames fetch_guard
CORE_TESTS = tests/unit $(foreach n,$(SANDBOX_SUITE),tests/integration/test_$(n).py) examples

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m runtime demo

# Hermetic: the suite starts a PostgreSQL of its own in a fresh temp directory (unless
# $$PLUGIN_RUNTIME_TEST_DATABASE_URL names one), stops it at the end, and fails if it leaves any
# process running; tests/browser.py finds (or downloads) the Chromium the status-page test drives.
test: $(STAMP)
	$(BIN)/ruff check runtime sandbox bench tests
	$(BIN)/mypy
	$(BIN)/python tests/browser.py
	$(BIN)/python -m pytest

# e.g. make test-core PYTHON=python3.13 VENV=.venv-3.13
test-core: $(STAMP)
	$(BIN)/python -m pytest -q $(CORE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check runtime sandbox bench tests
	$(BIN)/ruff format --check runtime sandbox bench tests
	$(BIN)/mypy

# Every benchmark with --quick (each under a minute), then one table: each figure, its target,
# met or not, the load average when taken (docs/benchmarks.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@if command -v npm >/dev/null 2>&1; then (cd bench/peers && npm ci --silent) || echo "npm ci failed: Graphile Worker will not be measured"; fi
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench all --quick

soak: $(STAMP)
	PLUGIN_RUNTIME_FUZZ_EXAMPLES=3000 $(BIN)/python -m pytest tests/integration/test_boundary_fuzz.py -q -p no:cacheprovider
	$(BIN)/python -m runtime chaos --nodes 3 --configs 200 --duration 600 --time-scale 600 --kill-every 30 --db-outage 20

clean:
	rm -rf $(VENV) .venv-3.* .pgdata
