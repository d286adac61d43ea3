# falco-nats-gateway: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_OUT := gateway/falco_pb/outputs_pb2.py
PYTEST_ARGS ?=

.PHONY: help venv proto demo test lint unit clean

help:
	@echo "make demo    the whole pipeline on this machine: nats-server, gateway, Falco simulator"
	@echo "make test    install everything, generate stubs, lint, run the test suite"
	@echo "make lint    ruff and mypy (strict on hand-written code)"
	@echo "make proto   regenerate gateway/falco_pb/ from proto/"

# The virtualenv with the gateway (editable) and its development tools.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

$(PROTO_OUT): $(STAMP) $(wildcard proto/gateway/falco_pb/*.proto) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py

proto: $(STAMP)
	$(PY) scripts/gen_protos.py

demo: $(PROTO_OUT)
	$(PY) scripts/demo.py

lint: $(PROTO_OUT)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(PROTO_OUT)
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info gateway/falco_pb/*_pb2*.py gateway/falco_pb/*_pb2*.pyi
