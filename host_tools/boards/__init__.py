"""Boards: compile, flash, deploy and provision (`make mpy|flash|deploy|provision`;
docs/BOARDS.md).

Everything about a board is data in boards/<board>/:
  board.json          what the board is: MicroPython port, mpy-cross arch, firmware image
                      format and where to download it, how to flash it
  board_config.json   deployed to the device; read by firmware/atls/app.py
  manifest.py         freezes firmware/atls into a user-built MicroPython image
The modules here know firmware *formats* (ESP image, UF2) and flash *methods*
(esptool, UF2 drive/picotool); they never test a board's name.

  config     board data: load and validate           mpy        `make mpy`, bench figures
  flash      image checks, flash commands            deploy     `make deploy` (mpremote)
  provision  device identity + service registry      cli        `python -m host_tools.boards`
  tools      running esptool/mpremote/cp             ptyboard   a unix port behind a pty
"""

from host_tools.boards.cli import main
from host_tools.boards.config import (
    BoardError,
    ToolError,
    known_boards,
    load_board,
    validate_board,
)
from host_tools.boards.deploy import deploy, deploy_commands
from host_tools.boards.flash import check_firmware, find_uf2_mount, flash_commands
from host_tools.boards.mpy import build_mpy, firmware_modules, import_ram, mpy_sizes
from host_tools.boards.provision import device_ca, provision

__all__ = [
    "BoardError",
    "ToolError",
    "build_mpy",
    "check_firmware",
    "deploy",
    "deploy_commands",
    "device_ca",
    "find_uf2_mount",
    "firmware_modules",
    "flash_commands",
    "import_ram",
    "known_boards",
    "load_board",
    "main",
    "mpy_sizes",
    "provision",
    "validate_board",
]
