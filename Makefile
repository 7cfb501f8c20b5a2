# Everything a fresh machine needs is installed from here: `make demo` runs the proxy,
# `make test` runs lint, type checks and the test suite (what .ci/run calls).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: mutation setup setup-run demo serve test docs lint typecheck pytest bench bench-profile bench-tools bench-express bench-portkey clean config-docs vercel-tools sdk-node redis-server prometheus-server setup-browser lambda-tools check-deploy build-StreamFunction build-ApiFunction

# Two installs into one venv, each with its own stamp: `setup-run` is what the proxy and the
# demo need (the package and its `speed` extra); `setup` is everything the tests, type checks
# and benchmarks need (the `dev` extra, which includes `speed`, so it satisfies both).
setup: $(VENV)/.installed
setup-run: $(VENV)/.installed-run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[speed]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

demo: setup-run
	$(BIN)/llm-proxy demo

serve: setup-run
	$(BIN)/llm-proxy serve

lint: setup
	$(BIN)/ruff check core handlers tests bench
	$(BIN)/ruff format --check core handlers tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python tools/lint_secrets.py core handlers

typecheck: setup
	$(BIN)/mypy

# The configuration reference, generated from the settings declarations (a test fails when
# the page is stale).
config-docs: setup
	$(BIN)/python -m core.settings_reference > docs/configuration.md

pytest: setup vercel-tools sdk-node redis-server prometheus-server setup-browser lambda-tools
	$(BIN)/pytest

# The Vercel CLI, pinned in tools/vercel, for the offline `vercel build` in tests/handlers.
# Also needs python3.12 on PATH (Vercel's Python runtime version).
vercel-tools: tools/vercel/node_modules/.installed

tools/vercel/node_modules/.installed: tools/vercel/package.json tools/vercel/package-lock.json
	npm install --prefix tools/vercel --no-audit --no-fund --loglevel=error
	touch $@

# The Node SDKs of tests/sdk (openai, @anthropic-ai/sdk, the Vercel AI SDK), from the lock file.
sdk-node: tools/sdk-node/node_modules/.installed

tools/sdk-node/node_modules/.installed: tools/sdk-node/package.json tools/sdk-node/package-lock.json
	npm ci --prefix tools/sdk-node --no-audit --no-fund --loglevel=error
	touch $@

# Debian's redis-server for the Redis token-store tests (they start their own on loopback).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# Debian's chromium for tests/browser (Playwright drives it; it never downloads a browser).
# Debian's Prometheus server: tests/telemetry scrapes the proxy with it and reads the counters
# back through its HTTP query API.
prometheus-server:
	@command -v prometheus >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }

setup-browser:
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# AWS Lambda: osls (the open-source Serverless Framework) for the offline `package` of
# serverless.yml, and AWS's Runtime Interface Emulator, taken from the aws-sam-cli wheel.
lambda-tools: setup tools/lambda/node_modules/.installed
	$(BIN)/python tools/lambda/fetch_rie.py >/dev/null

tools/lambda/node_modules/.installed: tools/lambda/package.json tools/lambda/package-lock.json
	npm ci --prefix tools/lambda --no-audit --no-fund --loglevel=error
	touch $@

# serverless.yml packaged and its CloudFormation linted; template.yaml through the SAM
# transform and cfn-lint; the packaged zip run on a bare Python (tests/handlers/aws).
check-deploy: lambda-tools
	$(BIN)/pytest -q tests/handlers/aws/test_aws_deploy_files.py

# `sam build` (template.yaml, BuildMethod: makefile) calls these with ARTIFACTS_DIR set.
# Wheels for the function's platform (arm64, CPython 3.12), not the build machine's.
# Bytecode for the runtime's Python (unchecked: /var/task never changes) saves each cold
# start from compiling every module, about 60 ms; it is skipped if that Python is not here.
LAMBDA_PYTHON ?= python3.12
LAMBDA_PLATFORM ?= manylinux2014_aarch64
build-StreamFunction build-ApiFunction:
	$(PYTHON) -m pip install --quiet --no-compile --target "$(ARTIFACTS_DIR)" \
		--platform $(LAMBDA_PLATFORM) --implementation cp --python-version 3.12 --only-binary=:all: \
		-r tools/lambda/requirements.txt
	cp -R core handlers "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +
	if command -v $(LAMBDA_PYTHON) >/dev/null 2>&1; then \
		$(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)"; fi

test: lint typecheck docs pytest

# The manual: mkdocs.yml, pages under docs/; --strict turns a broken link or a page left out
# of the nav into a failure.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Mutation testing of the code that guards money and secrets (docs/mutation.md): hours on a
# 2-core machine, so on demand and not part of `make test`. `make mutation TARGETS=cors`
# runs some targets only (names: `python tools/mutation.py --list`).
mutation: setup
	$(BIN)/python tools/mutation.py $(TARGETS)

# wrk, from Debian's packages, is the load generator of bench/; valgrind counts the
# instructions of bench/bench_instructions.py.
bench-tools:
	@{ command -v wrk && command -v valgrind; } >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk valgrind; }

# The seed recipe's Express proxy, a baseline of bench/bench_streams.py, from its lock file.
bench-express: bench/express/node_modules/.installed

bench/express/node_modules/.installed: bench/express/package.json bench/express/package-lock.json
	npm ci --prefix bench/express --no-audit --no-fund --loglevel=error
	touch $@

# Portkey's open-source gateway, a baseline of bench/bench_streams.py, pinned by its lock file.
bench-portkey: bench/portkey/node_modules/.installed

bench/portkey/node_modules/.installed: bench/portkey/package.json bench/portkey/package-lock.json
	npm ci --prefix bench/portkey --no-audit --no-fund --loglevel=error
	touch $@

bench: setup bench-tools bench-express bench-portkey
	$(BIN)/python -m bench

# py-spy on the proxy under 500 streams: docs/proxy-streams.svg and the top functions.
bench-profile: setup
	$(BIN)/python -m bench streams --profile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tools/vercel/node_modules tools/sdk-node/node_modules tools/lambda/node_modules bench/express/node_modules
