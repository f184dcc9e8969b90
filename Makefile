# Student outcome prediction service. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := .venv/bin/python
ROWS ?= 5000
SEED ?= 42
PASS_MARK ?= $(or $(STUDENTPERF_PASS_MARK),50)
export STUDENTPERF_PASS_MARK := $(PASS_MARK)

.PHONY: help setup up demo train migrate test test-unit lint format proto check-proto clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install what is missing: PostgreSQL, .venv, Kafka jars, grpcurl/ghz (idempotent)
	@bash infra/setup.sh

up: setup ## run Kafka, PostgreSQL, the inference service and the recorder; Ctrl-C stops all
	@$(PY) -m infra.up

demo: setup ## send predictions and a batch to the running stack, then show the recorded rows
	@$(PY) -m infra.demo

train: setup ## train a model (ROWS, SEED, PASS_MARK; CSV=path to train on a CSV) into models/
	@$(PY) -m trainer --rows $(ROWS) --seed $(SEED) --pass-mark $(PASS_MARK) $(if $(CSV),--csv $(CSV))

migrate: setup ## apply the SQL migrations to the database of STUDENTPERF_DATABASE_URL
	@$(PY) -m studentperf.migrate

test: setup ## run every test: unit, and integration against a real Kafka and PostgreSQL
	@$(PY) -m pytest

test-unit: setup ## run the fast tests only (no services)
	@$(PY) -m pytest tests/unit

.PHONY: bench
bench: setup ## throughput figures as one table (own Kafka and PostgreSQL; BENCH_QUICK=1 smoke run)
	@$(PY) -m infra.bench

lint: setup check-proto ## ruff, ruff format --check, mypy --strict
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy .

format: setup ## apply ruff's fixes and formatting
	@$(PY) -m ruff check --fix .
	@$(PY) -m ruff format .

proto: setup ## regenerate studentperf/v1 from proto/
	@PYTHON=$(PY) proto/generate.sh

check-proto: setup ## fail when studentperf/v1 is stale against proto/
	@tmp=$$(mktemp -d) && PYTHON=$(PY) proto/generate.sh "$$tmp" && \
	  diff -r -q "$$tmp/studentperf/v1" studentperf/v1 -x __pycache__ && rm -rf "$$tmp" || \
	  { echo "studentperf/v1 is stale: run make proto"; exit 1; }

clean: ## remove the local services' data (.local/run); installed tools stay
	rm -rf .local/run
