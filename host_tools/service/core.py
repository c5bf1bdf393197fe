"""The UDP service core: sessions keyed by the link header's session id, one
server Link (firmware/atls/link.py, the device's own code) and one OpenSSL
ServerConnection per session, the application callbacks and the counters.

Datagrams are classified by their clear header (atls.protocol.peek) before
a session is chosen; a packet for no session gets ERROR(unknown_session), a
first flight beyond the limits ERROR(busy) (docs/PROTOCOL.md §5).  Sessions
start only from a complete ClientHello, half-open ones are capped (per IP
too; the oldest is evicted), an unvalidated address gets at most 3x its
bytes (service.admission, docs/SECURITY.md), each source has a token bucket
(host_tools.ratelimit).  The exporter's key block starts the channel; the
application sees messages, never handshake bytes.  The HTTP/CoAP bindings
use rate_ok, at_capacity, new_session, deliver, transmit, handshake_failed,
established, end, drop, now_ms to run sessions in the same table.

Application API (on_connect, on_message, on_close, session.send,
last_msg_id, on_channel_message for channels 2-255, hold_acks,
on_delivered): service.sessions.  Link protocol v2 (docs/PROTOCOL.md §4-§5):
device messages are de-duplicated by id across sessions and restarts
(service.dedupe.PeerTable, state in `state_dir`), a new session of the same
identity takes over the old one's unacknowledged and queued messages, a
sealed packet for an unknown session id gets RESET.  The timer tick visits
only sessions whose deadline came (service.timers).  Logs are JSON lines on
stderr without keys or PSKs; `Service.counters` are what --stats writes.
"""

import asyncio
import time
from collections import OrderedDict

from atls import protocol, wire
from atls.link import Link, LinkConfig
from host_tools.common import log
from host_tools.ratelimit import TokenBuckets
from host_tools.service import hold
from host_tools.service.admission import DEFAULT_LIMITS, FirstFlights, Intake, busiest_ip
from host_tools.service.counters import new_counters
from host_tools.service.dedupe import PeerTable
from host_tools.service.errors import ConfigError
from host_tools.service.registry import authenticate, still_registered
from host_tools.service.routing import SidSpace, Taken
from host_tools.service.sessions import Continuity, EchoApp, Session
from host_tools.service.timers import Timers
from host_tools.service.tls_engine import SUITES, ServerConnection, TLSError
from host_tools.udp_reader import BatchReader

__all__ = ["Service", "Session", "EchoApp", "DEFAULT_LIMITS"]


