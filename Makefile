# Student outcome prediction service. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := .venv/bin/python
# The console scripts of pyproject.toml's [project.scripts], one per process.
BIN := .venv/bin
SEED ?= 42
PASS_MARK ?= $(or $(STUDENTPERF_PASS_MARK),50)
export STUDENTPERF_PASS_MARK := $(PASS_MARK)

.PHONY: help setup lock up demo train retrain rollback monitor import retention replay-dead-letters erase migrate test test-unit lint format proto check-proto check-buf clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install what is missing: PostgreSQL, .venv, Kafka jars, grpcurl/ghz (idempotent)
	@bash infra/setup.sh

lock: setup ## re-resolve requirements/*.lock (hashed) from pyproject.toml's ranges (the next target installs them)
	@bash requirements/lock.sh

# 1: one broker; 3: a three-node cluster, replication factor 3 (three JVMs, heavier).
KAFKA_BROKERS ?= $(or $(STUDENTPERF_KAFKA_BROKERS),1)

up: setup ## run Kafka, PostgreSQL, the inference service and the recorder (KAFKA_BROKERS=1|3)
	@STUDENTPERF_KAFKA_BROKERS=$(KAFKA_BROKERS) $(PY) -m infra.up

demo: setup ## send predictions and a batch to the running stack, then show the recorded rows
	@$(PY) -m infra.demo

train: setup ## train from the database, else synthetic (SYNTHETIC=1: synthetic only; ROWS, SEED, PASS_MARK; CSV=path; FORCE=1)
	@$(BIN)/studentperf-train $(if $(ROWS),--rows $(ROWS)) --seed $(SEED) --pass-mark $(PASS_MARK) $(if $(CSV),--csv $(CSV)) $(if $(SYNTHETIC),--synthetic) $(if $(FORCE),--force)

retrain: setup ## train on the database's recorded outcomes only (never synthetic), gate, promote (FORCE=1)
	@$(BIN)/studentperf-train --database-only --seed $(SEED) --pass-mark $(PASS_MARK) $(if $(FORCE),--force)

rollback: setup ## serve an earlier version again: VERSION=v, or the one the current replaced; hashes checked first
	@$(BIN)/studentperf-rollback $(if $(VERSION),"$(VERSION)")

monitor: setup ## drift + live quality report, HTML in .local/reports (SINCE=7d|LAST=n; RETRAIN=1; JSON=path; PROM=path); exit 1 on alert
	@$(BIN)/studentperf-monitor $(if $(SINCE),--since $(SINCE)) $(if $(LAST),--last $(LAST)) $(if $(RETRAIN),--retrain-on-alert) $(if $(JSON),--json $(JSON)) $(if $(PROM),--prometheus-textfile $(PROM))

import: setup ## import a Kaggle exam CSV through Kafka, wait for the recorder: make import CSV=path [TERM_ID=2026-spring] [WAIT=0]
	@test -n "$(CSV)" || { echo "usage: make import CSV=path/to/file.csv [TERM_ID=2026-spring] [WAIT=0]"; exit 2; }
	@$(BIN)/studentperf-import $(CSV) $(if $(TERM_ID),--term $(TERM_ID)) $(if $(filter 0,$(WAIT)),--no-wait)

retention: setup ## once: remove predictions older than STUDENTPERF_RETENTION_DAYS (or DAYS=n), print counts per table
	@$(BIN)/studentperf-retention $(if $(DAYS),--days $(DAYS))

replay-dead-letters: setup ## after a fix: the dead letters' originals back to the topic (REASONS="future-event ..."; DRY_RUN=1); exit 1 if some are gone
	@$(PY) -m recorder_service.replay_dead_letters $(foreach r,$(REASONS),--reason $(r)) $(if $(filter 1,$(DRY_RUN)),--dry-run)

# The service where make up runs it (STUDENTPERF_LISTEN_ADDRESS, as make demo finds it), unless
# TARGET or STUDENTPERF_TARGET names another.
ERASE_TARGET = $(or $(TARGET),$(if $(STUDENTPERF_TARGET),,$(STUDENTPERF_LISTEN_ADDRESS)))

