# MiniDB developer targets. `make help` lists them.
CARGO ?= cargo
TEST_FEATURES ?=
PYTHON ?= python3
IMAGE ?= ghcr.io/minidb/minidb:0.1.0

.DEFAULT_GOAL := help
.PHONY: help build run test lint check-ops check-api ops-generate bench bench-engine bench-engine-compare bench-http bench-import bench-sessions bench-shell docker clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build the release binary (target/release/minidb)
	$(CARGO) build --release

run: ## Run the server on 127.0.0.1:6866 with data under ./data (the README's run command)
	$(CARGO) run --release

test: ## Run the whole test suite (the README's test command)
	$(CARGO) test $(TEST_FEATURES) -- --test-threads=2

lint: ## cargo fmt --check, clippy -D warnings (with the service, and the engine+store alone)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings
	$(CARGO) clippy --lib --no-default-features -- -D warnings

bench: bench-engine bench-http bench-import bench-sessions bench-shell ## All benchmarks

bench-engine: ## Engine benchmark: MiniDB vs fjall, same workloads, one run
	cd benches/engine && CARGO_TARGET_DIR=$(CURDIR)/target/bench-engine $(CARGO) run --release

bench-engine-compare: ## The engine at BASE=<rev> against the working tree, alternating runs
	benches/engine/compare.sh

bench-import: ## import-minidbgo of generated 100k and 1M-document MiniDBGo directories: peak RSS
	$(CARGO) test $(TEST_FEATURES) --test import_minidbgo_memory -- --ignored --nocapture import_bounded_memory

bench-sessions: ## Session workload (writes with a 10 s lifetime, reads of live ones) beside Redis; SSE latency
	$(CARGO) build --release
	$(PYTHON) benches/sessions/run.py

bench-shell: ## minidb shell embedded: peak RSS of restoreDB, dumpDB and dumpAll of a generated 1M-document database
	$(CARGO) test $(TEST_FEATURES) --test shell -- --ignored --nocapture shell_memory_bench

bench-http: ## HTTP benchmark (wrk): MiniDB routes beside an empty axum handler; docs/BENCH-HTTP.md
	benches/http/run.sh

check-ops: ## Check the operations files: alerts, dashboard, Dockerfile, YAML, k8s, compose, drift
	promtool check rules alerts/minidb.rules.yml
	promtool test rules alerts/minidb.rules.test.yml
	$(PYTHON) tests/ops/check_alerts.py
	$(PYTHON) tests/ops/check_dashboard.py
	hadolint Dockerfile
	yamllint --strict alerts/ k8s/ deploy/ docker-compose.yml .yamllint
	$(PYTHON) tests/ops/gen_prometheusrule.py --check
	$(PYTHON) tests/ops/check_k8s.py
	$(PYTHON) -m unittest discover -s tests/ops -p 'test_*.py'
	$(PYTHON) tests/ops/check_compose.py

check-api: ## Live server (test build): schemathesis, /metrics via promtool + dashboard, SIGTERM exit 0
	$(CARGO) test $(TEST_FEATURES) --no-run
	$(PYTHON) tests/ops/check_api.py

ops-generate: ## Regenerate k8s/ files derived from alerts/, dashboards/ and config/minidb.toml
	$(PYTHON) tests/ops/gen_prometheusrule.py

docker: ## Build the container image (IMAGE=ghcr.io/minidb/minidb:0.1.0; needs a Docker engine)
	@if docker info >/dev/null 2>&1; then \
		echo "docker build -t $(IMAGE) ."; \
		docker build -t $(IMAGE) . ; \
	else \
		echo "no Docker engine here; Dockerfile is linted by make check-ops"; \
	fi

clean: ## Remove build output
	$(CARGO) clean
