# Spymaster: `make demo` backfills the asset graph session by session on synthetic data (one Dagster run each); `make test` runs the tests.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# LightGBM/FAISS OpenMP threads spin-wait and run 5x slower on 2 cores unless passive.
export OMP_WAIT_POLICY := passive
export POLARS_MAX_THREADS ?= 2
DEV_PORT ?= 3070
MLFLOW_PORT ?= 5070
HOME_DIR := $(or $(SPYMASTER_HOME),$(CURDIR)/.spymaster)

.PHONY: setup demo test bench dev mlflow clean vendor stack-up stack-backfill stack-down bench-scale

# The scale-out stack (deploy/README.md): Postgres, Redis, an S3 server, Celery workers, the daemon and
# the UI on 127.0.0.1 (ports 55432, 56379, 59000, 3800), pids and logs under STACK_DIR.
STACK_DIR ?= $(CURDIR)/.spymaster-stack
STACK_WORKERS ?= 2
STACK_LAKE ?= s3
STACK_START ?= 2024-12-05
STACK_SESSIONS ?= 4

# setup also prepares the dbt manifest once (definitions read it at import; nothing re-parses it per load),
# and compiles our own package's bytecode: `uv sync --compile-bytecode` compiles site-packages only, and
# with PYTHONDONTWRITEBYTECODE set every process (run worker, CLI) would compile it again (~0.4 CPU-s).
setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --compile-bytecode
	$(UV) run dagster-dbt project prepare-and-package --file spymaster_assets/dbt_project.py
	$(UV) run python -m compileall -q spymaster_assets

demo: setup
	$(UV) run spymaster demo

test: setup
	$(UV) run pytest -n 2

bench: setup
	$(UV) run python -m spymaster_assets_bench.bronze
	$(UV) run python -m spymaster_assets_bench.silver
	$(UV) run python -m spymaster_assets_bench.retrieval
	$(UV) run python -m spymaster_assets_bench.model
	$(UV) run python -m spymaster_assets_bench.streams  # reads the demo's lake: run `make demo` first
	$(UV) run python -m spymaster_assets_bench.daily
	$(UV) run python -m spymaster_assets_bench.query
	$(UV) run python -m spymaster_assets_bench.live_server

mlflow: setup
	$(UV) run mlflow ui --backend-store-uri sqlite:///$(HOME_DIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

dev: setup
	mkdir -p $(HOME_DIR)/dagster && cp -n dagster.yaml $(HOME_DIR)/dagster/ || true
	@cmp -s dagster.yaml $(HOME_DIR)/dagster/dagster.yaml || echo "note: $(HOME_DIR)/dagster/dagster.yaml differs from ./dagster.yaml (the instance uses the former; copy the template over it to update)"
	SPYMASTER_HOME=$(HOME_DIR) DAGSTER_HOME=$(HOME_DIR)/dagster $(UV) run dg dev --host 127.0.0.1 --port $(DEV_PORT)

# vendor re-fetches the dashboard's pinned JS (lightweight-charts) from npm into live/static/vendor; the result is committed.
vendor:
	bash scripts/vendor_js.sh

clean:
	rm -rf .spymaster .pytest_cache

stack-up: setup
	$(UV) run python -m spymaster_assets.stack up --dir $(STACK_DIR) --workers $(STACK_WORKERS) --lake $(STACK_LAKE) --webserver

stack-backfill:
	$(UV) run python -m spymaster_assets.stack backfill --dir $(STACK_DIR) --start $(STACK_START) --sessions $(STACK_SESSIONS)

stack-down:
	$(UV) run python -m spymaster_assets.stack down --dir $(STACK_DIR)

# 20 tiny sessions on 1 then 2 workers (starts and stops its own stacks; minutes).
bench-scale: setup
	nice -n 10 $(UV) run python -m spymaster_assets_bench.scale
