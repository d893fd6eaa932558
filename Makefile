# The two commands that matter: `make up` runs the system, `make test` proves it.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium
PROMTOOL := /usr/bin/promtool

.PHONY: install up down status test test-long lint bench clean

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The venv is rebuilt only when the lock file changes. Bytecode is compiled at install: where
# PYTHONDONTWRITEBYTECODE is set (as in many containers) Python would otherwise compile torch's,
# transformers' and Ray's sources again in every process it starts, ~10 s of CPU for each API
# replica and consumer.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	$(UV) sync --frozen --compile-bytecode
	touch $@

# Kafka's broker jars from Maven Central; a no-op once a complete copy is there.
install: $(VENV)/.synced
	@$(BIN)/python -c "from deploy import ensure_kafka_jars; ensure_kafka_jars()"

up: install
	$(BIN)/ragstream up

down:
	@if [ -x $(BIN)/ragstream ]; then $(BIN)/ragstream down; else echo "nothing installed, nothing running"; fi

status: install
	$(BIN)/ragstream status

# Debian's Chromium, which the status page's browser test drives headless.
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make test needs Chromium at $@: install Debian's chromium package (sudo apt-get install chromium)" >&2; \
		exit 1; \
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

# Debian's Prometheus: promtool tests the alert rules and the dashboard's queries, and the scrape
# test runs the server against a live stack.
$(PROMTOOL):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make test needs promtool at $@: install Debian's prometheus package (sudo apt-get install prometheus)" >&2; \
		exit 1; \
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus

test: install $(CHROMIUM) $(PROMTOOL)
	$(BIN)/pytest $(PYTEST_FLAGS)

# The bigger fault, churn and stage scenarios (100k Chroma operations, 12k events with 12 kills...).
test-long: install $(CHROMIUM) $(PROMTOOL)
	$(BIN)/pytest --long

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/ingest.py

clean: down
	rm -rf .state
