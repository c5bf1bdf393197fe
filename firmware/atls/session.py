"""Device side of an ATLS session: the TLS 1.3 client and the link, glued.

Sans-I/O like its parts: the driver feeds datagrams and the millisecond tick
in, sends `datagrams(now)`, sleeps until `next_timer_ms()`, and reads
`events()`.  The session owns the policy a device needs and the parts leave
open: start a new handshake (with exponential backoff) when the service
reports an error, the link fails or the seq space is used up, and carry every
message not yet acknowledged over to the new session, so an accepted message
is never lost.  Events: ("up", suite_name), ("message", bytes),
("delivered", n), ("down", reason), ("failed", reason) when the TLS handshake
itself was refused (a wrong PSK does not heal by retrying quickly).  A
server flight whose TLS records do not open (a late flight of an earlier
attempt from this address, or a forged one) is discarded, up to DISCARDS
per handshake: the attempt goes on (atls.tls.client, counters
["stale_flights"]).

Never dies (issue 12): every exception out of the TLS client, the link or the
channel (AlertError, UsageError, MemoryError, a parser bug) ends the current
session as ("failed", reason) and starts a new one after the backoff; after a
MemoryError the garbage is collected first.  Once the channel is up the TLS
client is dropped (`tls` is None): its exporter, resumption and traffic
secrets go with it, only the channel keys stay.  `feed`, when given, is
called between the long computing steps (a watchdog); the longest step left
is one `TLSClient.receive()` of the server's certificate flight (ECDHE plus
signature and chain checks: seconds on an RP2040).  `rebase(delta, now)`
follows a Clock rebase (atls.eventloop): the link's timers cannot move, so a
live link is dropped and a new session started, nothing lost.

Version 2 (docs/PROTOCOL.md §4-§5): every message has a 64-bit id, boot <<
32 | counter (boot: this power-up's number), that the next session keeps
(its HELLO's base is the id of the first message carried over); service
messages whose id is below the last one delivered (same service epoch, the
high 32 bits) are acknowledged and not delivered again (counted in
counters["duplicates"]).  Backoff: only an authenticated end (the service's
CLOSE or RESET) resets it; whatever the path forges, a new handshake starts
at most HANDSHAKES_PER_MIN times in any 60 s.  send(payload, now, channel)
sends on another channel (2: firmware update); a message on channel 0 is
("message", payload) as before, on another ("message", payload, channel).
"""

import gc

from atls.errors import AlertError, UsageError
from atls.link import Link, LinkConfig, QueueFull
from atls.protocol import CLOSE_NORMAL, CLOSE_REKEY
from atls.tls.client import CLOSED, TLSClient

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


HANDSHAKES_PER_MIN = const(6)
DISCARDS = const(3)  # unauthenticated server flights discarded per handshake (issue 14)


def _nothing():
    pass


