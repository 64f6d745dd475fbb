# The two set-up commands (see README): `make quickstart` and `make test`.
# Each creates .venv and installs the pinned project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test test-fast up down bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

quickstart: install
	RAY_AUTH_MODE=token $(BIN)/sweetspot quickstart

# Every test: those that need no cluster on both cores (the fast lane below), then the cluster tests in
# one process (they share one local Ray cluster). Both parts always run; either failing fails the target.
test: install
	status=0; \
	$(BIN)/python -m pytest -m "not cluster" -n 2 || status=1; \
	RAY_AUTH_MODE=token $(BIN)/python -m pytest -m cluster || status=1; \
	exit $$status

# The tests that need no Ray cluster (spec, models, compression, evaluation, units): the fast lane,
# two pytest workers.
test-fast: install
	$(BIN)/python -m pytest -m "not cluster" -n 2

up: install
	$(BIN)/sweetspot up

down: install
	$(BIN)/sweetspot down

# Every benchmark on the local cluster (< 45 min on 2 cores): bench/results/*.json and docs/benchmarks.md.
# `make bench BENCH_ARGS=--quick` for a smoke run, `BENCH_ARGS="--only sweep,growth"` for a subset.
bench: install
	RAY_AUTH_MODE=token $(BIN)/python -m bench $(BENCH_ARGS)
