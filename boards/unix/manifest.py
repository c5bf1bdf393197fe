# A MicroPython unix port with the ATLS firmware frozen in:
#   cd micropython/ports/unix
#   make FROZEN_MANIFEST=/path/to/atls-mcu/boards/unix/manifest.py
# The standard variant's own manifest: the port's common manifest
# ($(PORT_DIR)/variants/manifest.py) plus asyncio
# (include("$(MPY_DIR)/extmod/asyncio")), as `make` without a variant builds.
include("$(PORT_DIR)/variants/standard/manifest.py")
include("../manifest_common.py")
