# Two commands matter: `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

.PHONY: install demo test test-packaging lint format typecheck bench bench-peers bench-scaling docs serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m example_shop.demo

lint: install
	$(VENV)/bin/ruff check dddframe example_shop tests benchmarks
	$(VENV)/bin/ruff format --check dddframe example_shop tests benchmarks
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format dddframe example_shop tests benchmarks
	$(VENV)/bin/ruff check --fix dddframe example_shop tests benchmarks

test: install lint
	$(PY) -m pytest dddframe tests

bench: install
	$(PY) -m benchmarks

# dddframe beside eventsourcing, faststream-outbox, pgqueuer and python-cqrs on PostgreSQL
# (BENCH_PEERS_URL); each peer gets its own virtualenv under .bench-venvs/. ARGS=--quick smokes.
bench-peers: install
	$(PY) -m benchmarks.peers $(ARGS)

# The database bus against subscriptions, outbox size and workers (BENCH_SCALING_URL); draws
# the PNG charts under docs/images/ with matplotlib (the bench extra).
bench-scaling: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.scaling --json docs/images/scaling.json $(ARGS)

# The documentation site (mkdocs-material, strict: a broken link or nav entry fails the build).
docs: install
	$(VENV)/bin/mkdocs build --strict

# The shop's HTTP API on http://127.0.0.1:$(PORT) (`make serve PORT=8001`; OpenAPI at /docs).
# Payments go to DDDFRAME_SHOP_PAYMENT_URL: run `$(PY) -m example_shop.payment_stub` next to it.
# DDDFRAME_SHOP_CONSUME=0 makes it a pure writer next to `dddframe worker` processes.
serve: install
	$(PY) -m uvicorn example_shop.api:app --host 127.0.0.1 --port $(PORT)

# Only the packaging test: build the wheel, install each extra alone in a fresh virtualenv.
test-packaging: install
	$(PY) -m pytest tests/packaging

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
