# iris-scorer — the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools system-deps demo test lint typecheck unit bench bench-full train lock clean kafka keda-scaler

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]' || exit 2
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Static-analysis tools for the deploy checks (checkov, hadolint, actionlint, kubernetes-validate)
# live in their own venv: checkov's pins would fight the service's lock.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): requirements-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $(TOOLS_STAMP)

# Debian packages the tests use from outside the venv, as package:command: kcat (a producer that
# is not ours, for the compressed-input tests), prometheus (promtool and a real Prometheus for the
# metrics and dashboard-query tests), chromium (headless rendering of /docs and Evidently's UI).
# Installed with apt-get when missing (root, or sudo without a password).
DEB_PACKAGES := kcat:kcat prometheus:promtool chromium:chromium

system-deps:
	@missing=""; for pc in $(DEB_PACKAGES); do command -v $${pc#*:} >/dev/null || missing="$$missing $${pc%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q $$missing >/dev/null; } || \
	  { echo "could not install$$missing with apt-get: install it by hand" >&2; exit 1; }; \
	fi

demo: install
	$(BIN)/iris-scorer demo

# A real Apache Kafka (KRaft) in the foreground, from Maven Central jars cached in .cache/kafka
# (needs Java 17+; Maven the first time). KAFKA_PORT (9092), KAFKA_NODES (1); Ctrl-C stops it.
kafka: install
	$(BIN)/python -m iris_scorer.kafka_local $(if $(PARTITIONS),--partitions $(PARTITIONS))

train: install
	$(BIN)/iris-scorer train

lint: install
	$(BIN)/ruff check app ml consumers iris_scorer tests bench
	$(BIN)/ruff format --check app ml consumers iris_scorer tests bench

typecheck: install
	$(BIN)/mypy

test: install tools lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

# KEDA's own Kafka scaler (its Go module, v2.20.2), for tests/test_keda_lag.py's cross-check;
# the first build fetches ~2 GB of Go modules, so it is not part of `make test`.
KEDA_SCALER := .cache/keda/keda-kafka-lag
keda-scaler: $(KEDA_SCALER)
$(KEDA_SCALER): tools/keda-kafka-lag/go.mod tools/keda-kafka-lag/go.sum tools/keda-kafka-lag/main.go
	mkdir -p $(dir $(KEDA_SCALER))
	cd tools/keda-kafka-lag && go build -trimpath -o $(CURDIR)/$(KEDA_SCALER) .

bench: install
	$(BIN)/python -m bench --quick

bench-full: install
	$(BIN)/python -m bench --full

# Re-resolve requirements.in into the pinned requirements.lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	{ echo '# Pinned, fully resolved dependency set (runtime + dev). Regenerate with `make lock`.'; \
	  .lock-venv/bin/python -m pip freeze | grep -v "^-e"; .lock-venv/bin/python -m pip freeze --all | grep -E "^(setuptools|wheel)=="; } > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(TOOLS) data reports mlartifacts mlflow.db .dvc/cache .dvc/tmp
