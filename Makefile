# mvgen: `make render` and `make check` are all a fresh machine needs (python3 + make).
# Each target sets up only the environment it needs: uv (through pip when missing), then
# `uv sync` of mvgen's own dependencies plus the group the target needs (pyproject.toml):
# render and deploy nothing more, check the test tools, proxy LiteLLM, bench the profiler.
# Syncs are --inexact, so a later `make render` never removes what `make check` added.

SHELL := /bin/bash
PYTHON ?= python3
CONFIG ?= deployments.yaml
BOOTSTRAP := .cache/uv-bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP)/bin/uv)
SYNC := $(UV) sync --locked --inexact --no-default-groups
BIN := .venv/bin
MVGEN := $(BIN)/mvgen

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BOOTSTRAP)/bin/uv:
	@echo "uv not found: installing it into $(BOOTSTRAP) with pip"
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet uv==0.13.9

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(SYNC)
	@touch $@

.venv/.synced-%: pyproject.toml uv.lock | $(UV)
	$(SYNC) --group $*
	@touch $@

.PRECIOUS: .venv/.synced-%

env: .venv/.synced-dev ## set up .venv from uv.lock with every tool (tests, proxy, profiler)

render: .venv/.synced ## lock new models (Hugging Face Hub), then render generated/ and litellm/
	$(MVGEN) lock --missing --config $(CONFIG)
	$(MVGEN) render --config $(CONFIG)

lock: .venv/.synced ## re-read every model's config.json and sizes from the Hub into the lock file
	$(MVGEN) lock --config $(CONFIG)

validate: .venv/.synced ## check deployments.yaml
	$(MVGEN) validate --config $(CONFIG)

list: .venv/.synced ## show apps, GPUs, models and endpoint URLs
	$(MVGEN) list --config $(CONFIG)

lint: .venv/.synced-test ## ruff on the project and on the generated apps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: .venv/.synced-test lint ## the whole test suite; fails when generated files or the lock are stale
	$(MVGEN) lock --check --config $(CONFIG)
	$(MVGEN) render --check --config $(CONFIG)
	$(BIN)/pytest

.PHONY: help env render lock validate list lint check plan

VLLM ?=

vllm-data: .venv/.synced ## write mvgen/data/vllm/VLLM.json from the vLLM wheel (downloads it once)
	@test -n "$(VLLM)" || { echo "usage: make vllm-data VLLM=0.12.0"; exit 2; }
	$(BIN)/python scripts/vllm_data.py $(VLLM)

image-lock: .venv/.synced ## lock every package both images install (uv pip compile; network)
	$(BIN)/python scripts/lock_images.py --config $(CONFIG) --uv $(UV)

.PHONY: vllm-data image-lock

plan: .venv/.synced ## fit, cost, endpoints and what `make render` would change
	$(MVGEN) plan --config $(CONFIG)

PROXY_PORT ?= 4000

proxy: .venv/.synced-proxy ## run the LiteLLM proxy on :4000 without Docker (reads litellm/.env)
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

SINCE ?=

stats: .venv/.synced ## per-model TTFT, tokens/s, cold starts, errors of GPU=h100 [MODEL=...] [SINCE=1h] [JSON=1]
	$(MVGEN) stats --config $(CONFIG) $(APP_ARGS) $(if $(SINCE),--since $(SINCE)) $(if $(JSON),--json)

stop: .venv/.synced ## stop the app of GPU=h100 [MODEL=...]
	$(MVGEN) stop --config $(CONFIG) $(APP_ARGS)

test: .venv/.synced ## smoke-test GPU=h100 [MODEL=...] [URL=...]; key from VLLM_API_KEY
	$(MVGEN) test --config $(CONFIG) $(APP_ARGS) $(if $(URL),--url $(URL))

test-all: .venv/.synced ## smoke-test every app; key from VLLM_API_KEY
	$(MVGEN) test --all --config $(CONFIG)

FOR ?=
MIN ?=

warm: .venv/.synced ## keep containers of GPU=h100 MODEL=... up for FOR=2h [MIN=1], starting now
	@test -n "$(FOR)" || { echo "usage: make warm GPU=h100 MODEL=gemma-3-27b FOR=2h [MIN=1]"; exit 2; }
	$(MVGEN) warm --config $(CONFIG) $(APP_ARGS) --for $(FOR) $(if $(MIN),--min $(MIN))

.PHONY: deploy deploy-all url logs stats stop test test-all warm

BENCH_ARGS ?=

bench: .venv/.synced-bench ## benchmarks (tables, ~12 min; needs h2load): generator, gateway vs direct vs LiteLLM, Modal streams
	$(BIN)/python benchmarks/bench_generator.py
	$(BIN)/python benchmarks/bench_gateway.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_modal_stream.py $(findstring --quick,$(BENCH_ARGS))

.PHONY: bench
