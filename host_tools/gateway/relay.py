"""Keyless relay: the gateway forwards one device's ATLS traffic to the
service over HTTP(S) or CoAP (docs/BINDINGS.md) instead of UDP.

The device keeps speaking the link protocol over the radio (docs/PROTOCOL.md:
flights in HS/HS_END fragments, HS_ACK, then DATA/ACK/CLOSE); the service's
HTTP/CoAP bindings want whole TLS flights, then batches of link packets.  The
relay translates between the two framings and holds no keys: it never sees a
TLS secret, never calls start_channel and never opens a sealed packet.

Theory of operation (one `RelayFlow` per device, at most one `Session` at a
time, one HttpTransport / CoapTransport per session; the service is a
`config.Target`, the relay settings are config.DEFAULT_RELAY's keys):

* Handshake.  A server-role `Link` is used only for flight transport: it
  reassembles the device's fragments (the device's first flight has session
  id 0), acknowledges them and cuts the service's answers into fragments of
  the radio MTU, with the link's retransmissions and HS_ACK healing.  Each
  complete device flight is POSTed unmodified (`post_flight`); the service's
  answer names the session id (`tr.sid`), which becomes the relay link's id
  before anything is sent to the device, so the device adopts the service's
  id exactly as over UDP.  Nothing from the relay link reaches the device
  while the id is unknown or a flight is being posted (its HS_ACK would carry
  no valid id; the device's own retransmissions cover that time).  An empty
  answer to a device flight means the service finished TLS: the session is
  open (the service must not send post-handshake flights such as tickets,
  exactly as over UDP).
* Channel.  DATA/ACK/CLOSE packets from the device are queued (bounded,
  oldest dropped: the link retransmits) and POSTed untouched in batches
  (`post_packets`) by a sender task; the packets in each answer go to the
  device untouched.  A poller task keeps a long poll open (`wait_ms`) for
  packets the service sends on its own (application messages from timers,
  retransmissions).  Late fragments of the device's last flight still go to
  the relay link (it repeats its HS_ACK).
* Errors (link protocol v2, docs/PROTOCOL.md §5): the relay cannot end a
  device's session.  Once the channel is up it never makes up an ERROR: an
  `unknown_session` refusal of a batch ends the relay session and forwards
  the service's RESET it carried (if any) unchanged; so does one of the long
  poll (nothing to forward: a poll holds no packet).  A device packet for a
  session id the relay does not have (a gateway restart, or after the above)
  is dropped; a sealed one longer than a RESET is posted alone without a
  cookie (`_probe`, one at a time, at most one per `_PROBE_GAP_S`), and the
  service answers with its RESET only if it does not hold that id either;
  otherwise the device's own peer timeout finds the dead path.  During a
  handshake a refused or failed flight ends the relay session with an ERROR
  carrying the id the device has (the service's, once a flight with it went
  down; else 0, a hint the device backs off on): `handshake_failed` for 4xx
  handshake_failed, `busy` for rate/busy/network trouble, `unknown_session`
  otherwise.  Other batch errors drop the batch (the links retransmit).  A
  new first flight (session id 0 with a different fragment 0, or after the
  handshake) replaces the session: the device restarted.
* Bounded: one session and at most two requests per device, `queue` packets
  waiting, relay sessions idle for `idle_timeout_s` end.  Counters per kind
  ("http", "coap") in the gateway's stats under "relay"; nothing is logged
  per packet and nothing secret exists here to log.
"""

import asyncio
import time
from collections import deque

from atls import protocol, wire
from atls.errors import ATLSError
from atls.link import Link, LinkConfig
from host_tools.atls_http_client import CoapTransport, HttpTransport, TransportError

__all__ = ["Clients", "RelayFlow", "Session", "new_counters", "HANDSHAKE", "OPEN", "DEAD"]

_PROBE_GAP_S = 0.5  # at most one probe for an unknown session per device per this long
_RESET_LEN = protocol.HEADER_LEN + 1 + protocol.RESET_TOKEN_LEN
_PLACEHOLDER_SID = 0xFFFF  # the relay link's id until the service names one (never sent)
_FATAL = ("unknown_session", "not_established", "missing_cookie")
_TRANSIENT = ("busy", "rate", "network", "timeout", "http")
HANDSHAKE, OPEN, DEAD = 0, 1, 2  # Session.state


