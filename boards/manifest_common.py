# Shared by boards/*/manifest.py: freeze the ATLS firmware package into a
# MicroPython image.  Paths are relative to this file (MicroPython manifest
# rules: each manifest runs from its own directory), so this works from any
# checkout location.  main.py, board_config.json and device.json stay on the
# board's filesystem (`make deploy` / `make provision` put them there).
package("atls", base_path="../firmware")
