"""ATLS over HTTP/1.1 (draft-friel-tls-atls §9) and over CoAP (the latest
draft's CoAP binding), plugged into a running `host_tools.service.Service`.

Both listeners share the service's OpenSSL context, session table (ids,
limits, identity replacement), registry, application and counters with the
UDP listener; the wire conventions are in docs/BINDINGS.md and, for the
client side, in host_tools/atls_http_client.py.

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
* Everything malformed is answered with a 4xx / 4.xx and a short reason
  (body "reason: detail", HTTP header ATLS-Error), counted in
  counters[<binding>]["rejected"][reason]; only a bad handshake flight
  for a session ends that session, nothing else touches any session.
* Half-open sessions end after the link's handshake_timeout_ms; established
  ones after the service's idle_timeout_s (Service.tick) or when their link
  ends.
"""

import asyncio
import os
from collections import deque

from host_tools import service as _svc
from host_tools.http_binding import (
    CF_DATA,
    CF_FLIGHT,
    COAP_PATH,
    COOKIE,
    CT_DATA,
    ERROR_HEADER,
    FLIGHT_TYPES,
    HTTP_PATHS,
    MAX_BODY,
    SID_HEADER,
    SID_OPTION,
    WAIT_HEADER,
    WAIT_QUERY,
    FramingError,
    pack_packets,
    unpack_packets,
)
from host_tools.tls_server import TLSError

__all__ = ["Bindings", "BindingCore", "Reject", "REASONS", "HTTP_PATHS", "COAP_PATH"]

_OUTBOX = 256  # packets kept for a peer between requests
_SWEEP_S = 0.25

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


class Reject(Exception):
    def __init__(self, reason, detail=""):
        Exception.__init__(self, "%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail


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
                "rejected": {},
            },
        )

    def reject(self, reason, detail=""):
        r = self.counters["rejected"]
        r[reason] = r.get(reason, 0) + 1  # counted, not logged: a flood must not fill logs
        raise Reject(reason, detail)

    def check_rate(self, ip):
        if not self.service._rate_ok(("%s:%s" % (self.kind, ip), 0), self.service.now_ms()):
            self.reject("rate")

    def lookup(self, token):
        peer = self.peers.get(token) if token else None
        if peer is None or self.service.sessions.get(peer.sess.sid) is not peer.sess:
            if peer is not None:
                del self.peers[token]
            self.reject("unknown_session", "no such session")
        return peer

    def _open(self, addr):
        svc = self.service
        if svc.at_capacity():
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
        peer.last_req, peer.last_resp = body, out
        return peer, out, created

    async def batch(self, token, body, wait_ms=0):
        """A batch of link packets; returns the answer batch (bytes)."""
        self.counters["batches"] += 1
        peer = self.lookup(token)
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
            if svc.sessions.get(sess.sid) is sess:
                # the app's answers were queued at a later tick than deliver's `now`:
                # send them in this response rather than from the next timer tick
                svc._transmit(sess, svc.now_ms())
        else:
            sess.last_seen_ms = svc.now_ms()
        wait_ms = min(max(int(wait_ms or 0), 0), self.max_wait_ms)
        if wait_ms and not peer.outbox and svc.sessions.get(sess.sid) is sess:
            try:
                await asyncio.wait_for(peer.event.wait(), wait_ms / 1000)
            except asyncio.TimeoutError:
                pass
        out = peer.drain(self.max_body)
        self.counters["packets_out"] += len(out)
        self.counters["outbox_dropped"] += peer.dropped
        peer.dropped = 0
        return peer, pack_packets(out)

    def _end(self, peer, reason):
        self.peers.pop(peer.token, None)
        peer.event.set()
        self.service._end(peer.sess, reason)

    def sweep(self):
        """Forget ended sessions; end handshakes older than the link's
        handshake_timeout_ms."""
        svc = self.service
        now = svc.now_ms()
        limit = svc.link_config.handshake_timeout_ms
        for token, peer in list(self.peers.items()):
            sess = peer.sess
            if svc.sessions.get(sess.sid) is not sess:
                del self.peers[token]
                peer.event.set()
            elif sess.link.channel is None and now - sess.started_ms > limit:
                self._end(peer, "handshake timeout")


