"""The shared 802.15.4 channel joining the emulated modules.

Radio model.  A Transmit Request (0x10) whose payload exceeds the sender's NP
gets Transmit Status 0x74 and nothing is sent (no APS fragmentation); an
unjoined sender gets 0x22, an unknown destination 0x24.  Otherwise the frame
occupies the shared channel for its airtime, (payload + overhead_bytes) x 8 /
250 kbit/s (overhead 30 bytes: 6 PHY + 11 MAC incl. FCS + 8 NWK + 5 APS),
transmissions are serialised (an ideal CSMA, no collisions), and the outcome
is known latency_ms after the frame leaves the air.  The frame is lost with
probability `loss` (the module's own MAC/APS retries are folded into that
probability): the sender then gets status 0x21 (network ACK failure); else the
receiver emits a Receive Packet (0x90) with the sender's 64- and 16-bit
addresses and the sender gets 0x00.  Loss draws come from one RNG per sending
module seeded with (seed, address), so a run is reproducible whatever the
interleaving of modules.  Lost frames still count as airtime.

Network security: on an encrypted network (coordinator EE=1) a frame is
delivered only when its sender holds the network key (joined through the
trust center, module.holds_network_key); else it is lost on the air
(counted `no_key` at the sender, `no_key` in the totals) and the sender gets
0x21.  `inject(..., nk=key)` forges a frame as someone holding `key`: without
the network's key (the default) it is never delivered on an encrypted network.

Hooks: `medium.taps` is a list of callables tap(event) run when a frame goes
on the air, event = {"time", "src", "dst", "src16", "payload", "kind"}; a tap
returns None (observe), new payload bytes (tamper) or DROP (lost on the air).
`medium.inject(src64, dst64, payload)` puts a forged frame on the air;
`medium.restart(addr)`, `medium.leave(addr)`, `module.silent = True` model
power cycles, leaves and dead modules.  `medium.stats()` is a JSON-able dump.
"""

from atls import xbee as X
from sim.radio.addresses import addr64, hex64

DROP = False


