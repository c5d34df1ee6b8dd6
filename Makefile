# mvgen: `make render` and `make check` are all a fresh machine needs (python3 + make).
# Each target sets up the environment it needs: uv (through pip when missing), then
# `uv sync` from the lock file.

SHELL := /bin/bash
PYTHON ?= python3
CONFIG ?= deployments.yaml
BOOTSTRAP := .cache/uv-bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP)/bin/uv)
MVGEN := $(UV) run --locked mvgen

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BOOTSTRAP)/bin/uv:
	@echo "uv not found: installing it into $(BOOTSTRAP) with pip"
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet uv==0.13.9

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@touch $@

env: .venv/.synced ## set up .venv from uv.lock

render: .venv/.synced ## render generated/ and litellm/ from deployments.yaml
	$(MVGEN) render --config $(CONFIG)

validate: .venv/.synced ## check deployments.yaml
	$(MVGEN) validate --config $(CONFIG)

list: .venv/.synced ## show apps, GPUs, models and endpoint URLs
	$(MVGEN) list --config $(CONFIG)

lint: .venv/.synced ## ruff on the project and on the generated apps
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

check: .venv/.synced lint ## the whole test suite; fails when generated files are stale
	$(MVGEN) render --check --config $(CONFIG)
	$(UV) run --locked pytest

.PHONY: help env render validate list lint check plan

plan: .venv/.synced ## fit, cost, endpoints and what `make render` would change
	$(MVGEN) plan --config $(CONFIG)
