"""The UDP service core: sessions keyed by the link header's session id, one
server Link (firmware/atls/link.py, the device's own code) and one OpenSSL
ServerConnection per session, the application callbacks and the counters.

Datagrams are classified by their clear header only (atls.protocol.peek)
before a session is chosen; a packet for no session is answered with
ERROR(unknown_session), a first flight beyond the limits with ERROR(busy)
(docs/PROTOCOL.md §5).  Each source address (and each HTTP/CoAP client) has a
token bucket (host_tools.ratelimit).  Once TLS is done the exporter's key
block starts the session's channel; the application sees messages, never
handshake bytes.

The public methods beside the asyncio protocol are what the HTTP/CoAP
bindings (host_tools.service.bindings) use to run sessions of their own in
the same table: rate_ok, at_capacity, new_session, deliver, transmit,
handshake_failed, established, end, drop, now_ms.

Application API: an object with on_connect(session), on_message(session,
payload) and on_close(session, reason); `session.send(payload)` queues a
message to the device.  Logs are JSON lines on stderr and never contain keys
or PSKs; `Service.counters` are the counters --stats writes.
"""

import asyncio
import os
import time
from collections import deque

from cryptography import x509

from atls import protocol, wire
from atls.link import Link, LinkConfig, QueueFull
from host_tools.common import log
from host_tools.ratelimit import TokenBuckets
from host_tools.service.tls_engine import SUITES, ServerConnection, TLSError

__all__ = ["Service", "Session", "EchoApp", "DEFAULT_LIMITS"]

DEFAULT_LIMITS = {
    "max_half_open": 64,
    "idle_timeout_s": 300,
    "rate_per_s": 200,
    "rate_burst": 400,
    "max_sessions": 10000,
    "app_queue": 256,
}


class Session:
    """One device session as the application sees it."""

    def __init__(self, service, sid, addr, link, tls, now):
        self.service = service
        self.sid = sid
        self.addr = addr
        self.link = link
        self.tls = tls
        self.identity = None
        self.suite = None
        self.started_ms = now
        self.last_seen_ms = now
        self.handshake_ms = None
        self.backlog = deque()  # app messages waiting for window space
        self.seen_drops = {}  # link drop counters already added to the service's
        self.frag0 = None  # first fragment of the device's first flight (ClientHello)
        self.sink = None  # callable(packet): HTTP/CoAP sessions' packets go here, not UDP

    @property
    def up(self):
        return self.link.channel is not None and self.link.state == "open"

    def send(self, payload):
        """Queue a message to the device (exactly-once delivery)."""
        if len(self.backlog) >= self.service.limits["app_queue"]:
            raise QueueFull("application queue full for session %d" % self.sid)
        self.backlog.append(bytes(payload))
        self.service.counters["messages_out"] += 1
        self.flush(self.service.now_ms())

    def flush(self, now):
        """Move queued app messages into the link while its window has room."""
        while self.backlog and self.up:
            try:
                self.link.send(self.backlog[0], now)
            except QueueFull:
                return
            self.backlog.popleft()


class EchoApp:
    """Sends every message straight back to the device that sent it."""

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        session.send(payload)

    def on_close(self, session, reason):
        pass


