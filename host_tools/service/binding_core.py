"""What the HTTP and CoAP bindings share (host_tools.service.bindings runs
the listeners): sessions by token, handshake flights, packet batches,
rejects and counters, on the service's public API.

Both listeners share the service's OpenSSL context, session table (ids,
limits, identity replacement), registry, application and counters with the
UDP listener; the wire conventions are host_tools.http_binding's
(docs/BINDINGS.md).

Theory of operation
-------------------
* A session is created by a request that carries a TLS flight and no session
  reference (no `atls-session` cookie; CoAP: a POST to /.well-known/atls).
  The service makes a normal `Session` (same id space as UDP sessions, its
  `addr` is ("http:<ip>", port) or ("coap:<ip>", port) so it never matches a
  UDP peer) and a `_Peer` here holding a 128-bit random token: the cookie
  value (HTTP) or the last Location-Path segment (CoAP).
* Handshake: the request body goes to ServerConnection.feed() unmodified and
  OpenSSL's answer is the response body unmodified (§9.1).  A body after
  which OpenSSL has nothing to say and is not done is not a whole flight and
  fails the session (§9.1: a body holds a full flight).  A repeated flight
  (the client retrying after a lost response) gets the stored answer again
  instead of being fed twice.  When TLS is done, Service.established()
  exports the key block and starts the session's server Link.
* Data: a body is a batch of length-prefixed link packets; they go through
  Service.deliver() exactly like UDP datagrams (replay window, acks,
  exactly-once, the app's on_message), and whatever the link transmits -
  now or later from the service's timers - lands in the peer's outbox
  (`Session.sink`), which the next response drains.  The outbox is bounded
  (identical retransmissions are stored once; beyond `_OUTBOX` the oldest
  go, the link retransmits them).  A request may wait (`ATLS-Wait`, CoAP
  `wait=`) up to max_wait_ms for the outbox to fill.
* A batch for a session the binding does not have (or without a cookie) is
  refused unknown_session carrying the RESETs UDP would send for its
  session ids (resets(): Service.unknown_answer, only ids the service does
  not hold, only for sealed packets longer than the RESET): the device's
  link ends on the token, nothing else from the path can end it
  (docs/PROTOCOL.md §5, docs/BINDINGS.md).
* Everything malformed is answered with a 4xx / 4.xx and a short reason
  (body "reason: detail", HTTP header ATLS-Error), counted in
  counters[<binding>]["rejected"][reason]; only a bad handshake flight
  for a session ends that session, nothing else touches any session.
* Bounds (issue 14, docs/SECURITY.md): at most 2 requests of a session wait
  at a time (a third answers the oldest at once); at most
  limits.max_pending_polls requests wait in the whole service (beyond it a
  request is answered at once); at most limits.max_requests_per_ip requests
  of one client address are in progress (beyond it: busy).  A refusal for
  rate or busy says when to come back (RETRY_AFTER_S: HTTP Retry-After,
  CoAP Max-Age).
* Anti-amplification over CoAP (UDP, so the source may be spoofed): the
  answer to a first flight from an address not yet validated may be at most
  `amplification` (3) times the request (estimated with COAP_OVERHEAD bytes
  of header and options each way).  A larger answer (a certificate flight)
  is not sent: the session ends and the client gets 4.01 with an Echo
  option (RFC 9175 §2.4), a MAC of its address and the time (echo(), valid
  ECHO_S to 2 x ECHO_S, no state); the same request with that Echo comes
  from a validated address and gets the whole answer.  HTTP runs over TCP,
  whose handshake validates the address.
* Half-open sessions end after the link's handshake_timeout_ms; established
  ones after the service's idle_timeout_s (Service.tick) or when their link
  ends.
"""

import asyncio
import hashlib
import hmac
import os
import time
from collections import deque

from atls import protocol
from host_tools.http_binding import MAX_BODY, FramingError, pack_packets, unpack_packets
from host_tools.service.tls_engine import TLSError

