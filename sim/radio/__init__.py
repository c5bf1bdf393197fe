"""A simulated 802.15.4 / ZigBee medium joining emulated XBee 3 Zigbee modules.

    python -m sim.radio --devices 3 --loss 0.1 --latency-ms 5 --seed 1 --state-file radio.json

Each emulated module speaks real API frames (firmware/atls/xbee.py) over a
byte stream, exactly as a module does on its UART: the coordinator over a
pty, each device module over its own TCP port.  Modules (addresses
0013A200xxxxxxxx; coordinator 0013A20040000000 + n, devices
0013A20041000001 ...) answer AT commands through Local AT Command frames
(0x08 -> 0x88) and, in transparent mode (AP=0), through command mode.

The parts, one job each:
  clock.py         VirtualClock: deterministic time (else the asyncio loop)
  addresses.py     64-bit addresses: numbering, hex64(), addr64()
  medium.py        Medium: airtime, latency, loss, delivery, taps, stats
  module.py        Module: one XBee's UART (API frames) and network state
  at_commands.py   the AT commands, as a table
  command_mode.py  transparent mode: "+++", ATxx lines, ATCN
  serial_ends.py   PtySerial (coordinator), TcpSerial (devices)
  network.py       RadioNetwork (a whole network on the asyncio loop),
                   BackgroundRadio (the same in a thread), control commands
  cli.py           `python -m sim.radio`
"""

from sim.radio.addresses import COORDINATOR_BASE, DEVICE_BASE, addr64, hex64
from sim.radio.cli import main
from sim.radio.clock import VirtualClock
from sim.radio.medium import DROP, Medium
from sim.radio.module import NP_ENCRYPTED, NP_PLAIN, Module
from sim.radio.network import BackgroundRadio, RadioNetwork
from sim.radio.serial_ends import PtySerial, TcpSerial

__all__ = [
    "COORDINATOR_BASE",
    "DEVICE_BASE",
    "DROP",
    "NP_ENCRYPTED",
    "NP_PLAIN",
    "BackgroundRadio",
    "Medium",
    "Module",
    "PtySerial",
    "RadioNetwork",
    "TcpSerial",
    "VirtualClock",
    "addr64",
    "hex64",
    "main",
]
