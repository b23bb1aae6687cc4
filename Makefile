# Developer and CI entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS := scripts/tools.sh
NEXTEST := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo yes)
# How long `make chaos` injects faults, in seconds. Exported by that target only: `wallet`
# reads every WALLET_* variable as configuration.
CHAOS_SECONDS ?= 180
# Where `make run` listens, for the addresses it prints.
LISTEN := $(or $(WALLET_HTTP__LISTEN),127.0.0.1:8080)

.PHONY: help tools up down run migrate test fuzz chaos lint fmt bench bench-smoke

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

tools: ## Install PostgreSQL, Redis, docker-compose, Java and Maven when missing; collect Kafka's jars and the API fuzzer (once per machine)
	@$(TOOLS) services
	@$(TOOLS) java
	@$(TOOLS) kafka >/dev/null
	@$(TOOLS) fuzzer >/dev/null

up: ## Start PostgreSQL, Redis and Apache Kafka locally, reusing any already running
	@scripts/stack.sh up

down: ## Stop what `make up` started
	@scripts/stack.sh down

migrate: up ## Create the database schema and the topics
	cargo run --quiet -- migrate

run: migrate ## Local stack + migrate + `wallet run`; prints the Swagger UI address and a development token
	@cargo build --quiet
	@token="$$(target/debug/wallet token create --tenant dev --scopes read,write --name make-run 2>/dev/null)"; \
	echo "API:     http://$(LISTEN)/api/v1"; \
	echo "Swagger: http://$(LISTEN)/swagger   (Ctrl-C stops it)"; \
	echo "Token:   $$token"; \
	echo "         export TOKEN=$$token   # for the README's curl examples"
	target/debug/wallet run

lint: ## Formatting and clippy checks
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

test: tools lint ## Lint and run every test against throwaway servers
	export PG_BIN_DIR="$$($(TOOLS) pg-bin)"; \
	if [ -n "$(NEXTEST)" ]; then cargo nextest run --no-fail-fast; else cargo test --no-fail-fast; fi

fuzz: tools ## Only the API fuzzer (schemathesis) against a throwaway server (part of `make test`)
	export PG_BIN_DIR="$$($(TOOLS) pg-bin)"; \
	cargo test --test integration -- --exact fuzz::generated_requests_get_only_documented_answers

chaos: tools ## The chaos test (ignored by `make test`): faults under load for CHAOS_SECONDS (180)
	export PG_BIN_DIR="$$($(TOOLS) pg-bin)" CHAOS_SECONDS="$(CHAOS_SECONDS)"; \
	if [ -n "$(NEXTEST)" ]; then cargo nextest run --no-capture --run-ignored only -E 'test(chaos::bank)'; \
	else cargo test --test integration -- --ignored --exact chaos::bank --nocapture; fi

# The benchmarks start Kafka with a production-like heap and GC (unless one already runs).
bench bench-smoke: export KAFKA_PROFILE := bench

bench: migrate ## The three standard load scenarios against the local stack, as one table
	scripts/bench.sh standard

bench-smoke: migrate ## A short load run: one hot wallet, then 1,000 wallets (release build)
	scripts/bench.sh smoke