def _client_ip(request):
    return request.remote or "?"


class _Http:
    def __init__(self, core, ssl_context):
        self.core = core
        self.https = ssl_context is not None

    def _error(self, r):
        from aiohttp import web

        return web.Response(
            status=REASONS[r.reason][0],
            text=str(r) + "\n",
            headers={ERROR_HEADER: r.reason, "Cache-Control": "no-store"},
        )

    async def _body(self, request):
        core = self.core
        if request.content_length is not None and request.content_length > core.max_body:
            core.reject("too_big", "body over %d bytes" % core.max_body)
        body = bytearray()
        while True:
            chunk = await request.content.read(core.max_body + 1 - len(body))
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > core.max_body:
                core.reject("too_big", "body over %d bytes" % core.max_body)

    async def handle(self, request):
        from aiohttp import web

        core = self.core
        core.counters["requests"] += 1
        try:
            if request.method != "POST":
                core.reject("bad_method", "POST only")
            ip = _client_ip(request)
            core.check_rate(ip)
            ctype = request.content_type.lower()
            if ctype not in FLIGHT_TYPES and ctype != CT_DATA:
                core.reject("bad_content_type", "use %s or %s" % (FLIGHT_TYPES[0], CT_DATA))
            body = await self._body(request)
            token = request.cookies.get(COOKIE)
            if ctype == CT_DATA:
                if token is None:
                    core.reject("missing_cookie", "link packets need the session cookie")
                try:
                    wait = int(request.headers.get(WAIT_HEADER, "0"))
                except ValueError:
                    wait = 0
                peer, out = await core.batch(token, body, wait)
                resp = web.Response(body=out, content_type=CT_DATA)
            else:
                peer_addr = (
                    request.transport.get_extra_info("peername") if request.transport else None
                )
                port = peer_addr[1] if peer_addr else 0
                peer, out, created = core.flight(token, body, ("http:" + ip, port))
                resp = web.Response(body=out, content_type=ctype)
                if created:
                    resp.set_cookie(
                        COOKIE,
                        peer.token,
                        path="/",
                        httponly=True,
                        samesite="Strict",
                        secure=self.https,
                    )
            resp.headers[SID_HEADER] = str(peer.sess.sid)
            resp.headers["Cache-Control"] = "no-store"
            return resp
        except Reject as r:
            return self._error(r)