def _now_ms():
    return int(time.monotonic() * 1000)


def new_counters():
    return {
        "sessions": 0,
        "active": 0,
        "handshakes": 0,
        "flights_up": 0,
        "flights_down": 0,
        "hs_packets_down": 0,
        "batches": 0,
        "packets_up": 0,
        "packets_down": 0,
        "polls": 0,
        "queue_dropped": 0,
        "error_packets": 0,
        "resets_down": 0,
        "probes": 0,
        "errors": {},
        "drops": {},
    }


def _bump(d, key, n=1):
    d[key] = d.get(key, 0) + n


class Clients:
    """One aiohttp session and one aiocoap context for all relays."""

    def __init__(self, max_conns=256):
        self.max_conns = max_conns
        self._http = None
        self._coap = None
        self._coap_lock = None

    def http(self):
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),  # HttpTransport handles the cookie
                connector=aiohttp.TCPConnector(limit=self.max_conns),
            )
        return self._http

    async def coap(self):
        if self._coap is None:
            if self._coap_lock is None:
                self._coap_lock = asyncio.Lock()
            async with self._coap_lock:
                if self._coap is None:
                    import aiocoap

                    self._coap = await aiocoap.Context.create_client_context(transports=["udp6"])
        return self._coap

    async def close(self):
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None


class RelayFlow:
    """One device's flow toward an HTTP/CoAP service.  The gateway calls
    send(packet) with each ATLS packet from the device (marker, size, pairing
    and rate already checked) and close(); `down(flow, packet)` is the
    gateway's path back to the device."""

    def __init__(self, key, target, down, clients, counters, mtu):
        self.key = key
        self.target = target
        self.kind = target.kind
        self.down_cb = down
        self.clients = clients
        self.c = counters
        self.mtu = mtu
        self.last = 0.0
        self.sess = None
        self.closed = False
        self._probing = False
        self._probe_at = -_PROBE_GAP_S
        self._probe_task = None

    def down(self, packet):
        self.down_cb(self, packet)

    def send(self, pkt):
        if self.closed:
            return
        if len(pkt) < 5:  # shorter than any packet a device sends (§1)
            return _bump(self.c["drops"], "truncated")
        # the clear header (§1); the gateway checked the marker.  Not protocol.peek:
        # its version/type drops would change what the relay forwards
        t = pkt[0] & 7
        sid = (pkt[1] << 8) | pkt[2]
        s = self.sess
        if sid == 0:
            if t > protocol.HS_END or pkt[3] != 0:  # §1: sid 0 only on fragments of flight 0
                return _bump(self.c["drops"], "unknown_session")
            if s is None or not s.continues(pkt):
                if s is not None:
                    _bump(self.c["errors"], "device_restarted")
                    s.stop()
                s = self.sess = Session(self)
            s.from_device(pkt, t)
        elif s is not None and s.sid == sid:
            s.from_device(pkt, t)
        else:
            # a session this relay does not have (e.g. after a gateway restart):
            # never answered here - the gateway cannot end a session (§5, §6)
            _bump(self.c["drops"], "unknown_session")
            self._probe(pkt, t)

    def _probe(self, pkt, t):
        """Ask the service about a sealed packet of a session this relay does
        not have: a batch without cookie, which the service answers with its
        RESET when it does not hold the session either (forwarded unchanged);
        otherwise nothing happens and the device's own timeouts find the dead
        path.  One probe at a time, at most one per _PROBE_GAP_S, only for
        packets longer than a RESET (never more bytes down than up)."""
        sealed = protocol.DATA <= t <= protocol.CLOSE or t == protocol.CDATA
        now = time.monotonic()
        if not sealed or len(pkt) <= _RESET_LEN or self._probing:
            return
        if now - self._probe_at < _PROBE_GAP_S:
            return
        self._probe_at = now
        self._probing = True
        self._probe_task = asyncio.ensure_future(self._post_probe(bytes(pkt)))

    async def _post_probe(self, pkt):
        tr = None
        try:
            tr = await self.transport()
            self.c["probes"] += 1
            await tr.post_packets([pkt])
        except TransportError as e:
            packets = [p for p in e.packets if p[1:3] == pkt[1:3]]
            if packets and not self.closed and self.sess is None:
                self.c["resets_down"] += len(packets)
                for p in packets:
                    self.c["packets_down"] += 1
                    self.down(p)
        except Exception as e:  # network trouble: the device's timeouts cover it
            _bump(self.c["errors"], "probe_" + _net_reason(e))
        finally:
            self._probing = False
            if tr is not None:
                await tr.close()

    async def transport(self):
        """A new transport toward the service (no session yet)."""
        tgt = self.target
        o = tgt.opts
        if tgt.kind == "http":
            return HttpTransport(
                tgt.url, ssl=tgt.ssl, session=self.clients.http(), timeout_s=o["timeout_s"]
            )
        return CoapTransport(tgt.url, context=await self.clients.coap(), timeout_s=o["timeout_s"])

    def error(self, sid, reason):
        self.c["error_packets"] += 1
        self.down(wire.encode(protocol.ERROR, sid, bytes((reason,))))

    def close(self):
        self.closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self.sess is not None:
            self.sess.stop()


