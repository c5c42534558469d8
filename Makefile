# `make demo` and `make test` work on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages demo test unit integration integration-tansu bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,faust]'
	touch $(STAMP)

install: $(STAMP)

# Programs the integration tests run for real (Prometheus, Chromium); does nothing once they are on PATH.
system-packages:
	sh scripts/install-debian-packages.sh

demo: $(STAMP)
	$(BIN)/agentstream demo

test: $(STAMP) system-packages
	$(BIN)/python -m pytest tests/unit tests/integration -q --durations=25

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP) system-packages
	$(BIN)/python -m pytest tests/integration -q

# The integration suite on the embedded Tansu broker instead of Apache Kafka.
integration-tansu: $(STAMP) system-packages
	AGENTSTREAM_BROKER=tansu $(BIN)/python -m pytest tests/integration -q -m "not kafka_only" --durations=25

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.relay

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
