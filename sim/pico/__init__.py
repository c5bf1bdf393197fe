"""The firmware on an emulated Raspberry Pi Pico (RP2040, stock MicroPython v1.28.0
RPI_PICO, in the rp2040js emulator under Node): tests, benchmarks and simulator devices.

  emu.mjs      the emulator process (JSON lines on stdin/stdout), Node + rp2040js
  driver.py    Pico (one emulator process), deployed() (firmware on the flash, cached)
  __main__.py  `python -m sim.pico run-file FILE` and friends
See sim/pico/README.md.
"""

from sim.pico.driver import CLOCK_HZ, EmulatorError, Pico, Result, deployed

__all__ = ["CLOCK_HZ", "EmulatorError", "Pico", "Result", "deployed"]