class Session:
    def __init__(self, flow):
        self.flow = flow
        self.c = flow.c
        o = self.opts = flow.target.opts
        mtu = flow.mtu
        cfg = LinkConfig(
            mtu=mtu,
            rto_ms=o["rto_ms"],
            rto_max_ms=o["rto_max_ms"],
            handshake_timeout_ms=o["handshake_timeout_ms"],
            max_flight=min(o["max_flight"], (mtu - 5) * 255),
            rx_mtu=max(1280, mtu),
        )
        self.link = Link("server", cfg, _PLACEHOLDER_SID)
        self.sid = None
        self.state = HANDSHAKE
        self.busy = False  # a flight is being posted
        self.frag0 = None
        self.tr = None
        self.upq = deque()
        self.wake = asyncio.Event()
        self.tasks = []
        self.timer = None
        self.last_up = time.monotonic()
        self.c["sessions"] += 1
        self.c["active"] += 1

    # -- from the device ------------------------------------------------------------
    def continues(self, pkt):
        """Is this sid-0 fragment part of this session's first flight?"""
        if self.state != HANDSHAKE:
            return False
        if pkt[4] == 0 and self.frag0 is not None:
            return bytes(pkt[5:]) == self.frag0
        return True

    def from_device(self, pkt, t):
        self.last_up = time.monotonic()
        if t <= protocol.HS_ACK:
            if t <= protocol.HS_END and pkt[3] == 0 and pkt[4] == 0 and self.frag0 is None:
                self.frag0 = bytes(pkt[5:])
            self.link.receive(pkt, _now_ms())
            self._events()
            self._flush()
        elif t <= protocol.CLOSE or t == protocol.CDATA:  # sealed: untouched to the service
            if len(self.upq) >= self.opts["queue"]:
                self.upq.popleft()
                self.c["queue_dropped"] += 1
            self.upq.append(bytes(pkt))
            self.wake.set()
        else:
            _bump(self.c["drops"], "bad_type")

    # -- relay link: flights ------------------------------------------------------
    def _events(self):
        for ev in self.link.events():
            if self.state != HANDSHAKE:
                continue  # after the handshake the link only repeats HS_ACKs
            if ev[0] == "flight" and not self.busy:
                self.busy = True
                self._spawn(self._post_flight(bytes(ev[1])))
            elif ev[0] == "error":
                self.fail(None, "link_" + str(ev[1]))
                return

    def _flush(self):
        """Send what the relay link has for the device, re-arm its timer."""
        if self.state == DEAD or self.busy or self.sid is None:
            return
        now = _now_ms()
        for d in self.link.datagrams(now):
            self.c["hs_packets_down"] += 1
            self.flow.down(d)
        self._events()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        t = self.link.next_timer_ms()
        if t is not None and self.state != DEAD:
            self.timer = asyncio.get_running_loop().call_later(
                max(0, t - now) / 1000 + 0.001, self._flush
            )

    async def _transport(self):
        if self.tr is None:
            self.tr = await self.flow.transport()
        return self.tr

    async def _post_flight(self, flight):
        try:
            tr = await self._transport()
            self.c["flights_up"] += 1
            try:
                answer = await tr.post_flight(flight)
            except (TransportError, asyncio.TimeoutError):
                raise
            except Exception:  # e.g. a pooled connection the server closed: once more
                await asyncio.sleep(0.05)  # (the service answers a repeated flight again)
                answer = await tr.post_flight(flight)
        except TransportError as e:
            code = (
                protocol.HANDSHAKE_FAILED
                if e.reason == "handshake_failed"
                else protocol.BUSY
                if e.reason in _TRANSIENT
                else protocol.UNKNOWN_SESSION
            )
            return self.fail(code, "flight_" + str(e.reason))
        except Exception as e:
            return self.fail(protocol.BUSY, "flight_" + _net_reason(e))
        if self.state == DEAD:
            return
        sid = tr.sid
        if sid is None or not 0 < sid <= 0xFFFF or (self.sid is not None and sid != self.sid):
            return self.fail(protocol.UNKNOWN_SESSION, "no_session_id")
        self.sid = self.link.session_id = sid
        self.busy = False
        if answer:
            self.c["flights_down"] += 1
            try:
                self.link.send_flight(answer, _now_ms())
            except ATLSError:  # larger than max_flight: the device could not take it
                return self.fail(protocol.HANDSHAKE_FAILED, "flight_too_big")
        else:  # the service finished TLS: the channel runs end to end
            self.state = OPEN
            self.c["handshakes"] += 1
            self._spawn(self._sender())
            self._spawn(self._poller())
        self._flush()

    # -- channel: packets both ways -------------------------------------------------
    def _deliver(self, packets):
        for p in packets:
            if self.state == DEAD:
                return
            self.c["packets_down"] += 1
            self.flow.down(p)

    async def _sender(self):
        tr = self.tr
        while self.state == OPEN:
            if not self.upq:
                self.wake.clear()
                await self.wake.wait()
                continue
            n = min(len(self.upq), self.opts["max_batch"])
            batch = [self.upq.popleft() for _ in range(n)]
            try:
                answer = await tr.post_packets(batch)
            except TransportError as e:
                if e.reason in _FATAL:  # the service's RESET (if any) goes down untouched
                    return self._lost("batch_" + str(e.reason), e.packets)
                _bump(self.c["errors"], "batch_" + str(e.reason))
                await asyncio.sleep(0.2)  # dropped: the links retransmit
                continue
            except Exception as e:
                _bump(self.c["errors"], "batch_" + _net_reason(e))
                await asyncio.sleep(0.2)
                continue
            self.c["batches"] += 1
            self.c["packets_up"] += n
            self._deliver(answer)

    async def _poller(self):
        tr = self.tr
        backoff = 0.5
        while self.state == OPEN:
            if time.monotonic() - self.last_up > self.opts["idle_timeout_s"]:
                _bump(self.c["errors"], "idle")
                return self.stop()
            try:
                answer = await tr.post_packets([], wait_ms=self.opts["poll_ms"])
                backoff = 0.5
            except TransportError as e:
                if e.reason in _FATAL:  # e.g. the service's idle timeout: the device's
                    return self._lost("poll_" + str(e.reason), e.packets)  # next batch
                _bump(self.c["errors"], "poll_" + str(e.reason))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 8.0)
                continue
            except Exception as e:
                _bump(self.c["errors"], "poll_" + _net_reason(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 8.0)
                continue
            self.c["polls"] += 1
            self._deliver(answer)

    # -- ending -------------------------------------------------------------------------
    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task):
        if task in self.tasks:
            self.tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:  # a bug: end cleanly
            _bump(self.c["errors"], "internal_" + type(task.exception()).__name__)
            self.stop()

    def _lost(self, reason, packets):
        """The service no longer has the session: forward what it answered (its
        RESET, docs/PROTOCOL.md §5) to the device unchanged and end the relay
        session.  Nothing else is sent: only the service can end the device's
        session."""
        _bump(self.c["errors"], reason)
        self._deliver(packets)
        self.c["resets_down"] += len(packets)
        self.stop()

    def fail(self, code, reason):
        """End the session; with an ERROR code, tell the device (it re-handshakes)."""
        if self.state == DEAD:
            return
        _bump(self.c["errors"], reason)
        sid = self.sid or 0
        self.stop()
        if code:
            self.flow.error(sid, code)

    def stop(self):
        if self.state == DEAD:
            return
        self.state = DEAD
        self.c["active"] -= 1
        self.wake.set()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            me = asyncio.current_task()
        except RuntimeError:
            me = None
        for t in list(self.tasks):
            if t is not me:
                t.cancel()
        if self.flow.sess is self:
            self.flow.sess = None


def _net_reason(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    return "network"
