"""A malicious gateway for the simulator: the real gateway, plus a man in the
middle that tampers with, replays, reorders, drops and injects ATLS packets
in both directions (probabilities and seed from ATLS_EVIL, JSON).  It counts
what it did under "evil" in the gateway's stats, so the scenario can show
that each attack really happened and that none got anything accepted.

    ATLS_EVIL='{"tamper": 0.05, ...}' python -m sim.evil_gateway run --config gw.json
"""

import json
import os
import random
import sys

from atls import protocol
from host_tools.gateway.bridge import Gateway
from host_tools.gateway.cli import main


class EvilGateway(Gateway):
    def __init__(self, config):
        super().__init__(config)
        p = json.loads(os.environ.get("ATLS_EVIL", "{}"))
        self.rng = random.Random(p.get("seed", 1))
        self.p = {
            k: float(p.get(k, 0.0)) for k in ("tamper", "replay", "reorder", "drop", "inject")
        }
        self.history = []  # (direction, key or flow, packet) recently seen
        self.held = {}  # direction -> (target, packet) waiting to be reordered
        self.counters["evil"] = {k: 0 for k in self.p}

    def _did(self, what):
        self.counters["evil"][what] += 1

    def _attack(self, direction, target, packet, forward):
        """Decide what happens to one ATLS packet on its way through."""
        r = self.rng.random
        self.history.append((direction, target, packet))
        del self.history[:-64]
        if r() < self.p["drop"]:
            self._did("drop")
            return
        if r() < self.p["tamper"] and len(packet) > protocol.HEADER_LEN:
            b = bytearray(packet)
            i = self.rng.randrange(protocol.HEADER_LEN, len(b))  # keep the marker and session id
            b[i] ^= 1 << self.rng.randrange(8)
            packet = bytes(b)
            self._did("tamper")
        if r() < self.p["reorder"] and direction not in self.held:
            self.held[direction] = (target, packet)
            self._did("reorder")
            return
        forward(target, packet)
        if direction in self.held:
            t, p = self.held.pop(direction)
            forward(t, p)
        if r() < self.p["replay"] and self.history:
            d, t, p = self.rng.choice(self.history)
            if d == direction:
                forward(t, p)
                self._did("replay")
        if r() < self.p["inject"]:
            junk = (
                bytes([packet[0]])
                + packet[1:3]
                + bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(2, 40)))
            )
            forward(target, junk)
            self._did("inject")

    def upstream(self, key, payload):
        if not protocol.is_atls(payload) or key[0] != "zb":
            return super().upstream(key, payload)
        self._attack("up", key, payload, lambda k, p: Gateway.upstream(self, k, p))

    def downstream(self, flow, data):
        if not protocol.is_atls(data):
            return super().downstream(flow, data)
        self._attack("down", flow, data, lambda f, p: Gateway.downstream(self, f, p))


if __name__ == "__main__":
    sys.exit(main(gateway_class=EvilGateway))
