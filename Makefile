# MiniDB developer targets. `make help` lists them.
CARGO ?= cargo
TEST_FEATURES ?= --features failpoints

.DEFAULT_GOAL := help
.PHONY: help build run test lint check-ops bench bench-engine bench-http docker clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build the release binary (target/release/minidb)
	$(CARGO) build --release

run: ## Run the server on 127.0.0.1:6866 with data under ./data (the README's run command)
	$(CARGO) run --release

test: ## Run the whole test suite (the README's test command)
	$(CARGO) test $(TEST_FEATURES) -- --test-threads=2

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings

bench: bench-engine ## All benchmarks

bench-engine: ## Engine benchmark: MiniDB vs fjall, same workloads, one run
	cd benches/engine && $(CARGO) run --release

clean: ## Remove build output
	$(CARGO) clean
