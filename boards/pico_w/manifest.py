# Custom MicroPython image for the Raspberry Pi Pico W with the ATLS firmware frozen in:
#   cd micropython/ports/rp2
#   make BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/atls-mcu/boards/pico_w/manifest.py
# then `make flash BOARD=pico_w FIRMWARE=build-RPI_PICO_W/firmware.uf2`.
include("$(BOARD_DIR)/manifest.py")  # RPI_PICO_W's own manifest (networking bundle)
include("../manifest_common.py", thumb=True)  # rp2: @micropython.asm_thumb