class DeviceSession:
    def __init__(
        self,
        tls_config,
        link_config=None,
        max_pending=32,
        retry_ms=1000,
        retry_max_ms=30000,
        rng=None,
        feed=None,
        boot=None,
    ):
        self.tls_config = tls_config
        self.hello = b""  # our HELLO after the id base: the firmware version (app.py)
        self.link_config = link_config or LinkConfig()
        self.max_pending = max_pending
        self.retry_ms = retry_ms
        self.retry_max_ms = retry_max_ms
        self._rng = rng
        self._feed = feed or _nothing
        self.state = "idle"  # idle | handshaking | up | waiting | closed
        self.tls = None
        self.link = None
        self.suite = None
        self._pending = []  # (payload, channel) waiting for a session (oldest first)
        if boot is None:
            from atls.crypto.backend import random_bytes

            boot = int.from_bytes(random_bytes(4), "big")
        self._id = (boot & 0xFFFFFFFF) << 32  # the id of _pending[0]
        self._mark = None  # the service's next message id (dedupe)
        self._starts = []  # when the last handshakes started
        self._ev = []
        self._retry_at = None
        self._backoff = retry_ms
        self._closing = False
        self.handshakes = 0
        self.handshakes_ok = 0
        self.last_handshake_ms = None
        self._hs_started = 0
        self.counters = {
            "sent": 0,
            "delivered": 0,
            "received": 0,
            "reconnects": 0,
            "tls_failures": 0,
            "retransmissions": 0,
            "duplicates": 0,
            "stale_flights": 0,
        }
        self.last_error = None

    def preload(self):
        """Import now what a handshake with this configuration loads on first
        use (the curve of the first group, the AEAD of each configured suite, the
        certificate code, the channel), so that no module is loaded - and the
        qstr pool does not grow - in the middle of a handshake.  Call at boot."""
        from atls import protocol

        cfg = self.tls_config
        names = ["atls.channel", "atls.crypto.aead", "atls.protocol_names"]
        names.append(
            "atls.crypto.x25519" if cfg.groups[0] == protocol.X25519 else "atls.crypto.p256"
        )
        for suite in cfg.suites:  # the service chooses: list only the suites you use
            name = (
                "atls.crypto.gcm" if suite == protocol.TLS_AES_128_GCM_SHA256 else "atls.crypto.ccm"
            )
            if name not in names:
                names.append(name)
        if cfg.cert_mode:
            names += ["atls.tls.auth", "atls.x509", "atls.x509_chain", "atls.crypto.p256"]
        for name in names:
            __import__(name)
        if "atls.crypto.p256" in names:
            from atls.crypto import p256

            p256.prepare()  # its fixed buffers before the heap fragments (issue 17)
        protocol.SUITE_NAMES  # noqa: B018  (the name tables: loaded by their first read)
        gc.collect()
        return names

    # -- driver entry points ----------------------------------------------------
    def connect(self, now_ms):
        """Start (or restart) a handshake."""
        if self.link is not None:
            self._harvest()
        self.state = "handshaking"
        self.handshakes += 1
        self._hs_started = now_ms
        st = self._starts
        st.append(now_ms)
        if len(st) > HANDSHAKES_PER_MIN:
            st.pop(0)
        self._retry_at = None
        try:
            self._feed()
            self.tls = TLSClient(self.tls_config, rng=self._rng, discards=DISCARDS)
            self.link = Link("client", self.link_config)
            self.tls.start(now_ms)  # the key share: a long step
            self._feed()
            self.link.send_flight(self.tls.data_to_send(), now_ms)
        except Exception as e:
            self._fail(e, now_ms)

    def receive(self, datagram, now_ms):
        if self.link is not None:
            try:
                self.link.receive(datagram, now_ms)
                self._pump(now_ms)
            except Exception as e:
                self._fail(e, now_ms)

    def datagrams(self, now_ms):
        if self._retry_at is not None and now_ms >= self._retry_at and not self._closing:
            st = self._starts
            if len(st) >= HANDSHAKES_PER_MIN and now_ms < st[0] + 60000:
                self._retry_at = st[0] + 60000  # the cap, whatever caused the retry
            else:
                self.connect(now_ms)
        if self.link is None:
            return []
        try:
            out = self.link.datagrams(now_ms)
            self._pump(now_ms)
        except Exception as e:
            self._fail(e, now_ms)
            return []
        return out

    def rebase(self, delta, now_ms):
        """The clock went back by `delta` ms (Clock.rebase): shift our timers;
        a link (its timers are its own) is dropped and a new session starts."""
        self._hs_started -= delta
        self._starts = [t - delta for t in self._starts]
        if self._retry_at is not None:
            self._retry_at = max(now_ms, self._retry_at - delta)
        if self.link is not None and not self._closing:
            self._down("clock_rebase", now_ms)
            self._retry_at = now_ms

    def next_timer_ms(self):
        t = self.link.next_timer_ms() if self.link is not None else None
        r = self._retry_at
        if r is not None and (t is None or r < t):
            return r
        return t

    def events(self):
        ev = self._ev
        self._ev = []
        return ev

    def send(self, payload, now_ms, channel=0):
        """Queue a message on `channel` (0: the application's); it is
        delivered exactly once unless the device itself is reset.  Raises
        QueueFull when nothing fits."""
        if self._closing:
            raise UsageError("session is closing")
        if self.state == "up" and not self._pending:
            try:
                self.link.send(payload, now_ms, channel)
                self.counters["sent"] += 1
                return
            except QueueFull:
                pass
        if len(self._pending) >= self.max_pending:
            raise QueueFull("device send queue full")
        self._pending.append((bytes(payload), channel))
        self.counters["sent"] += 1

    def pending(self):
        """Messages not yet acknowledged by the service (in order)."""
        out = [e[0] for e in self._pending]
        if self.link is not None and self.link.channel is not None:
            out = self.link.unacked() + out
        return out

    def close(self):
        self._closing = True
        if self.link is not None:
            self.link.close(CLOSE_NORMAL)

    # -- internals ----------------------------------------------------------------
    def _fail(self, e, now_ms):
        """Anything raised inside a session ends it (never the device)."""
        if isinstance(e, MemoryError):
            self._harvest()
            gc.collect()
        if isinstance(e, AlertError):
            reason = "tls alert %d" % e.description
        else:
            reason = "%s %s" % (type(e).__name__, e)
        self._down(reason, now_ms, tls_failed=self.state == "handshaking")

    def _harvest(self):
        """Take over the unacknowledged messages of the link being dropped."""
        link = self.link
        if link is not None and link.channel is not None:
            self._pending = link.unacked(True) + self._pending
            self._id = link.first_unacked_id()  # §4: the next session's base
        if link is not None:
            self.counters["retransmissions"] += link.counters["retransmissions"]
        self.link = None
        self.tls = None

    def _down(self, reason, now_ms, tls_failed=False, auth=False):
        was_up = self.state == "up"
        self._harvest()
        self.state = "closed" if self._closing else "waiting"
        self.last_error = reason
        if tls_failed:
            self.counters["tls_failures"] += 1
            self._ev.append(("failed", reason))
        else:
            self._ev.append(("down", reason))
        if not self._closing:
            if auth:  # §5: only an authenticated end resets the backoff
                self._backoff = self.retry_ms
            if was_up:
                self.counters["reconnects"] += 1
            self._retry_at = now_ms + self._backoff
            self._backoff = min(self._backoff * 2, self.retry_max_ms)

    def _pump(self, now_ms):
        link = self.link
        if link is None:
            return
        for ev in link.events():
            kind = ev[0]
            if kind == "flight":
                self._on_flight(ev[1], now_ms)
                if self.link is None:
                    return
            elif kind == "message":
                mid = ev[3]
                m = self._mark
                if mid is not None and m is not None and mid >> 32 == m >> 32 and mid < m:
                    self.counters["duplicates"] += 1  # §4: delivered in an earlier session
                    continue
                if mid is not None:
                    self._mark = mid + 1
                self.counters["received"] += 1
                # channel 0 as before; another channel tagged with its number
                self._ev.append(("message", ev[1]) if not ev[2] else ("message", ev[1], ev[2]))
            elif kind == "delivered":
                self.counters["delivered"] += 1
                self._ev.append(ev)
            elif kind == "rekey":
                link.close(CLOSE_REKEY)  # finish what is in flight, then a new session
            elif kind == "error" or kind == "closed":
                self._down(ev[1], now_ms, auth=kind == "closed" or ev[1] == "reset")
                return
        self._flush_pending(now_ms)

    def _on_flight(self, data, now_ms):
        tls = self.tls
        if tls is None:
            return  # the channel is up: nothing more for TLS
        n = tls.discarded
        try:
            self._feed()
            tls.receive(data, now_ms)  # the longest step (see the docstring)
            self._feed()
        except AlertError as e:
            alert = tls.data_to_send()
            if alert:
                try:
                    self.link.send_flight(alert, now_ms)
                    self.link.datagrams(now_ms)  # the alert goes out once, best effort
                except UsageError:
                    pass
            self._down("tls alert %d" % e.description, now_ms, tls_failed=True)
            return
        out = tls.data_to_send()
        if tls.discarded != n or (not out and not tls.connected and tls.discard()):
            self.link.refuse_flight(now_ms)  # not for our ClientHello: as if never received
            self.counters["stale_flights"] += 1
            return
        if tls.connected:
            from atls.channel import key_block  # loaded once TLS is done, like the channel

            if out:
                self.link.send_flight(out, now_ms)
            self.link.start_channel(key_block(tls), tls.suite, self._id, self.hello)
            self.state = "up"
            self.suite = tls.suite
            self.tls = tls = None  # its secrets go; only the channel keys stay
            gc.collect()
            self._feed()
            self.handshakes_ok += 1
            self.last_handshake_ms = now_ms - self._hs_started
            self._ev.append(("up", self.suite))
        elif tls.state == CLOSED:  # closed without an error (close_notify)
            self._down("tls closed", now_ms, tls_failed=True)
        elif out:
            self.link.send_flight(out, now_ms)

    def _flush_pending(self, now_ms):
        if self.state != "up":
            return
        while self._pending:
            e = self._pending[0]
            try:
                self.link.send(e[0], now_ms, e[1])
            except QueueFull:
                return
            self._pending.pop(0)