erase: setup ## erase a student through the running service: make erase STUDENT=id [REASON=ref] [TARGET=host:port]
	@test -n "$(STUDENT)" || { echo "usage: make erase STUDENT=id [REASON=ticket-1] [TARGET=host:port] (token: STUDENTPERF_TOKEN)"; exit 2; }
	@$(BIN)/studentperf-erase "$(STUDENT)" $(if $(REASON),--reason "$(REASON)") $(if $(ERASE_TARGET),--target $(ERASE_TARGET))

migrate: setup ## apply the SQL migrations as the owner (STUDENTPERF_DATABASE_URL); sets role passwords given
	@$(BIN)/studentperf-migrate

# Temporary folders under .local/: pytest prunes /tmp/pytest-of-$$USER to its last three runs,
# which pulls the data folders from under another checkout's running test session.
PYTEST := $(PY) -m pytest --basetemp=.local/pytest-tmp

test: setup k8s-check ## run every test: unit, and integration against a real Kafka and PostgreSQL
	@$(PYTEST)

test-unit: setup ## run the fast tests only (no services)
	@$(PYTEST) tests/unit

.PHONY: k8s-check
k8s-check: ## render deploy/ with kustomize and validate it against the Kubernetes schemas, offline
	@bash deploy/check.sh

.PHONY: bench
bench: setup ## benchmark tables: recorder, a flood of maximum-size requests, serving vs. a trivial server, student history, erasure (BENCH_QUICK=1: smoke run; REPEATS=N: runs of each serving case, 3 by default)
	@$(PY) -m infra.bench
	@$(PY) -m infra.bench.serving $(if $(REPEATS),--repeats $(REPEATS))
	@$(PY) -m infra.bench.history
	@$(PY) -m infra.bench.erasure

lint: setup check-proto check-buf check-alerts ## ruff, ruff format --check, mypy --strict; buf lint and breaking on proto/; promtool on the alert rules
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy .

PROMTOOL := .local/bin/promtool

.PHONY: check-alerts
check-alerts: setup ## promtool: check the Prometheus alert rules and run their unit tests
	@$(PROMTOOL) check rules infra/prometheus/alerts.yml
	@$(PROMTOOL) test rules infra/prometheus/alerts_test.yml

format: setup ## apply ruff's fixes and formatting
	@$(PY) -m ruff check --fix .
	@$(PY) -m ruff format .

proto: setup ## regenerate studentperf/v1 from proto/
	@PYTHON=$(PY) proto/generate.sh

check-buf: setup ## buf lint, and buf breaking against the last released contract (proto/buf.yaml)
	@PYTHON=$(PY) proto/buf.sh

check-proto: setup ## fail when studentperf/v1 is stale against proto/
	@tmp=$$(mktemp -d) && PYTHON=$(PY) proto/generate.sh "$$tmp" && \
	  diff -r -q "$$tmp/studentperf/v1" studentperf/v1 -x __pycache__ && rm -rf "$$tmp" || \
	  { echo "studentperf/v1 is stale: run make proto"; exit 1; }

# What the dev stack writes (make up, python -m infra.devstack): the broker's and the database's
# data, and the inference service's spool. Tools (.venv, .local/kafka/libs, .local/bin) and
# make train's models/ stay. A running broker or database names its folder on its command line,
# which is how a running stack is recognised (pgrep never matches itself).
STATE_DIRS := .local/kafka/state .local/kafka/cluster .local/postgres .local/inference

clean: ## remove the dev stack's data (Kafka, PostgreSQL, spool); refused while it runs; tools stay
	@running=$$(for dir in $(STATE_DIRS); do pgrep -f -- "$(CURDIR)/$$dir"; done | sort -u); \
	if [ -n "$$running" ]; then \
	  echo "make clean: refused, the dev stack is running on this data (pid $$(echo $$running)):" \
	    "stop it first (Ctrl-C where make up runs)" >&2; \
	  exit 1; \
	fi; \
	removed=0; \
	for dir in $(STATE_DIRS); do \
	  if [ -e "$$dir" ]; then \
	    size=$$(du -sh -- "$$dir" | cut -f1); \
	    rm -rf -- "$$dir" && echo "removed $$dir ($$size)"; \
	    removed=1; \
	  fi; \
	done; \
	if [ $$removed = 0 ]; then echo "nothing to remove: none of $(STATE_DIRS) exists"; fi
