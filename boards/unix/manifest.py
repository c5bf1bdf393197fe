# A MicroPython unix port with the ATLS firmware frozen in:
#   cd micropython/ports/unix
#   make FROZEN_MANIFEST=/path/to/atls-mcu/boards/unix/manifest.py
include("$(PORT_DIR)/variants/manifest.py")  # what the standard variant freezes
include("../manifest_common.py")