class Service(asyncio.DatagramProtocol):
    """tls_config: a ServerConfig; link_config: atls.link.LinkConfig; limits:
    overrides of DEFAULT_LIMITS; app: the application (EchoApp); registry:
    the Registry whose PSK table tls_config reads; bindings: keyword
    arguments of service.bindings.Bindings (HTTP/CoAP listeners) or None."""

    def __init__(
        self, tls_config, link_config=None, limits=None, app=None, registry=None, bindings=None
    ):
        self.ctx = tls_config.build()
        self.link_config = link_config or LinkConfig(mtu=1200)
        self.limits = dict(DEFAULT_LIMITS, **(limits or {}))
        self.app = app or EchoApp()
        self.registry = registry
        self.binding_config = bindings
        self.sessions = {}  # sid -> Session
        self.pending = {}  # addr -> sid of a session still in its first flight
        # per source: the table forgets everyone rather than grow past 4 x max_sessions
        self.rate = TokenBuckets(
            self.limits["rate_per_s"],
            self.limits["rate_burst"],
            4 * self.limits["max_sessions"] + 1,
        )
        self.transport = None
        self._t0 = time.monotonic()
        self.counters = {
            "datagrams_in": 0,
            "datagrams_out": 0,
            "sessions_active": 0,
            "sessions_total": 0,
            "handshakes_ok": 0,
            "handshakes_failed": 0,
            "messages_in": 0,
            "messages_out": 0,
            "drops": {},
        }

    def now_ms(self):
        return int((time.monotonic() - self._t0) * 1000)

    def drop(self, reason, n=1):
        d = self.counters["drops"]
        d[reason] = d.get(reason, 0) + n

    def rate_ok(self, key, now):
        """Take a token from `key`'s bucket (a UDP address, or a binding's
        client); False when it is empty."""
        return self.rate.allow(key, now / 1000.0)

    # -- asyncio protocol -----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.counters["datagrams_in"] += 1
        now = self.now_ms()
        if not self.rate_ok(addr, now):
            return self.drop("rate")
        try:
            ptype, sid = protocol.peek(data)
        except protocol.Drop as e:
            return self.drop(e.reason)
        if sid == 0:
            sess = self._first_flight(addr, ptype, data, now)
            if sess is None:
                return
        else:
            sess = self.sessions.get(sid)
            if sess is None or sess.addr != addr:
                self.drop("unknown_session")
                if ptype != protocol.ERROR:
                    self._send_error(sid, protocol.UNKNOWN_SESSION, addr)
                return
        self.deliver(sess, (data,), now)

    def deliver(self, sess, packets, now):
        """Feed link packets from the session's peer (one UDP datagram, or a
        batch from an HTTP/CoAP request), run the app, transmit the answers."""
        sess.last_seen_ms = now
        before = sum(sess.link.drops.values())
        for data in packets:
            sess.link.receive(data, now)
        self._absorb_drops(sess, before)
        self._pump(sess, now)
        self.transmit(sess, now)

    def _absorb_drops(self, sess, before):
        """Add the link's new drops (by reason) to the service counters."""
        if sum(sess.link.drops.values()) != before:
            seen = sess.seen_drops
            for reason, n in sess.link.drops.items():
                if n > seen.get(reason, 0):
                    self.drop(reason, n - seen.get(reason, 0))
                    seen[reason] = n

    def _first_flight(self, addr, ptype, data, now):
        # an HS/HS_END fragment: header, flight, index (docs/PROTOCOL.md §2)
        if ptype not in (protocol.HS, protocol.HS_END) or len(data) < 6:
            self.drop("unknown_session")
            return None
        sid = self.pending.get(addr)
        if sid is not None and sid in self.sessions:
            sess = self.sessions[sid]
            # fragment 0 of a *different* first flight: the device restarted its
            # handshake (e.g. it rebooted); a retransmission repeats the same bytes
            if data[4] == 0 and sess.frag0 is not None and bytes(data[5:]) != sess.frag0:
                self.end(sess, "device restarted its handshake")
            else:
                if data[4] == 0 and sess.frag0 is None:
                    sess.frag0 = bytes(data[5:])
                return sess
        if self.at_capacity():
            self.drop("busy")
            self._send_error(0, protocol.BUSY, addr)
            return None
        sess = self.new_session(addr, now)
        if data[4] == 0:
            sess.frag0 = bytes(data[5:])
        self.pending[addr] = sess.sid
        return sess

    def at_capacity(self):
        """True when no new session may start (max_half_open, max_sessions)."""
        half_open = sum(1 for s in self.sessions.values() if not s.up)
        return (
            half_open >= self.limits["max_half_open"]
            or len(self.sessions) >= self.limits["max_sessions"]
        )

    def new_session(self, addr, now):
        """A new half-open session with a fresh session id (any transport)."""
        sid = self._new_sid()
        link = Link("server", self.link_config, sid)
        sess = Session(self, sid, addr, link, ServerConnection(self.ctx), now)
        self.sessions[sid] = sess
        self.counters["sessions_total"] += 1
        self.counters["sessions_active"] = len(self.sessions)
        return sess

    def _new_sid(self):
        while True:
            sid = int.from_bytes(os.urandom(2), "big")
            if sid and sid not in self.sessions:
                return sid

    def _pump(self, sess, now):
        for ev in sess.link.events():
            kind = ev[0]
            if kind == "flight":
                self._on_flight(sess, ev[1], now)
            elif kind == "message":
                self.counters["messages_in"] += 1
                try:
                    self.app.on_message(sess, ev[1])
                except QueueFull as e:
                    log("app_queue_full", sid=sess.sid, error=str(e))
                except Exception as e:  # the application must not take the service down
                    log("app_error", sid=sess.sid, error=repr(e))
            elif kind in ("error", "closed"):
                self.end(sess, "link %s: %s" % (kind, ev[1]))
                return
        sess.flush(now)

    def _on_flight(self, sess, data, now):
        if sess.link.channel is not None:
            return
        try:
            out = sess.tls.feed(data)
        except TLSError as e:
            self.handshake_failed(sess, e)
            if e.outgoing:
                try:
                    sess.link.send_flight(e.outgoing, now)
                    self.transmit(sess, now)
                except Exception:
                    pass
            sess.link.abort(protocol.HANDSHAKE_FAILED)
            self.transmit(sess, now)
            self.end(sess, "handshake failed")
            return
        if out:
            sess.link.send_flight(out, now)
        if sess.tls.done:
            self.established(sess, now)

    def handshake_failed(self, sess, e):
        """Count and log a TLS failure (e: TLSError); the caller ends the session."""
        self.counters["handshakes_failed"] += 1
        log(
            "handshake_failed",
            sid=sess.sid,
            peer=_peer(sess.addr),
            reason=e.reason,
            alert=e.alert_name,
        )

    def established(self, sess, now):
        """TLS is done: identity, exporter -> channel keys, app on_connect."""
        info = sess.tls.info()
        sess.suite = info["suite"]
        if info["psk_identity"] is not None:
            sess.identity = info["psk_identity"].decode("utf-8", "replace")
        elif info["client_cert"] is not None:
            cn = info["client_cert"].subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
            sess.identity = cn[0].value if cn else "certificate"
        sess.link.start_channel(sess.tls.export(), SUITES[sess.suite])  # the ATLS key block
        sess.handshake_ms = now - sess.started_ms
        self.pending.pop(sess.addr, None)
        self.counters["handshakes_ok"] += 1
        for other in [
            s
            for s in self.sessions.values()
            if s is not sess and s.identity == sess.identity and s.identity
        ]:
            self.end(other, "replaced by a new session")
        log(
            "handshake_ok",
            sid=sess.sid,
            peer=_peer(sess.addr),
            identity=sess.identity,
            suite=sess.suite,
            mode=info["mode"],
            group=info["group"],
            ms=sess.handshake_ms,
        )
        try:
            self.app.on_connect(sess)
        except Exception as e:
            log("app_error", sid=sess.sid, error=repr(e))

    def end(self, sess, reason):
        """Forget a session (no-op if it already ended); the app's on_close."""
        if self.sessions.pop(sess.sid, None) is None:
            return
        if self.pending.get(sess.addr) == sess.sid:
            del self.pending[sess.addr]
        self.counters["sessions_active"] = len(self.sessions)
        log("session_end", sid=sess.sid, identity=sess.identity, reason=reason)
        try:
            self.app.on_close(sess, reason)
        except Exception as e:
            log("app_error", sid=sess.sid, error=repr(e))

    def is_live(self, sess):
        """True while `sess` is in the session table (it has not ended)."""
        return self.sessions.get(sess.sid) is sess

    def _send(self, data, addr):
        if self.transport is not None:
            self.transport.sendto(data, addr)
            self.counters["datagrams_out"] += 1

    def _send_error(self, sid, reason, addr):
        self._send(wire.encode(protocol.ERROR, sid, bytes([reason])), addr)

    def transmit(self, sess, now):
        """Send what the session's link has to send now: UDP to its address,
        or into its sink (HTTP/CoAP sessions)."""
        for d in sess.link.datagrams(now):
            if sess.sink is not None:
                sess.sink(d)
            else:
                self._send(d, sess.addr)

    def tick(self):
        """Timers: retransmissions, acks, handshake and idle timeouts."""
        now = self.now_ms()
        idle = self.limits["idle_timeout_s"] * 1000
        for sess in list(self.sessions.values()):
            self.transmit(sess, now)
            self._pump(sess, now)
            if sess.sid in self.sessions and now - sess.last_seen_ms > idle:
                self.end(sess, "idle")

    async def run_timers(self, period_ms=10):
        while True:
            await asyncio.sleep(period_ms / 1000)
            self.tick()


def _peer(addr):
    return "%s:%d" % (addr[0], addr[1])