class _CoapSite:
    """The CoAP root resource (aiocoap): /.well-known/atls and the session
    resources below it.  Built lazily so aiocoap loads only when used."""

    @staticmethod
    def make(core):
        from aiocoap import Code, Message, resource
        from aiocoap.numbers.optionnumbers import OptionNumber

        sid_opt = OptionNumber(SID_OPTION)

        def error(r):
            code = getattr(Code, REASONS[r.reason][1])
            m = Message(code=code, payload=str(r).encode()[:120])
            if r.reason == "too_big":
                m.opt.size1 = core.max_body
            return m

        class Site(resource.Resource, resource.PathCapable):
            async def render_to_pipe(self, pipe):
                req = pipe.request
                b1 = req.opt.block1
                if b1 is not None and b1.start + len(req.payload) > core.max_body:
                    # refuse before aiocoap assembles more blocks (RFC 7959 §2.9.3)
                    core.counters["requests"] += 1
                    try:
                        core.reject("too_big", "body over %d bytes" % core.max_body)
                    except Reject as r:
                        pipe.add_response(error(r), is_last=True)
                    return
                return await resource.Resource.render_to_pipe(self, pipe)

            async def render(self, request):
                core.counters["requests"] += 1
                path = tuple(request.opt.uri_path)
                try:
                    if path[:2] != COAP_PATH or len(path) > 3:
                        return Message(code=Code.NOT_FOUND)
                    if request.code != Code.POST:
                        core.reject("bad_method", "POST only")
                    host, _, port = request.remote.hostinfo.rpartition(":")
                    core.check_rate(host)
                    cf = request.opt.content_format
                    cf = int(cf) if cf is not None else None
                    if cf not in (CF_FLIGHT, CF_DATA):
                        core.reject("bad_content_type", "use %d or %d" % (CF_FLIGHT, CF_DATA))
                    if len(request.payload) > core.max_body:
                        core.reject("too_big", "body over %d bytes" % core.max_body)
                    token = path[2] if len(path) == 3 else None
                    if cf == CF_DATA:
                        if token is None:
                            core.reject("missing_cookie", "post to the session resource")
                        wait = 0
                        for q in request.opt.uri_query:
                            if q.startswith(WAIT_QUERY + "="):
                                try:
                                    wait = int(q[len(WAIT_QUERY) + 1 :])
                                except ValueError:
                                    pass
                        peer, out = await core.batch(token, request.payload, wait)
                        resp = Message(code=Code.CHANGED, payload=out, content_format=CF_DATA)
                    else:
                        try:
                            port = int(port)
                        except ValueError:
                            port = 0
                        peer, out, created = core.flight(
                            token, request.payload, ("coap:" + host, port)
                        )
                        resp = Message(
                            code=Code.CREATED if created else Code.CHANGED,
                            payload=out,
                            content_format=CF_FLIGHT,
                        )
                        if created:
                            resp.opt.location_path = COAP_PATH + (peer.token,)
                    resp.opt.add_option(
                        sid_opt.create_option(value=peer.sess.sid.to_bytes(2, "big"))
                    )
                    return resp
                except Reject as r:
                    return error(r)

        return Site()


class Bindings:
    """Starts/stops the HTTP and CoAP listeners for one Service."""

    def __init__(
        self,
        service,
        http_listen=None,
        coap_listen=None,
        ssl_context=None,
        max_body=MAX_BODY,
        max_wait_ms=25000,
    ):
        self.service = service
        self.http_listen = http_listen
        self.coap_listen = coap_listen
        self.ssl_context = ssl_context
        self.http = BindingCore(service, "http", max_body, max_wait_ms) if http_listen else None
        self.coap = BindingCore(service, "coap", max_body, max_wait_ms) if coap_listen else None
        self._runner = None
        self._coap_ctx = None
        self._sweeper = None

    async def start(self):
        """Listen; returns {"http": "host:port", "coap": "host:port"} bound."""
        addrs = {}
        if self.http is not None:
            from aiohttp import web

            h = _Http(self.http, self.ssl_context)
            app = web.Application(client_max_size=self.http.max_body + 1)
            for path in HTTP_PATHS:
                app.router.add_route("*", path, h.handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(
                self._runner, self.http_listen[0], self.http_listen[1], ssl_context=self.ssl_context
            )
            await site.start()
            bound = self._runner.addresses[0]
            addrs["http"] = "%s:%d" % (bound[0], bound[1])
            _svc.log(
                "listening", binding="https" if self.ssl_context else "http", addr=addrs["http"]
            )
        if self.coap is not None:
            import aiocoap

            self._coap_ctx = await aiocoap.Context.create_server_context(
                _CoapSite.make(self.coap), bind=self.coap_listen, transports=["udp6"]
            )
            port = self.coap_listen[1]
            for ri in self._coap_ctx.request_interfaces:
                mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
                if mi is not None and hasattr(mi, "_local_port"):
                    port = mi._local_port()
            addrs["coap"] = "%s:%d" % (self.coap_listen[0], port)
            _svc.log("listening", binding="coap", addr=addrs["coap"])
        self._sweeper = asyncio.ensure_future(self._sweep())
        return addrs

    async def _sweep(self):
        while True:
            await asyncio.sleep(_SWEEP_S)
            for core in (self.http, self.coap):
                if core is not None:
                    core.sweep()

    async def stop(self):
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._coap_ctx is not None:
            await self._coap_ctx.shutdown()