__all__ = ["BindingCore", "Reject", "REASONS", "RETRY_AFTER_S"]

_OUTBOX = 256  # packets kept for a peer between requests
_OUTSTANDING = 2  # waiting requests per session
_MAX_RESETS = 8  # session ids answered in one batch for an unknown session

# reason -> (HTTP status, CoAP code name)
REASONS = {
    "bad_method": (405, "METHOD_NOT_ALLOWED"),
    "bad_content_type": (415, "UNSUPPORTED_CONTENT_FORMAT"),
    "too_big": (413, "REQUEST_ENTITY_TOO_LARGE"),
    "missing_cookie": (400, "BAD_REQUEST"),
    "unknown_session": (403, "NOT_FOUND"),
    "empty_flight": (400, "BAD_REQUEST"),
    "handshake_failed": (400, "BAD_REQUEST"),
    "bad_framing": (400, "BAD_REQUEST"),
    "not_established": (409, "CONFLICT"),
    "established": (409, "CONFLICT"),
    "rate": (429, "TOO_MANY_REQUESTS"),
    "busy": (503, "SERVICE_UNAVAILABLE"),
}


COAP_OVERHEAD = 64  # CoAP header + options of a first-flight request/answer (bytes, estimate)
ECHO_S = 30  # an Echo value is valid for its 30 s slot and the next one
RETRY_AFTER_S = {"rate": 2, "busy": 10}  # Retry-After / Max-Age (s) of a refusal


