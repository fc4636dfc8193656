# Set-up and everyday commands. `make run` and `make test` each install what they
# need on a fresh machine (virtual environment, torch, the project, generated protos).
PYTHON ?= python3.11
VENV ?= .venv
# ONNX Runtime build: cpu (onnxruntime) or gpu (onnxruntime-gpu); never both.
EXTRA ?= cpu
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/tattoo_search/v1/*.proto)
GENERATED := tattoo_search/.generated

.PHONY: install protos run lint test test-fast bench clean

install: $(VENV)/.installed protos

# torch and torchvision go in first and pinned: pip then takes the builds on this
# machine's disk instead of resolving a multi-GB download for whatever asks for torch.
# Then every service's extra: a checkout runs (and tests) all three; each image takes one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q grpcio-tools
	$(MAKE) --no-print-directory protos
	$(PY) -m pip install -q -e ".[embed,scraper,gateway,$(EXTRA),dev]"
	touch $@

protos: $(GENERATED)

# The folder layout under protos/ is the Python import path (tattoo_search.v1.*),
# so the generated code needs no import rewriting. Generated, never committed.
$(GENERATED): $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $@

run: install
	./scripts/run-local.sh

# Lint and type checks (configured in pyproject.toml), run before every test run.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy embed_server scraper_service search_gateway service_common bulk_importer

# The browser tests drive Debian's chromium, installed here when missing (never a
# browser download by a test tool); WEB_TESTS=skip skips them where it cannot be.
test: install lint
	./scripts/install-browser.sh || [ "$$WEB_TESTS" = skip ]
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The suite less the tests marked slow (restarts, browsers, fuzzing, kill -9, ONNX
# exports, race loops, container images): for the edit-test loop. CI runs `make test`.
# One pytest process per core and one more (the tests wait on sockets and subprocesses part of
# the time: on 2 cores, 3 processes took 203 s, 2 took 235 s); a file stays in one process, so
# its module-scoped servers start once. TEST_WORKERS=1 for one process.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test-fast: install lint
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.embed_throughput

clean:
	rm -rf $(VENV) tattoo_search .pytest_cache
