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

# Every test: the cluster tests in one process (they share one local Ray cluster), and beside them the
# tests that need no cluster (the fast lane below), scheduled only on CPU time nothing else wants
# (Linux's SCHED_IDLE, by `chrt --idle 0`; `nice -n 19` where chrt is missing or refused). The cluster
# tests leave about a third of 2 cores idle (Ray starting actors, jobs waiting on each other), which the
# fast lane takes instead of running after them, without slowing them down; its output follows theirs.
# Both parts always run; either failing fails the target.
IDLE_PRIORITY := $(shell chrt --idle 0 true >/dev/null 2>&1 && echo chrt --idle 0 || echo nice -n 19)

test: install
	status=0; fast_log=$$(mktemp); \
	$(IDLE_PRIORITY) $(BIN)/python -m pytest -m "not cluster" -n 2 > $$fast_log 2>&1 & fast=$$!; \
	RAY_AUTH_MODE=token $(BIN)/python -m pytest -m cluster || status=1; \
	wait $$fast || status=1; \
	echo "---------------- the tests that need no cluster (run beside the cluster tests) ----------------"; \
	cat $$fast_log; rm -f $$fast_log; \
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