class Reject(Exception):
    """A refused request; `packets`: link packets the refusal carries (the
    RESETs of an unknown_session batch, docs/BINDINGS.md), else empty."""

    def __init__(self, reason, detail="", packets=()):
        Exception.__init__(self, "%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail
        self.packets = list(packets)
        self.retry_after = RETRY_AFTER_S.get(reason)  # seconds, or None


class _Peer:
    """Binding state of one service Session."""

    def __init__(self, token, sess):
        self.token = token
        self.sess = sess
        self.outbox = deque()
        self.event = asyncio.Event()
        self.last_req = None  # last handshake flight and our answer to it
        self.last_resp = None
        self.dropped = 0
        self.waiters = deque()  # one Event per waiting request, oldest first

    def push(self, pkt):
        ob = self.outbox
        if pkt in ob:  # a retransmission of something not yet fetched
            return
        if len(ob) >= _OUTBOX:
            ob.popleft()
            self.dropped += 1
        ob.append(pkt)
        self.event.set()

    def drain(self, max_bytes):
        out = []
        size = 0
        ob = self.outbox
        while ob and (not out or size + 2 + len(ob[0]) <= max_bytes):
            p = ob.popleft()
            size += 2 + len(p)
            out.append(p)
        if not ob:
            self.event.clear()
        return out


class BindingCore:
    """What HTTP and CoAP share: sessions by token, flights, packet batches,
    rejects and counters (service.counters[kind])."""

    def __init__(self, service, kind, max_body=MAX_BODY, max_wait_ms=25000):
        self.service = service
        self.kind = kind
        self.max_body = max_body
        self.max_wait_ms = max_wait_ms
        self.peers = {}  # token -> _Peer
        self.counters = service.counters.setdefault(
            kind,
            {
                "requests": 0,
                "flights": 0,
                "batches": 0,
                "sessions_total": 0,
                "packets_in": 0,
                "packets_out": 0,
                "outbox_dropped": 0,
                "polls_cut": 0,
                "rejected": {},
            },
        )
        self.inflight = {}  # client ip -> requests in progress
        self._echo_key = os.urandom(32)
        service.counters.setdefault("pending_polls", 0)  # shared by HTTP and CoAP

    def enter(self, ip):
        """A request from `ip` starts (call leave(ip) when it ends); busy
        beyond limits.max_requests_per_ip."""
        n = self.inflight.get(ip, 0)
        if n >= self.service.limits["max_requests_per_ip"]:
            self.reject("busy", "too many requests from this address")
        self.inflight[ip] = n + 1

    def echo(self, host, port, slot=None):
        """The Echo value for an address (module doc)."""
        slot = int(time.time() // ECHO_S) if slot is None else slot
        msg = ("%s|%s|%d" % (host, port, slot)).encode()
        return hmac.new(self._echo_key, msg, hashlib.sha256).digest()[:8]

    def echo_ok(self, value, host, port):
        """True if `value` is an Echo this binding gave `host`:`port` lately."""
        if not value:
            return False
        slot = int(time.time() // ECHO_S)
        return any(hmac.compare_digest(value, self.echo(host, port, s)) for s in (slot, slot - 1))

    def too_big_for(self, request_len, answer_len):
        """True if an answer of answer_len bytes to a request of request_len
        would exceed the amplification limit (unvalidated address)."""
        factor = self.service.limits["amplification"]
        return answer_len + COAP_OVERHEAD > factor * (request_len + COAP_OVERHEAD // 4)

    def unvalidated(self, peer):
        """End a session whose answer may not go to an unvalidated address."""
        self.counters["echo_challenges"] = self.counters.get("echo_challenges", 0) + 1
        self._end(peer, "address not validated (CoAP Echo)")

    def leave(self, ip):
        n = self.inflight.pop(ip, 1) - 1
        if n > 0:
            self.inflight[ip] = n

    def reject(self, reason, detail="", packets=()):
        r = self.counters["rejected"]
        r[reason] = r.get(reason, 0) + 1  # counted, not logged: a flood must not fill logs
        raise Reject(reason, detail, packets)

    def check_rate(self, ip):
        if not self.service.rate_ok(("%s:%s" % (self.kind, ip), 0), self.service.now_ms()):
            self.reject("rate")

    def _find(self, token):
        """The live session of `token`, or None (an ended one is forgotten)."""
        peer = self.peers.get(token) if token else None
        if peer is not None and not self.service.is_live(peer.sess):
            del self.peers[token]
            return None
        return peer

    def lookup(self, token):
        peer = self._find(token)
        if peer is None:
            self.reject("unknown_session", "no such session")
        return peer

    def _open(self, addr):
        svc = self.service
        if not svc.admit(addr):
            svc.drop("busy")
            self.reject("busy", "too many sessions")
        now = svc.now_ms()
        sess = svc.new_session(addr, now)
        token = os.urandom(16).hex()
        peer = _Peer(token, sess)
        sess.sink = peer.push
        self.peers[token] = peer
        self.counters["sessions_total"] += 1
        return peer

    def flight(self, token, body, addr):
        """A handshake flight; returns (peer, answer flight, created)."""
        self.counters["flights"] += 1
        if not body:
            self.reject("empty_flight", "a request body holds a whole TLS flight")
        created = token is None
        if created:
            peer = self._open(addr)
        else:
            peer = self.lookup(token)
            if body == peer.last_req:  # a retry after a lost answer: never feed TLS twice
                return peer, peer.last_resp, False
            if peer.sess.link.channel is not None:
                self.reject("established", "handshake already complete: post link packets")
        sess = peer.sess
        svc = self.service
        now = svc.now_ms()
        sess.last_seen_ms = now
        try:
            out = sess.tls.feed(body)
            if not out and not sess.tls.done:
                raise TLSError("incomplete flight")
        except TLSError as e:
            svc.handshake_failed(sess, e)
            self._end(peer, "handshake failed")
            self.reject("handshake_failed", e.alert_name or e.reason)
        if sess.tls.done:
            svc.established(sess, now)
            if not svc.is_live(sess):  # TLS done, but no registered identity: refused
                self._end(peer, "not authenticated")
                self.reject("handshake_failed", "not registered")
        peer.last_req, peer.last_resp = body, out
        return peer, out, created

    def resets(self, body):
        """The RESETs answering a batch for a session the binding does not
        have: per session id in the batch that the service does not hold
        either, the RESET with that id's token when UDP would send it (a
        sealed packet longer than the RESET: Service.unknown_answer,
        docs/PROTOCOL.md §5); at most _MAX_RESETS ids.  Nothing for an id
        the service holds (its token must not leak) and no unauthenticated
        ERRORs (a device ignores them)."""
        try:
            packets = unpack_packets(body)
        except FramingError:
            return []
        svc = self.service
        out = {}  # sid -> answer
        for p in packets:
            try:
                ptype, sid = protocol.peek(p)
            except protocol.Drop:
                continue
            if not sid or sid in out or sid in svc.sessions or len(out) >= _MAX_RESETS:
                continue
            a = svc.unknown_answer(ptype, sid, p)
            if a is not None and len(a) > protocol.HEADER_LEN + 1:  # ERROR(reset) || token
                out[sid] = a
        return list(out.values())

    async def batch(self, token, body, wait_ms=0):
        """A batch of link packets; returns the answer batch (bytes).  For a
        session the service no longer has: unknown_session carrying resets()."""
        self.counters["batches"] += 1
        peer = self._find(token)
        if peer is None:
            packets = self.resets(body)
            if packets:
                self.counters["resets"] = self.counters.get("resets", 0) + len(packets)
                self.reject("unknown_session", "no such session", packets)
            if token is None:
                self.reject("missing_cookie", "link packets need the session cookie")
            self.reject("unknown_session", "no such session")
        sess = peer.sess
        if sess.link.channel is None:
            self.reject("not_established", "finish the handshake first")
        try:
            packets = unpack_packets(body)
        except FramingError as e:
            self.reject("bad_framing", str(e))
        self.counters["packets_in"] += len(packets)
        svc = self.service
        if packets:
            svc.deliver(sess, packets, svc.now_ms())
            if svc.is_live(sess):
                # the app's answers were queued at a later tick than deliver's `now`:
                # send them in this response rather than from the next timer tick
                svc.transmit(sess, svc.now_ms())
        else:
            sess.last_seen_ms = svc.now_ms()
        wait_ms = min(max(int(wait_ms or 0), 0), self.max_wait_ms)
        if wait_ms and not peer.outbox and svc.is_live(sess):
            await self._wait(peer, wait_ms)
        out = peer.drain(self.max_body)
        self.counters["packets_out"] += len(out)
        self.counters["outbox_dropped"] += peer.dropped
        peer.dropped = 0
        return peer, pack_packets(out)

    async def _wait(self, peer, wait_ms):
        """Wait for the outbox, a newer request of the session (beyond
        _OUTSTANDING) or wait_ms; not at all past max_pending_polls."""
        c = self.service.counters
        if c["pending_polls"] >= self.service.limits["max_pending_polls"]:
            self.counters["polls_cut"] += 1
            return
        cut = asyncio.Event()
        peer.waiters.append(cut)
        if len(peer.waiters) > _OUTSTANDING:
            peer.waiters[0].set()
            self.counters["polls_cut"] += 1
        c["pending_polls"] += 1
        tasks = [asyncio.ensure_future(peer.event.wait()), asyncio.ensure_future(cut.wait())]
        try:
            await asyncio.wait(tasks, timeout=wait_ms / 1000, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            c["pending_polls"] -= 1
            peer.waiters.remove(cut)

    def _end(self, peer, reason):
        self.peers.pop(peer.token, None)
        peer.event.set()
        self.service.end(peer.sess, reason)

    def sweep(self):
        """Forget ended sessions; end handshakes older than the link's
        handshake_timeout_ms."""
        svc = self.service
        now = svc.now_ms()
        limit = svc.link_config.handshake_timeout_ms
        for token, peer in list(self.peers.items()):
            sess = peer.sess
            if not svc.is_live(sess):
                del self.peers[token]
                peer.event.set()
            elif sess.link.channel is None and now - sess.started_ms > limit:
                self._end(peer, "handshake timeout")