class Service(asyncio.DatagramProtocol, Continuity):
    """tls_config: a ServerConfig; link_config: atls.link.LinkConfig; limits:
    overrides of DEFAULT_LIMITS; app: the application (EchoApp); registry:
    the Registry whose PSK table tls_config reads; bindings: keyword
    arguments of service.bindings.Bindings (HTTP/CoAP listeners) or None.
    ConfigError if tls_config enables tickets (a resumed session would carry
    no device identity)."""

    store = None  # shared session state (service.state_store.StateStore.attach)

    def __init__(
        self,
        tls_config,
        link_config=None,
        limits=None,
        app=None,
        registry=None,
        bindings=None,
        state_dir=None,
    ):
        if tls_config.tickets:
            raise ConfigError(
                "tickets must be 0: a resumed session is not bound to a device identity"
            )
        tls_config.hide_unknown_psk = True  # unknown identity fails like a wrong binder
        self.ctx = tls_config.build()
        self.psks = tls_config.psks
        self.link_config = link_config or LinkConfig(mtu=1200)
        self.limits = dict(DEFAULT_LIMITS, **(limits or {}))
        self.app = app or EchoApp()
        self.registry = registry
        self.binding_config = bindings
        self.sessions = {}  # sid -> Session
        self.by_key = {}  # device identity -> {sid: Session} of its authenticated sessions
        self.timers = Timers(self)  # which sessions the tick visits
        self.sids = SidSpace()  # the ids this worker issues (service.routing; cli sets it)
        self.draining = False  # graceful shutdown: no new session (service.worker)
        self.pending = {}  # addr -> sid of a session still in its first flight
        self.half_open = OrderedDict()  # sid -> Session before TLS is done, oldest first
        self.per_ip = {}  # ip -> [sessions, half-open sessions]
        lim = self.limits
        self.first = FirstFlights(
            lim["max_first_flights"],
            lim["max_first_flights_per_ip"],
            lim["first_flight_timeout_ms"],
            self.link_config.max_flight,
            self.drop,
        )
        # per source: the table forgets everyone rather than grow past 4 x max_sessions
        self.rate = TokenBuckets(lim["rate_per_s"], lim["rate_burst"], 4 * lim["max_sessions"] + 1)
        if state_dir is None and registry is not None:
            state_dir = registry.path.parent / "service-state"
        self.peers = PeerTable(state_dir, 4 * lim["max_sessions"] + 1)
        self.intake = Intake(lim, self.drop, self.psks)  # first flights waiting for TLS work
        self.reader = None
        self.transport = None
        self._t0 = time.monotonic()
        self._registry_at = 0
        self.counters = new_counters()

    def now_ms(self):
        return int((time.monotonic() - self._t0) * 1000)

    def drop(self, reason, n=1, table="drops"):
        d = self.counters[table]
        d[reason] = d.get(reason, 0) + n

    def rate_ok(self, key, now):
        """Take a token from `key`'s bucket (a UDP address, or a binding's
        client); False when it is empty."""
        return self.rate.allow(key, now / 1000.0)

    # -- asyncio protocol -----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.reader = BatchReader.attach(transport, self.datagram_received, self.start_queued)

    def datagram_received(self, data, addr):
        self.counters["datagrams_in"] += 1
        self.counters["bytes_in"] += len(data)
        try:
            ptype, sid = protocol.peek(data)
        except protocol.Drop as e:
            return self.drop(e.reason)
        if not sid and addr not in self.pending and self.intake.refuses(addr, data, self.now_ms()):
            return  # before any other work: a full queue for that IP or a replay (admission)
        now = self.now_ms()
        if not self.rate_ok(addr, now):
            return self.drop("rate")
        if sid == 0:
            sess, packets = self._first_flight(addr, ptype, data, now)
            if sess is None:
                if self.reader is None or not self.reader.batching:
                    self.start_queued(now)
                return
        else:
            sess = self.sessions.get(sid)
            if sess is None and self.store is not None:  # held by another worker?
                sess = self.store.adopt(self, sid, addr, now)
                if sess is not None:  # replaced like any session of its identity
                    self.by_key.setdefault(sess.key, {})[sid] = sess
            if sess is not None and sess.addr != addr:
                return self._moved(sess, ptype, sid, data, addr, now)
            if sess is None:
                self.drop("unknown_session")  # another worker's id: never our RESET
                self._unknown(ptype, sid, data, addr, known=not self.sids.mine(sid))
                return
            sess.budget.validated = True  # our session id came back from that address
            packets = (data,)
        self.deliver(sess, packets, now)

    def deliver(self, sess, packets, now):
        """Feed link packets from the session's peer (one UDP datagram, or a
        batch from an HTTP/CoAP request), run the app, transmit the answers.
        Only packets the link accepts keep the session alive."""
        link = sess.link
        before = sum(link.drops.values())
        for data in packets:
            if not sess.budget.validated and sess.sink is None:
                self.counters["unvalidated_bytes_in"] += len(data)
            sess.budget.received(len(data))
            link.receive(data, now)
        dropped = sum(link.drops.values()) - before
        if dropped < len(packets):
            sess.last_seen_ms = now
        if dropped:
            self._absorb_drops(sess)
        if self.store is not None:  # committed before the app sees a message
            self.store.received(self, sess, packets, now)
            if not self.is_live(sess):
                return  # forgotten here (record gone or not ours): nothing was committed
        self._pump(sess, now)
        self.transmit(sess, now)
        self.timers.schedule(sess, now)

    def _absorb_drops(self, sess):
        """Add the link's new drops (by reason) to the service counters."""
        seen = sess.seen_drops
        for reason, n in sess.link.drops.items():
            if n > seen.get(reason, 0):
                self.drop(reason, n - seen.get(reason, 0))
                seen[reason] = n

    def _first_flight(self, addr, ptype, data, now):
        """(session, packets) for a datagram with session id 0, or (None, None).
        A session starts only from a complete ClientHello (admission)."""
        # an HS/HS_END fragment of flight 0: header, flight, index (docs/PROTOCOL.md §2)
        if ptype not in (protocol.HS, protocol.HS_END) or len(data) < 6 or data[3] != 0:
            self.drop("unknown_session")
            return None, None
        old = self.sessions.get(self.pending.get(addr))  # its half-open session
        if old is not None and not self.first.restarts(addr, data, old.frag0):
            return old, (data,)  # its ClientHello again: a retransmission
        packets = self.first.add(addr, data, now)
        # TLS work waits for its turn (start_queued); a new ClientHello from the
        # address supersedes its half-open session, whose flights are stale now
        if packets and self.intake.put(addr, packets, now) and old and self.intake.valid(packets):
            self.drop("superseded")
            self.end(old, "superseded by a new ClientHello")
        return None, None

    def start_queued(self, now=None):
        """Start sessions from queued first flights (admission.Intake)."""
        self.intake.run(self._start, self.now_ms() if now is None else now)

    def _start(self, addr, packets, now):
        if not self.admit(addr):
            self.drop("busy")
            return self._send_error(0, protocol.BUSY, addr)
        sess = self.new_session(addr, now)
        sess.frag0 = bytes(packets[0][5:])
        self.pending.setdefault(addr, sess.sid)  # a half-open one not superseded keeps it
        self.deliver(sess, packets, now)

    def at_capacity(self):
        """True when no new session may start: max_sessions reached and no
        half-open session to evict."""
        return len(self.sessions) >= self.limits["max_sessions"] and not self.half_open

    def admit(self, addr):
        """Make room for a new session from `addr` (UDP address or a
        binding's (client, port)): under max_half_open(_per_ip) the oldest
        half-open session (of that IP) is evicted; False (busy) when
        max_sessions(_per_ip) is reached by established sessions."""
        lim = self.limits
        if self.store is not None and not self.store.admit():
            return False  # no new state while it cannot be stored
        ip = addr[0]
        if self.draining:
            return False
        counts = self.per_ip.get(ip, (0, 0))
        if counts[1] >= lim["max_half_open_per_ip"] or counts[0] >= lim["max_sessions_per_ip"]:
            if not self._evict(ip):
                return False
        if len(self.half_open) >= lim["max_half_open"] or len(self.sessions) >= lim["max_sessions"]:
            if not self._evict(None):
                return False
        return True

    def _evict(self, ip):
        ip = busiest_ip(self.half_open, self.per_ip) if ip is None else ip  # global cap
        for sess in self.half_open.values():
            if ip is None or sess.addr[0] == ip:
                self.drop("evicted")
                self.end(sess, "evicted: half-open limit")
                return True
        return False

    def new_session(self, addr, now):
        """A new half-open session with a fresh session id (any transport);
        call admit(addr) first."""
        taken = self.sessions if self.store is None else Taken(self.sessions, self.store.exists)
        sid = self.sids.new(taken)
        link = Link("server", self.link_config, sid)
        sess = Session(self, sid, addr, link, ServerConnection(self.ctx), now)
        if getattr(self.app, "hold_acks", False):
            hold.start(sess)  # ACK a message once the app's awaitable is done
        self.sessions[sid] = sess
        self.half_open[sid] = sess
        self.timers.schedule(sess, now)
        c = self.per_ip.setdefault(addr[0], [0, 0])
        c[0] += 1
        c[1] += 1
        self.counters["sessions_total"] += 1
        self._count()
        return sess

    def _count(self):
        self.counters["sessions_active"] = len(self.sessions)
        self.counters["half_open"] = len(self.half_open)

    def _pump(self, sess, now):
        for ev in sess.link.events():
            kind = ev[0]
            if kind == "flight":
                self._on_flight(sess, ev[1], now)
                if not self.is_live(sess):
                    return
            elif kind == "message":
                self._message(sess, ev[1], ev[2], ev[3])
            elif kind == "hello":
                sess.device_hello = bytes(ev[1])
                if self.registry is not None:  # its firmware version (SQLite registry)
                    self.registry.touch(sess.identity, firmware=sess.device_hello)
            elif kind == "delivered":
                sess.delivered(ev[1])
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
        self.drop(e.alert_name or "tls_error", table="handshake_failures")
        log(
            "handshake_failed",
            sid=sess.sid,
            peer=_peer(sess.addr),
            reason=e.reason,
            alert=e.alert_name,
        )

    def established(self, sess, now):
        """TLS is done: authenticate (registered PSK identity or registered
        certificate, else the session ends), exporter -> channel keys, app
        on_connect."""
        info = sess.tls.info()
        sess.suite = info["suite"]
        auth = authenticate(info, self.psks, self.registry)
        sess.handshake_ms = now - sess.started_ms
        self.pending.pop(sess.addr, None)
        self._settle(sess)
        if auth is None:
            return self._refuse(sess, now, "not_registered", "not registered")
        sess.auth, sess.identity, sess.credential = auth
        if sess.sink is None:  # a UDP address that completed a handshake: admission
            self.intake.validated(sess.addr, now)
        # §4: the session of the same identity it replaces hands over what the
        # device has not acknowledged; ids go on from the first of those
        base, moved = self.peers.take_held(sess.key)  # from a session that ended before
        same = self.by_key.get(sess.key, {}).values()  # the store may have forgotten some
        for other in sorted([s for s in same if self.is_live(s)], key=lambda s: s.started_ms):
            if other.link.channel is not None and base is None:
                base = other.link.first_unacked_id()
            moved += other.take_unsent()
            self.end(other, "replaced by a new session")
        self.by_key[sess.key] = {sess.sid: sess}
        if base is None or base >> 32 != self.peers.epoch:
            base = self.peers.next_out(sess.key)
        grant = getattr(self.app, "granted_channels", None)  # bit n: channel n (2 = updates)
        sess.granted = grant(sess) if grant is not None else 0x04
        hello = bytes((sess.granted,)) + self.peers.token(sess.sid)  # granted || reset token
        sess.link.start_channel(sess.tls.export(), SUITES[sess.suite], base, hello)  # key block
        sess.backlog.extend(moved)
        refused = self.store is not None and self.store.create(sess, now)  # reason or None
        if refused:
            return self._refuse(sess, now, refused, "state not stored: " + refused)
        self.counters["messages_moved"] += len(moved)
        self.counters["handshakes_ok"] += 1
        log(
            "handshake_ok",
            sid=sess.sid,
            peer=_peer(sess.addr),
            identity=sess.identity,
            auth=sess.auth,
            suite=sess.suite,
            mode=info["mode"],
            group=info["group"],
            ms=sess.handshake_ms,
        )
        try:
            self.app.on_connect(sess)
        except Exception as e:
            log("app_error", sid=sess.sid, error=repr(e))

    def _refuse(self, sess, now, reason, why):
        """Fail a handshake TLS finished: counted by `reason`, ERROR to the device."""
        self.counters["handshakes_failed"] += 1
        self.drop(reason, table="handshake_failures")
        log("handshake_failed", sid=sess.sid, peer=_peer(sess.addr), reason=why)
        sess.link.abort(protocol.HANDSHAKE_FAILED)
        self.transmit(sess, now)
        self.end(sess, why)

    def _settle(self, sess):
        """`sess` is no longer half-open."""
        if self.half_open.pop(sess.sid, None) is not None:
            self.per_ip[sess.addr[0]][1] -= 1
            self._count()

    def end(self, sess, reason):
        """Forget a session (no-op if it already ended); the app's on_close."""
        if self.store is not None and not self.store.ended(self, sess):
            return  # another worker has moved it on: only forgotten here
        if self.sessions.pop(sess.sid, None) is None:
            return
        self._settle(sess)
        c = self.per_ip[sess.addr[0]]
        c[0] -= 1
        if not c[0]:
            del self.per_ip[sess.addr[0]]
        if self.pending.get(sess.addr) == sess.sid:
            del self.pending[sess.addr]
        self._count()
        same = self.by_key.get(sess.key)
        if same is not None and same.pop(sess.sid, None) is not None and not same:
            del self.by_key[sess.key]
        if sess.auth is not None and sess.link.channel is not None:
            self.peers.ended(sess.key, sess.link.first_unacked_id(True))
            if reason != "credential revoked":  # kept for the device's next session
                self.peers.hold(sess.key, sess.link.first_unacked_id(), sess.take_unsent())
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
            self.counters["bytes_out"] += len(data)

    def _send_error(self, sid, reason, addr):
        self._send(wire.encode(protocol.ERROR, sid, bytes([reason])), addr)

    def transmit(self, sess, now):
        """Send what the session's link has to send now: UDP to its address
        within the anti-amplification budget, or into its sink (HTTP/CoAP
        sessions)."""
        out = sess.link.datagrams(now)
        if self.store is not None:  # what the datagrams used is committed first
            out = self.store.sync(self, sess, out, now)
        if sess.sink is not None:
            for d in out:
                sess.sink(d)
            return
        b = sess.budget
        if b.validated and not b.held:
            for d in out:
                self._send(d, sess.addr)
            return
        sent = b.bytes_out
        b.send(out, lambda d: self._send(d, sess.addr))
        if not b.validated:
            c = self.counters
            c["unvalidated_bytes_out"] += b.bytes_out - sent
            c["max_amplification"] = max(c["max_amplification"], round(b.ratio, 3))

    def tick(self):
        """Timers: retransmissions, acks, handshake deadlines (from creation),
        idle timeouts, first-flight expiry, registry reload; only the
        sessions whose deadline came (service.timers)."""
        now = self.now_ms()
        idle = self.limits["idle_timeout_s"] * 1000
        hs_limit = self.link_config.handshake_timeout_ms
        self.first.expire(now)
        if self.store is not None:
            self.store.tick(self, now)
        self.start_queued(now)
        if self.registry is not None and now >= self._registry_at:
            self._registry_at = now + 1000 * self.limits["registry_check_s"]
            self._check_registry()
        for sess in self.timers.due(self.sessions, now):
            self.transmit(sess, now)
            self._pump(sess, now)
            if sess.sid not in self.sessions:
                continue
            if sess.handshake_ms is None and now - sess.started_ms > hs_limit:
                self.end(sess, "handshake timeout")
            elif now - sess.last_seen_ms > idle:
                self.end(sess, "idle")
            else:
                self.timers.schedule(sess, now)

    def _check_registry(self):
        """Reload a changed registry; end sessions whose PSK or certificate
        is no longer registered to their device (revocation)."""
        if not self.registry.changed():
            return
        try:
            self.registry.reload()
        except ConfigError as e:
            log("registry_error", error=str(e))
            return
        log("registry_reloaded")
        for sess in list(self.sessions.values()):
            if sess.auth is not None and not still_registered(sess, self.psks, self.registry):
                self.end(sess, "credential revoked")

    async def run_timers(self, period_ms=10):
        took = 0.0  # timers take at most a third of the time, whatever the number of sessions
        while True:
            await asyncio.sleep(max(period_ms / 1000, 2 * took))
            t0 = time.monotonic()
            self.tick()
            took = time.monotonic() - t0


def _peer(addr):
    return "%s:%s" % (addr[0], addr[1])
