"""A malicious gateway for the simulator: the real gateway, plus a man in the
middle that tampers with, replays, reorders, drops and injects ATLS packets
in both directions (probabilities and seed from ATLS_EVIL, JSON).  It counts
what it did under "evil" in the gateway's stats, so the scenario can show
that each attack really happened and that none got anything accepted.

The forged-error attacks (issue 13): `drop_ack` drops that fraction of ACK
packets both ways; every `forge_error_s` seconds, per device, an
ERROR(unknown_session) for the device's session id goes to the device and
one to the service, and, before the device has a session id, ERROR(busy)
for session 0; every `spoof_s` seconds off-path packets "from" the device
reach the service (3- and 4-byte packets with random session ids, whose
answers reach the device) and ERRORs with random session ids reach the
device.

`tamper_update` (issue 20) flips a bit in that fraction of the CDATA packets
(a channel other than 0, in the clear header; which channel is sealed)
going to devices: the update channel's OFFER and chunks.

    ATLS_EVIL='{"tamper": 0.05, ...}' python -m sim.evil_gateway run --config gw.json
"""

import json
import os
import random
import sys
import time

from atls import protocol, wire
from host_tools.gateway.bridge import Gateway
from host_tools.gateway.cli import main


class EvilGateway(Gateway):
    def __init__(self, config):
        super().__init__(config)
        p = json.loads(os.environ.get("ATLS_EVIL", "{}"))
        self.rng = random.Random(p.get("seed", 1))
        self.p = {
            k: float(p.get(k, 0.0))
            for k in ("tamper", "replay", "reorder", "drop", "inject", "drop_ack", "tamper_update")
        }
        self.forge_s = float(p.get("forge_error_s", 0))
        self.spoof_s = float(p.get("spoof_s", 0))
        self.history = []  # (direction, key or flow, packet) recently seen
        self.held = {}  # direction -> (target, packet) waiting to be reordered
        self.due = {}  # (what, target) -> when that forgery is due next
        self.counters["evil"] = {k: 0 for k in self.p}
        self.counters["evil"].update(forge_error=0, spoof=0)

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
        if packet[0] & 7 == protocol.ACK and r() < self.p["drop_ack"]:
            self._did("drop_ack")
            return
        self._forge(direction, target, packet, forward)
        if (
            direction == "down"
            and packet[0] & 7 == protocol.CDATA
            and r() < self.p["tamper_update"]
        ):
            b = bytearray(packet)
            b[self.rng.randrange(protocol.HEADER_LEN, len(b))] ^= 1 << self.rng.randrange(8)
            packet = bytes(b)
            self._did("tamper_update")
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

    def _when(self, what, target, period):
        now = time.monotonic()
        k = (what, target)
        if period <= 0 or now < self.due.get(k, 0):
            return False
        self.due[k] = now + period
        return True

    def _forge(self, direction, target, packet, forward):
        """ERRORs and off-path packets on a schedule, per device (issue 13)."""
        sid = (packet[1] << 8) | packet[2]
        rnd = self.rng.randrange(1, 0x10000)
        if self._when("error", (direction, target), self.forge_s):
            if direction == "down":  # to the device: its session id, or busy for 0
                reason = protocol.UNKNOWN_SESSION if sid else protocol.BUSY
                forward(target, wire.encode(protocol.ERROR, sid, bytes((reason,))))
            else:  # to the service, which never takes ERROR
                forward(target, wire.encode(protocol.ERROR, sid, b"\x01"))
            self._did("forge_error")
        if self._when("spoof", (direction, target), self.spoof_s):
            if direction == "up":  # off-path packets "from" the device
                forward(target, wire.encode(protocol.HS_ACK, rnd, b"")[:3])
                forward(target, wire.encode(protocol.HS_ACK, rnd, b"\x00"))
            else:  # ERRORs for session ids the device does not have
                forward(target, wire.encode(protocol.ERROR, rnd, b"\x01"))
                forward(target, wire.encode(protocol.ERROR, rnd, b"\x03"))
            self._did("spoof")

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
