# Custom MicroPython image for the classic ESP32 with the ATLS firmware frozen in:
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/atls-mcu/boards/esp32/manifest.py
# then `make flash BOARD=esp32 FIRMWARE=build-ESP32_GENERIC/firmware.bin PORT=...`.
include("$(PORT_DIR)/boards/manifest.py")  # what ESP32_GENERIC freezes by default
include("../manifest_common.py")
