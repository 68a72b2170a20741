# iris-scorer — the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools system-deps plots-assets demo test lint typecheck unit bench bench-full train lock clean kafka keda-scaler

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]' || exit 2
	@echo "install: [1/4] virtual environment $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "install: [2/4] pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "install: [3/4] $$(grep -c '==' requirements.lock) pinned packages from requirements.lock (about 90 s on a fresh machine)"
	@$(BIN)/python -m pip install --quiet -r requirements.lock
	@echo "install: [4/4] iris-scorer itself (editable)"
	@$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . > $(VENV)/install-self.log 2>&1 \
	  || { cat $(VENV)/install-self.log; exit 1; }
	@touch $(STAMP)
	@echo "install: done ($$($(BIN)/iris-scorer --version))"

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
# metrics and dashboard-query tests), chromium (headless rendering of /docs and Evidently's UI), wrk and hyperfine (the
# load and start-up timers of `make bench`).
# Installed with apt-get when missing (root, or sudo without a password).
DEB_PACKAGES := kcat:kcat prometheus:promtool chromium:chromium wrk:wrk hyperfine:hyperfine

system-deps:
	@missing=""; for pc in $(DEB_PACKAGES); do command -v $${pc#*:} >/dev/null || missing="$$missing $${pc%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q $$missing >/dev/null; } || \
	  { echo "could not install$$missing with apt-get: install it by hand" >&2; exit 1; }; \
	fi

# vega, vega-lite and vega-embed (pinned, from npm) for `dvc plots show` offline: the HTML template
# .dvc/plots/offline.html loads them from here instead of a CDN.
VEGA_DIR := .cache/vega
VEGA_PACKAGES := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2

plots-assets: $(VEGA_DIR)/vega-embed.min.js

$(VEGA_DIR)/vega-embed.min.js:
	@command -v npm >/dev/null || { echo "plots-assets: npm is needed to fetch $(VEGA_PACKAGES)" >&2; exit 1; }
	@mkdir -p $(VEGA_DIR)
	@cd $(VEGA_DIR) && npm pack --silent $(VEGA_PACKAGES) >/dev/null && \
	  for t in vega-[0-9]*.tgz vega-lite-*.tgz vega-embed-*.tgz; do name=$${t%-*}; \
	    tar -xzf $$t --strip-components=2 package/build/$$name.min.js || exit 1; done && rm -f *.tgz
	@echo "plots-assets: $(VEGA_PACKAGES) in $(VEGA_DIR)"

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

test: install tools plots-assets lint typecheck
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

bench: install system-deps
	$(BIN)/python -m bench --quick

bench-full: install system-deps
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
