"""ATLS over HTTP/1.1 (draft-friel-tls-atls §9, aiohttp) and over CoAP (the
latest draft's CoAP binding, aiocoap), plugged into a running
`host_tools.service.Service` beside its UDP listener.  The session logic both
share is binding_core; the wire conventions are host_tools.http_binding's
(docs/BINDINGS.md).  aiohttp and aiocoap are imported only when a listener
starts.
"""

import asyncio

from host_tools.common import log
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
    pack_packets,
)
from host_tools.service.binding_core import REASONS, BindingCore, Reject
from host_tools.service.conn_limits import ConnTable, make_server

__all__ = ["Bindings", "BindingCore", "Reject", "REASONS", "HTTP_PATHS", "COAP_PATH"]

_SWEEP_S = 0.25


def _client_ip(request):
    return request.remote or "?"


class _Http:
    def __init__(self, core, ssl_context, conns):
        self.core = core
        self.https = ssl_context is not None
        self.conns = conns  # conn_limits.ConnTable: a busy connection is never evicted

    def _error(self, r):
        from aiohttp import web

        headers = {ERROR_HEADER: r.reason, "Cache-Control": "no-store"}
        if r.retry_after is not None:  # RFC 9110 §10.2.3; honest clients wait (jittered)
            headers["Retry-After"] = str(r.retry_after)
        status = REASONS[r.reason][0]
        if r.packets:  # the RESETs for a lost session, for the device (docs/BINDINGS.md)
            body = pack_packets(r.packets)
            return web.Response(status=status, body=body, content_type=CT_DATA, headers=headers)
        return web.Response(status=status, text=str(r) + "\n", headers=headers)

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
        if request.path not in HTTP_PATHS:
            from aiohttp import web

            raise web.HTTPNotFound()
        conn = request.protocol
        if conn in self.conns.refused:  # over the connection bounds (conn_limits)
            try:
                self.core.reject("busy", "too many connections")
            except Reject as r:
                resp = self._error(r)
            resp.force_close()  # Connection: close
            return resp
        self.conns.busy(conn)
        try:
            return await self._request(request)
        finally:
            self.conns.idle(conn)

    async def _request(self, request):
        core = self.core
        core.counters["requests"] += 1
        try:
            if request.method != "POST":
                core.reject("bad_method", "POST only")
            ip = _client_ip(request)
            core.check_rate(ip)
            core.enter(ip)
        except Reject as r:
            return self._error(r)
        try:
            return await self._handle(request, ip)
        except Reject as r:
            return self._error(r)
        finally:
            core.leave(ip)

    async def _handle(self, request, ip):
        from aiohttp import web

        core = self.core
        ctype = request.content_type.lower()
        if ctype not in FLIGHT_TYPES and ctype != CT_DATA:
            core.reject("bad_content_type", "use %s or %s" % (FLIGHT_TYPES[0], CT_DATA))
        body = await self._body(request)
        token = request.cookies.get(COOKIE)
        if ctype == CT_DATA:
            try:
                wait = int(request.headers.get(WAIT_HEADER, "0"))
            except ValueError:
                wait = 0
            peer, out = await core.batch(token, body, wait)
            resp = web.Response(body=out, content_type=CT_DATA)
        else:
            peer_addr = request.transport.get_extra_info("peername") if request.transport else None
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
            if r.packets:  # the RESETs for a lost session, for the device (docs/BINDINGS.md)
                return Message(code=code, payload=pack_packets(r.packets), content_format=CF_DATA)
            m = Message(code=code, payload=str(r).encode()[:120])
            if r.reason == "too_big":
                m.opt.size1 = core.max_body
            if r.retry_after is not None:  # RFC 7252 §5.9.3.4, RFC 8516: Max-Age says when
                m.opt.max_age = r.retry_after
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
                    core.enter(host)
                except Reject as r:
                    return error(r)
                try:
                    return await self._render(request, path, host, port)
                except Reject as r:
                    return error(r)
                finally:
                    core.leave(host)

            async def _render(self, request, path, host, port):
                cf = request.opt.content_format
                cf = int(cf) if cf is not None else None
                if cf not in (CF_FLIGHT, CF_DATA):
                    core.reject("bad_content_type", "use %d or %d" % (CF_FLIGHT, CF_DATA))
                if len(request.payload) > core.max_body:
                    core.reject("too_big", "body over %d bytes" % core.max_body)
                token = path[2] if len(path) == 3 else None
                if cf == CF_DATA:
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
                    peer, out, created = core.flight(token, request.payload, ("coap:" + host, port))
                    if (
                        created
                        and core.too_big_for(len(request.payload), len(out))
                        and not core.echo_ok(request.opt.echo, host, port)
                    ):  # RFC 9175 §2.4: validate the address before a big answer
                        core.unvalidated(peer)
                        m = Message(code=Code.UNAUTHORIZED)
                        m.opt.echo = core.echo(host, port)
                        return m
                    resp = Message(
                        code=Code.CREATED if created else Code.CHANGED,
                        payload=out,
                        content_format=CF_FLIGHT,
                    )
                    if created:
                        resp.opt.location_path = COAP_PATH + (peer.token,)
                resp.opt.add_option(sid_opt.create_option(value=peer.sess.sid.to_bytes(2, "big")))
                return resp

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
        reuse_port=False,
    ):
        self.service = service
        self.http_listen = http_listen
        self.coap_listen = coap_listen
        self.ssl_context = ssl_context
        self.http = BindingCore(service, "http", max_body, max_wait_ms) if http_listen else None
        self.coap = BindingCore(service, "coap", max_body, max_wait_ms) if coap_listen else None
        self.reuse_port = reuse_port  # --workers: the HTTP port is shared (SO_REUSEPORT)
        self._runner = None
        self._coap_ctx = None
        self._sweeper = None

    async def start(self):
        """Listen; returns {"http": "host:port", "coap": "host:port"} bound."""
        addrs = {}
        if self.http is not None:
            from aiohttp import web

            lim = self.service.limits
            conns = ConnTable(lim["max_connections"], lim["max_connections_per_ip"])
            self.http.counters["connections"] = conns.counters
            h = _Http(self.http, self.ssl_context, conns)
            server = make_server(h.handle, conns, lim["http_idle_timeout_s"])
            self._runner = web.ServerRunner(server, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(
                self._runner,
                self.http_listen[0],
                self.http_listen[1],
                ssl_context=self.ssl_context,
                reuse_port=self.reuse_port or None,
            )
            await site.start()
            bound = self._runner.addresses[0]
            addrs["http"] = "%s:%d" % (bound[0], bound[1])
            log("listening", binding="https" if self.ssl_context else "http", addr=addrs["http"])
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
            log("listening", binding="coap", addr=addrs["coap"])
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
