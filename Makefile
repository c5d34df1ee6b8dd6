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

PROXY_PORT ?= 4000

proxy: .venv/.synced ## run the LiteLLM proxy on :4000 without Docker (reads litellm/.env)
	$(MVGEN) proxy --env-file litellm/.env --port $(PROXY_PORT)

.PHONY: proxy

# Deploy and smoke-test (docs/deploy.md). GPU picks the app; MODEL narrows it (legacy
# mode: picks the model x GPU app); a wrong or missing name lists the valid choices.
GPU ?=
MODEL ?=
URL ?=
APP_ARGS = $(if $(GPU),--gpu $(GPU)) $(if $(MODEL),--model $(MODEL))

deploy: .venv/.synced ## preflight, then deploy GPU=h100 [MODEL=gemma-3-12b]
	$(MVGEN) deploy --config $(CONFIG) $(APP_ARGS)

deploy-all: .venv/.synced ## preflight, deploy every app, summary table
	$(MVGEN) deploy --all --config $(CONFIG)

url: .venv/.synced ## endpoint URL of GPU=h100 [MODEL=...]
	$(MVGEN) url --config $(CONFIG) $(APP_ARGS)

logs: .venv/.synced ## recent logs of GPU=h100 [MODEL=...] [FOLLOW=1]
	$(MVGEN) logs --config $(CONFIG) $(APP_ARGS) $(if $(FOLLOW),--follow)

stop: .venv/.synced ## stop the app of GPU=h100 [MODEL=...]
	$(MVGEN) stop --config $(CONFIG) $(APP_ARGS)

test: .venv/.synced ## smoke-test GPU=h100 [MODEL=...] [URL=...]; key from VLLM_API_KEY
	$(MVGEN) test --config $(CONFIG) $(APP_ARGS) $(if $(URL),--url $(URL))

test-all: .venv/.synced ## smoke-test every app; key from VLLM_API_KEY
	$(MVGEN) test --all --config $(CONFIG)

.PHONY: deploy deploy-all url logs stop test test-all

BENCH_ARGS ?=

bench: .venv/.synced ## benchmarks (tables, ~10 min; needs h2load): generator, gateway vs direct vs LiteLLM
	$(UV) run --locked python benchmarks/bench_generator.py
	$(UV) run --locked python benchmarks/bench_gateway.py $(BENCH_ARGS)

.PHONY: bench
