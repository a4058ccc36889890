# vsop — the two commands are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK_ENV := .stack/env
# Node.js 24 from the cache comes first on PATH when the machine's node is older (hack/install.sh
# fetches it; hack/lib.sh names the version).
NODE_VERSION := $(shell sed -n 's/^NODE_VERSION="\(.*\)"/\1/p' hack/lib.sh)
CACHE_DIR := $(or $(VSOP_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/vsop)
export PATH := $(CACHE_DIR)/node-v$(NODE_VERSION)/bin:$(PATH)
# one file or more, e.g. make test-e2e E2E=test/e2e/stack.test.ts
E2E ?= $(wildcard test/e2e/*.test.ts)
# servers for make bench, e.g. make bench N=200 (make chaos: 20 unless given)
N ?= 50
# leader kills for make chaos, e.g. make chaos N=5 KILLS=8
KILLS ?= 30
# image tag; read from package.json only when used
VERSION = $(shell node -p 'require("./package.json").version')

.PHONY: help install build lint stack-up stack-down node-up node-down test test-unit test-e2e test-scan demo demo-down bench chaos image clean release

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## install what is missing (apt packages, npm modules, Go-built tools)
	@hack/install.sh

build: install ## compile TypeScript to dist/
	@npx tsc -p tsconfig.json

lint: install ## type-check everything, ESLint and Prettier
	@npx tsc -p tsconfig.test.json && npx eslint . && npx prettier --check .

stack-up: ## start the local stack and write .stack/env
	@hack/stack-up.sh

stack-down: ## stop what stack-up started
	@hack/stack-down.sh

node-up: ## start a simulated server: make node-up HOST=web-prod-1.example.test [MANIFEST=web.pp]
	@hack/node-up.sh "$(HOST)" $(MANIFEST)

node-down: ## stop a simulated server: make node-down HOST=web-prod-1.example.test
	@hack/node-down.sh "$(HOST)"

# Four files at a time, on two cores too: many unit tests wait on timers (measured: 55 s one
# file at a time, 26 s two, 19 s four, 19 s eight).
test-unit: build ## unit tests of pure functions (no stack needed)
	@node --import tsx --test --test-reporter=tap --test-concurrency=4 test/unit/*.test.ts

# Files that disturb the shared stack run alone, after the others: puppet-broker-restart.test
# restarts RabbitMQ, security-outage.test stops the API server. The others run E2E_JOBS at a time
# (own namespace, label selector, hostnames and VM names each), the longest first so that the
# lanes end together. Three lanes on two cores: most of a lane's time is spent waiting on real
# timers (installs, backoffs, Puppet runs), and its probes read through one connection
# (test/support/api-get.ts) instead of a kubectl process each.
E2E_SERIAL := test/e2e/puppet-broker-restart.test.ts test/e2e/security-outage.test.ts
E2E_LONGEST := $(addprefix test/e2e/,puppet-runs.test.ts puppetserver.test.ts chaos.test.ts \
  puppet.test.ts rebuild.test.ts vsphere-faults.test.ts plugin.test.ts bad-input.test.ts \
  mcollective.test.ts security.test.ts placement.test.ts install.test.ts installer-iso.test.ts \
  mco-async.test.ts)
E2E_JOBS ?= 3
E2E_RUN = node --import tsx --test --test-timeout=600000 --test-reporter=tap --test-reporter-destination=stdout \
  --test-reporter=./test/support/file-times.mjs --test-reporter-destination=stdout --test-concurrency=
test-e2e: build ## end-to-end tests against the running stack (E2E_JOBS=1: one file at a time)
	@source $(STACK_ENV) && rc=0; \
	files="$(filter $(E2E),$(E2E_LONGEST)) $(filter-out $(E2E_LONGEST) $(E2E_SERIAL),$(E2E))"; \
	alone="$(filter $(E2E_SERIAL),$(E2E))"; \
	if [ -n "$${files// }" ]; then $(E2E_RUN)$(E2E_JOBS) $$files || rc=1; fi; \
	if [ -n "$${alone// }" ]; then $(E2E_RUN)1 $$alone || rc=1; fi; \
	exit $$rc

test-scan: ## scan every log vsop wrote in this stack run for credentials (after test-e2e)
	@source $(STACK_ENV) && node --import tsx --test --test-reporter=tap test/scan/*.test.ts

bench: build ## N servers (N=50) through vsop beside its floor [TASK_DELAY=CreateVm:3000,PowerOn:1000] [SILENT=20] [ROUNDS=3]; SCALE=10000: sync time and RSS with that many [ROUNDS=3]
	@hack/stack-up.sh
	@source $(STACK_ENV) && if [ -n "$(SCALE)" ]; then SCALE=$(SCALE) ROUNDS=$(ROUNDS) npx tsx hack/bench-scale.ts; else N=$(N) TASK_DELAY=$(TASK_DELAY) SILENT=$(SILENT) ROUNDS=$(ROUNDS) npx tsx hack/bench.ts; fi

chaos: build ## N servers (20) through KILLS=30 leader kills and outages; checks VMs, Ready, Puppet runs
	@hack/stack-up.sh
	@source $(STACK_ENV) && N=$(if $(filter file,$(origin N)),20,$(N)) KILLS=$(KILLS) npx tsx hack/chaos.ts

# helm is built in the background meanwhile (VSOP_HELM=later, hack/install.sh): the unit tests,
# whose chart tests need it, run after the end-to-end ones. Exported to every install this target
# runs (stack-up.sh's too), or that one waits for the build.
test: export VSOP_HELM := later
test: ## install, start the stack, lint, run every test, stop the stack (also on failure)
	@hack/install.sh
	@hack/stack-up.sh; rc=$$?; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory lint test-e2e test-unit test-scan; rc=$$?; fi; \
	hack/stack-down.sh; exit $$rc

image: ## build the container image (needs a Docker engine)
	@command -v docker >/dev/null || { echo "make image: the docker command is not installed" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers ('docker info' failed); start one or point DOCKER_HOST at one" >&2; exit 1; }
	docker build -t vsop:$(VERSION) .

release: install ## dist/release/install.yaml (kubectl kustomize deploy/) and the packaged Helm chart deploy/helm/vsop
	@hack/release.sh

# where make plugin puts kubectl-vsop, e.g. make plugin PLUGIN_DIR=/usr/local/bin
PLUGIN_DIR ?= $(HOME)/.local/bin
.PHONY: plugin
plugin: build ## put kubectl-vsop into PLUGIN_DIR (default ~/.local/bin), for `kubectl vsop`
	@mkdir -p "$(PLUGIN_DIR)"
	@printf '#!/bin/sh\n# kubectl vsop, from make plugin in %s\nexec "%s" "%s" "$$@"\n' "$(CURDIR)" \
	  "$$(command -v node)" "$(CURDIR)/dist/cli/kubectl-plugin.js" >"$(PLUGIN_DIR)/kubectl-vsop"
	@chmod +x "$(PLUGIN_DIR)/kubectl-vsop"
	@echo "$(PLUGIN_DIR)/kubectl-vsop written; with $(PLUGIN_DIR) on PATH, kubectl plugin list shows it"

demo: ## the whole workflow on the local stack: a sample VirtualServer reaches Ready
	@hack/demo.sh

demo-down: ## stop what make demo started (operator, simulated server, stack)
	@hack/stack-down.sh

clean: stack-down ## remove build output and the stack's state
	rm -rf dist .stack
