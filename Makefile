# falco-nats-gateway: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_OUT := gateway/falco_pb/outputs_pb2.py
PYTEST_ARGS ?=

IMAGE ?= falco-nats-gateway
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

BENCH_ARGS ?=
# 3 random seeds, 5 minutes each, every fault kind this tree can inject;
# CHAOS_ARGS="--seed N --minutes M --faults a,b" reruns one exactly.
CHAOS_ARGS ?= --seeds 3 --minutes 5

.PHONY: help venv proto demo test lint unit integration k8s operator dashboard-png image bench chaos clean

help:
	@echo "make demo    the whole pipeline on this machine: nats-server, gateway, Falco simulator"
	@echo "make test    install everything, generate stubs, lint, run the test suite"
	@echo "make lint    ruff and mypy (strict on hand-written code)"
	@echo "make unit    the unit tests only (tests/unit: pure logic, seconds)"
	@echo "make integration  the tests against real servers (tests/integration)"
	@echo "make proto   regenerate gateway/falco_pb/ from proto/"
	@echo "make bench   the benchmark: ceilings, the gateway, ratios (a few minutes)"
	@echo "make chaos   fault injection: NATS, gateway and Falco killed, full disk... (15 minutes)"
	@echo "make k8s     check the chart, values files, Dockerfile and demo script (no cluster)"
	@echo "make operator  alert rules (promtool) and dashboard queries against a real Prometheus"
	@echo "make dashboard-png  docs/dashboard.png from the Prometheus test's data"
	@echo "make image   build the container image (needs a Docker engine)"
	@echo "scripts/minikube-demo.sh [--falco 0.44] [--dry-run]   the demo on a real cluster"

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
	$(VENV)/bin/shellcheck scripts/minikube-demo.sh
	$(VENV)/bin/yamllint --strict -c tests/k8s/yamllint.yaml charts/falco-nats-gateway/values.yaml charts/falco-nats-gateway/Chart.yaml deploy
	$(VENV)/bin/hadolint Dockerfile

# One kind of test each, by the marker tests/conftest.py sets from the directory
# (`pytest -m unit` is the same); `make test` runs every kind after lint.
unit: $(PROTO_OUT)
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

integration: $(PROTO_OUT)
	$(PY) -m pytest -q -m integration $(PYTEST_ARGS)

# Ceilings and the gateway on this machine: a table on stdout, JSON in bench-results/
# (BENCH_ARGS="--scale 0.5" for a shorter run; see docs/performance.md).
bench: $(PROTO_OUT)
	$(PY) -m bench $(BENCH_ARGS)

# The fault-injection suite: the real gateway under Falco-shaped load while a seeded
# schedule injects faults; a table, and a rerun command for each failing seed.
chaos: $(PROTO_OUT)
	$(PY) -m tests.chaos $(CHAOS_ARGS)

k8s: $(PROTO_OUT)
	$(PY) -m pytest -q -m k8s $(PYTEST_ARGS)

# The alert rules and the Grafana dashboard: promtool unit tests, and every query and rule run
# by a real Prometheus scraping a real gateway (apt-get install prometheus; skipped without it).
operator: $(PROTO_OUT)
	$(PY) scripts/operator_kit.py --check
	$(PY) -m pytest -q tests/operator $(PYTEST_ARGS)

# The picture of the dashboard (README, docs/observability.md): the Prometheus test's panel data, plotted.
dashboard-png: $(PROTO_OUT)
	OPERATOR_KIT_DATA=$(CURDIR)/.dashboard-data.json $(PY) -m pytest -q \
		tests/operator/test_prometheus.py $(PYTEST_ARGS)
	$(PY) scripts/dashboard_png.py .dashboard-data.json docs/dashboard.png
	rm -f .dashboard-data.json

# Needs a Docker engine; tests/k8s checks the Dockerfile without one.
image:
	docker build -t $(IMAGE):$(VERSION) .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info gateway/falco_pb/*_pb2*.py gateway/falco_pb/*_pb2*.pyi
