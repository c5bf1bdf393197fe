"""The system-level sections of `make bench` (CPython only; docs/BENCHMARKS.md),
one module each.  A section is a function `name(quick=False) -> {metric: value}`
that measures and never asserts; the runner stores it in build/bench.json under
`sections.<name>` with its note.

  link_overhead       bytes on the wire per message and for a full PSK+ECDHE
                      handshake, per suite and MTU (issue 4)
  service_handshakes  handshakes/s of the service path against a raw
                      pyOpenSSL memory-BIO handshake loop, same run (issue 4)
  zigbee              frames and bytes on air for a handshake and per message;
                      the real gateway process against a plain UDP relay (issue 5)
  sim_scale           the simulator with 10 and 100 devices: wall time, time
                      to all up, peak RSS per process (issue 6)
  boards              .mpy bytes per board, heap to import everything (issue 7)
  abuse               the service and the gateway under flood: honest success
                      and latency, RSS growth, amplification, fds (issue 14)
  mqtt                device messages to a real Mosquitto through the bridge:
                      messages/s, PUBACK-before-ACK added latency (issue 18)
  pico                the firmware on an emulated Raspberry Pi Pico (RP2040,
                      rp2040js): crypto, handshake CPU, heap, end to end over
                      the XBee path, ESP32 estimate (issue 16)
  ota                 firmware updates: bytes and airtime of a typical update on
                      ZigBee, time to update 10 devices, reading latency (issue 20)
  scale               10,000 simulated devices (host_tools.loadgen) against the
                      real service: handshakes/s, messages/s, CPU per message
                      and handshake at 100/1,000/10,000, the worker kill test,
                      one worker against raw OpenSSL (issue 19)

One section alone, its metrics as JSON on stdout (nothing written):

    python -m host_tools.bench.sections NAME [--quick]
"""

import argparse
import json
import sys

from host_tools.bench import (
    abuse,
    boards,
    link_overhead,
    mqtt,
    ota,
    pico,
    scale,
    service_handshakes,
    sim_scale,
    zigbee,
)

SECTIONS = (
    ("link_overhead", link_overhead.link_overhead),
    ("service_handshakes", service_handshakes.service_handshakes),
    ("zigbee", zigbee.zigbee),
    ("sim_scale", sim_scale.sim_scale),
    ("boards", boards.boards),
    ("abuse", abuse.abuse),
    ("mqtt", mqtt.mqtt),
    ("pico", pico.pico),
    ("ota", ota.ota),
    ("scale", scale.scale),
)

NOTES = {
    "link_overhead": link_overhead.NOTE,
    "service_handshakes": service_handshakes.NOTE,
    "zigbee": zigbee.NOTE,
    "sim_scale": sim_scale.NOTE,
    "boards": boards.NOTE,
    "abuse": abuse.NOTE,
    "mqtt": mqtt.NOTE,
    "pico": pico.NOTE,
    "ota": ota.NOTE,
    "scale": scale.NOTE,
}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.sections")
    ap.add_argument("name", choices=[n for n, _ in SECTIONS])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    print(json.dumps(dict(SECTIONS)[a.name](quick=a.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