class Medium:
    """The shared channel: airtime, latency, loss, delivery, hooks, counters."""

    def __init__(
        self,
        clock,
        loss=0.0,
        latency_ms=5.0,
        seed=0,
        overhead_bytes=30,
        bitrate=250000,
        join_delay_ms=50,
    ):
        self.clock = clock
        self.loss = loss
        self.latency_ms = latency_ms
        self.seed = seed
        self.overhead_bytes = overhead_bytes
        self.bitrate = bitrate
        self.join_delay_ms = join_delay_ms
        self.modules = {}
        self.coordinator = None
        self.taps = []
        self.busy_until = 0.0
        self.totals = {
            "frames": 0,
            "bytes": 0,
            "air_bytes": 0,
            "airtime_ms": 0.0,
            "lost": 0,
            "tap_drops": 0,
            "tampered": 0,
            "injected": 0,
            "no_key": 0,
        }

    def add(self, module):
        if module.addr64 in self.modules:
            raise ValueError("address %s already on the medium" % hex64(module.addr64))
        self.modules[module.addr64] = module
        if module.coordinator:
            if self.coordinator is not None:
                raise ValueError("one coordinator per medium")
            self.coordinator = module
        return module

    def module(self, address):
        return self.modules[addr64(address)]

    def airtime_s(self, nbytes):
        return (nbytes + self.overhead_bytes) * 8.0 / self.bitrate

    # -- transmission --------------------------------------------------------------------
    def _status(self, src, fid, dest16, delivery):
        if fid:
            src.emit(X.tx_status(fid, dest16, 0, delivery, 0))

    def transmit(self, src, fid, dest64, dest16, options, payload):
        c = src.counters
        if len(payload) > src.max_payload():
            c["too_large"] += 1
            return self._status(src, fid, 0xFFFE, X.PAYLOAD_TOO_LARGE)
        if not src.joined:
            c["not_joined"] += 1
            return self._status(src, fid, 0xFFFE, X.NOT_JOINED)
        broadcast = dest64 == X.BROADCAST64
        if dest64 == X.COORDINATOR64:
            dst = self.coordinator
        elif broadcast:
            dst = None
        else:
            dst = self.modules.get(bytes(dest64))
            if dst is None:
                c["unroutable"] += 1
                return self._status(src, fid, 0xFFFE, X.ADDRESS_NOT_FOUND)
        if dst is None and not broadcast:
            c["unroutable"] += 1
            return self._status(src, fid, 0xFFFE, X.ADDRESS_NOT_FOUND)
        if dst is src:
            c["unroutable"] += 1
            return self._status(src, fid, 0xFFFE, X.SELF_ADDRESSED)
        end = self._occupy(src, len(payload))
        lost = src.rng.random() < self.loss  # one draw per frame, taps or not
        ev = {
            "time": self.clock.time(),
            "src": src.addr64,
            "src16": src.my16,
            "dst": X.BROADCAST64 if broadcast else dst.addr64,
            "payload": bytes(payload),
            "kind": "broadcast" if broadcast else "unicast",
        }
        payload, dropped = self._run_taps(ev)
        delay = end - self.clock.time() + self.latency_ms / 1000
        self.clock.call_later(
            delay, self._arrive, src, fid, dst, payload, lost or dropped, broadcast
        )

    def _occupy(self, src, nbytes):
        now = self.clock.time()
        air = self.airtime_s(nbytes)
        start = max(now, self.busy_until)
        self.busy_until = start + air
        c = src.counters
        c["tx_frames"] += 1
        c["tx_bytes"] += nbytes
        c["air_bytes"] += nbytes + self.overhead_bytes
        c["airtime_ms"] += air * 1000
        t = self.totals
        t["frames"] += 1
        t["bytes"] += nbytes
        t["air_bytes"] += nbytes + self.overhead_bytes
        t["airtime_ms"] += air * 1000
        return start + air

    def _run_taps(self, ev):
        payload = ev["payload"]
        for tap in list(self.taps):
            r = tap(ev)
            if r is DROP:
                self.totals["tap_drops"] += 1
                return payload, True
            if r is not None:
                payload = ev["payload"] = bytes(r)
                self.totals["tampered"] += 1
        return payload, False

    def _arrive(self, src, fid, dst, payload, lost, broadcast):
        if not lost and not src.holds_network_key():
            self.totals["no_key"] += 1
            src.counters["no_key"] += 1
            return self._status(src, fid, 0xFFFE, X.NETWORK_ACK_FAILURE)
        if broadcast:
            if lost:
                self.totals["lost"] += 1
                src.counters["lost"] += 1
            else:
                for m in list(self.modules.values()):
                    if m is not src and m.joined:
                        m.deliver(src, payload, X.RX_BROADCAST)
                src.counters["delivered"] += 1
            return self._status(src, fid, 0xFFFD, X.DELIVERY_SUCCESS)
        if lost or not dst.joined:
            self.totals["lost"] += 1
            src.counters["lost"] += 1
            return self._status(src, fid, 0xFFFE, X.NETWORK_ACK_FAILURE)
        dst.deliver(src, payload, X.RX_ACKED)
        src.counters["delivered"] += 1
        self._status(src, fid, dst.my16, X.DELIVERY_SUCCESS)

    def inject(self, src64, dst64, payload, src16=None, options=X.RX_ACKED, nk=None):
        """Forge a frame on the air: dst emits an RX Packet claiming src64
        (which need not exist) after airtime + latency; nobody gets a status.
        On an encrypted network it arrives only when `nk` is the network key."""
        dst = self.coordinator if bytes(dst64) == X.COORDINATOR64 else self.module(dst64)
        self.totals["injected"] += 1
        now = self.clock.time()
        air = self.airtime_s(len(payload))
        start = max(now, self.busy_until)
        self.busy_until = start + air
        fake = _Forged(addr64(src64), 0xFFFE if src16 is None else src16)
        c = self.coordinator
        if c is not None and c.ee and nk != c.nk:
            self.totals["no_key"] += 1  # cannot encrypt to the network: never received
            return
        self.clock.call_later(
            start + air - now + self.latency_ms / 1000,
            lambda: dst.joined and dst.deliver(fake, bytes(payload), options),
        )

    # -- network events --------------------------------------------------------------------
    def join_window_opened(self):
        for m in list(self.modules.values()):
            if not m.coordinator and not m.joined:
                m.try_join()

    def network_changed(self, module):
        """EE or ID changed: a device leaves and rescans; a coordinator
        re-forms its network, so every device leaves."""
        if module.coordinator:
            for m in list(self.modules.values()):
                if not m.coordinator:
                    m.leave()
        else:
            module.leave()

    def leave(self, address, rejoin=True):
        self.module(address).leave(rejoin)

    def restart(self, address):
        self.module(address).restart()

    def stats(self):
        return {
            "time": self.clock.time(),
            "config": {
                "loss": self.loss,
                "latency_ms": self.latency_ms,
                "seed": self.seed,
                "overhead_bytes": self.overhead_bytes,
                "bitrate": self.bitrate,
            },
            "medium": dict(self.totals),
            "modules": {
                hex64(a): dict(
                    m.describe(), counters=dict(m.counters), decoder=m.decoder_counters()
                )
                for a, m in self.modules.items()
            },
        }


class _Forged:
    """The sender an injected frame claims to come from."""

    def __init__(self, a64, a16):
        self.addr64 = a64
        self.my16 = a16
