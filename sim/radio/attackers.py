"""Pairing attackers on the emulated air, for the `pair-attack` scenario
(sim/pair_attack.py), started by the radio's control command
{"cmd": "attack", "rogue_gateway": true, "grinder": true}.

RogueGateway: an outsider radio (no network key) that hears every pairing
REQUEST and answers it as the coordinator would (src 0x0000, the
coordinator's 64-bit address): a RESPONSE of its own, then an ACCEPT under
the key of its own exchange, and a forged ACCEPT.  On an encrypted network
(EE=1) none of it is delivered (medium.inject without the key).

Grinder: an insider, a joined module holding the network key.  When an
honest device reveals, it computes that device's code from what it heard
(it is not secret: nobody can *choose* it), runs its own exchange with the
gateway and searches reveal nonces for one that shows the same code; the
gateway refuses the reveal because it does not open the commitment.  Its
search is bounded (GRIND_TRIES) so the radio's loop is not held for long.
Counters: `stats()`.
"""

import os

from atls import pairing as P
from atls import xbee as X
from atls.errors import DecodeError
from sim.radio.addresses import addr64
from sim.radio.module import Module

GRIND_TRIES = 20000
ROGUE_ADDRESS = 0x0013A200DEAD0001


class RogueGateway:
    def __init__(self, medium):
        self.medium = medium
        self.counters = {"responses": 0, "accepts": 0}
        self.exchanges = {}  # device addr64 -> (priv, request, response)
        medium.taps.append(self.tap)

    def tap(self, ev):
        c = self.medium.coordinator
        p = ev["payload"]
        if ev["dst"] not in (c.addr64, X.COORDINATOR64) or not P.is_pairing(p):
            return None
        try:
            m = P.decode(p)
        except DecodeError:
            return None
        src = ev["src"]
        if m[0] == "request":
            from atls.crypto.x25519 import x25519_base

            priv = os.urandom(32)
            resp = P.encode_response(os.urandom(16), x25519_base(priv), c.addr64, "gateway")
            self.exchanges[src] = (priv, p, resp)
            self._say(src, resp)
            self.counters["responses"] += 1
        elif m[0] == "reveal" and src in self.exchanges:
            from atls.crypto.x25519 import x25519

            priv, req, resp = self.exchanges[src]
            th = P.transcript(src, c.addr64, req, resp, m[1], m[2])
            k = P.pairing_key(x25519(priv, m[1]), th)
            self._say(src, P.encode_reply(P.ACCEPT, tag=P.tag(k, b"accept")))
            self._say(src, P.encode_reply(P.ACCEPT, tag=os.urandom(16)))
            self.counters["accepts"] += 2
        return None

    def _say(self, dst, payload):
        c = self.medium.coordinator
        self.medium.clock.call_soon(self.medium.inject, c.addr64, dst, payload, 0)


class Grinder:
    def __init__(self, medium):
        self.medium = medium
        self.counters = {"exchanges": 0, "matches": 0, "reveals": 0, "responses": 0}
        self.heard = {}  # device addr64 -> [request, response]
        self.mod = Module(medium, ROGUE_ADDRESS, joined=True, ee=medium.coordinator.ee)
        medium.add(self.mod)
        self.mod.nk = medium.coordinator.nk  # an insider: it holds the network key
        self.dec = X.FrameDecoder(False)
        self.mod.attach(self._rx)
        self.mine = None
        self.n = 0
        medium.taps.append(self.tap)

    def tap(self, ev):
        p = ev["payload"]
        if not P.is_pairing(p) or ev["src"] == self.mod.addr64 or ev["dst"] == self.mod.addr64:
            return None
        kind = p[0] & 7
        c = self.medium.coordinator
        if kind == P.REQUEST:
            self.heard[ev["src"]] = [p, None]
        elif kind == P.RESPONSE and ev["src"] == c.addr64 and ev["dst"] in self.heard:
            self.heard[ev["dst"]][1] = p
        elif kind == P.REVEAL and self.heard.get(ev["src"], [0, None])[1] and self.mine is None:
            req, resp = self.heard[ev["src"]]
            m = P.decode(p)
            th = P.transcript(ev["src"], c.addr64, req, resp, m[1], m[2])
            self.medium.clock.call_soon(self._start, P.confirmation_code(th))
        return None

    def _start(self, code):
        from atls.pairing_client import DevicePairing

        self.n += 1
        d = DevicePairing(self.mod.addr64, "rogue-%02d" % self.n, "default")
        self.mine = [d, code]
        self.counters["exchanges"] += 1
        self._send(d.poll(0)[0])

    def _send(self, payload):
        self.mod.nk = self.medium.coordinator.nk  # keeps up with key updates
        self.medium.transmit(self.mod, 0, X.COORDINATOR64, 0xFFFE, 0, payload)

    def _rx(self, data):
        for fd in self.dec.feed(data):
            f = X.parse(fd)
            if f[0] != "rx" or self.mine is None or not f[4] or f[4][0] != P.MARKER | P.RESPONSE:
                continue
            self.counters["responses"] += 1
            d, code = self.mine
            self.mine = None
            c = self.medium.coordinator
            nd = os.urandom(16)
            for i in range(GRIND_TRIES):
                cand = i.to_bytes(16, "big")
                th = P.transcript(self.mod.addr64, c.addr64, d.request, f[4], d.pub, cand)
                if P.confirmation_code(th) == code:
                    nd = cand
                    self.counters["matches"] += 1
                    break
            self.counters["reveals"] += 1
            self._send(P.encode_reveal(d.pub, nd))


def start(medium, req):
    """The control command: start the attackers asked for; returns them."""
    out = {}
    if req.get("rogue_gateway"):
        out["rogue_gateway"] = RogueGateway(medium)
    if req.get("grinder"):
        out["grinder"] = Grinder(medium)
    return out


def stats(attackers):
    return {k: dict(a.counters) for k, a in attackers.items()}


__all__ = ["RogueGateway", "Grinder", "start", "stats", "addr64"]
