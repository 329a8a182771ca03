# skiplock developer entry points. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2
# `make run`'s ports, also taken from the environment: SCHEDULER_PORT=9081 make run
SCHEDULER_PORT ?= 8081
COORDINATOR_PORT ?= 8080
WORKER_BASE_PORT ?= 8001

.PHONY: run test test-fast lint typecheck proto bench screenshots clean

# The virtualenv is rebuilt whenever the pinned requirements change.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Generated gRPC code is never committed; this is the one command that produces it.
proto/skiplock_pb2.py: proto/skiplock.proto $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=. --mypy_grpc_out=. --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc proto/skiplock.proto

proto: proto/skiplock_pb2.py

run: proto
	$(PY) -m devtools.run --workers=$(WORKERS) --scheduler-port=$(SCHEDULER_PORT) \
		--coordinator-port=$(COORDINATOR_PORT) --worker-base-port=$(WORKER_BASE_PORT)

test: proto
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# The in-process layer alone: real bash, gRPC and PostgreSQL, no service processes.
test-fast: proto
	$(PY) -m pytest tests/unit

# Refreshes docs/screenshots from the dashboard's browser tests.
screenshots: proto
	SKIPLOCK_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_dashboard.py

lint: proto
	$(PY) -m ruff check .

typecheck: proto
	$(PY) -m mypy

# The control-plane budget in one sitting (ceiling, drain, start delay, steady load):
# make bench BENCH_ARGS='-n 2000'; flags: .venv/bin/python scripts/bench.py -h
bench: proto
	$(PY) scripts/bench.py $(BENCH_ARGS)

# Random secrets for docker compose in .env (mode 0600), unless .env exists: compose has no
# default secrets and refuses to start without these.
secrets:
	@if [ -e .env ]; then echo ".env exists; leaving it alone"; else \
	  umask 077 && $(PYTHON) -c 'import secrets; [print(f"{n}={secrets.token_hex(32)}") for n in ("POSTGRES_PASSWORD", "SKIPLOCK_CLUSTER_TOKEN", "SKIPLOCK_API_TOKEN", "SKIPLOCK_API_READ_TOKEN", "GRAFANA_ADMIN_PASSWORD")]' > .env \
	  && echo "wrote .env: POSTGRES_PASSWORD, SKIPLOCK_CLUSTER_TOKEN, SKIPLOCK_API_TOKEN, SKIPLOCK_API_READ_TOKEN, GRAFANA_ADMIN_PASSWORD"; fi

# A development CA and certificates for coordinator, scheduler and worker-1 … worker-N in certs/.
certs: $(VENV)/.installed
	$(PY) -m devtools.certs --dir certs --workers $(WORKERS)

clean:
	rm -rf $(VENV) .data proto/*_pb2*.py proto/*_pb2*.pyi build *.egg-info
