"""One ATLS session's requests over HTTP/1.1 (draft-friel-tls-atls §9) or
CoAP (the latest draft's CoAP binding): `post_flight(bytes) -> bytes` carries
a TLS flight, `post_packets([bytes], wait_ms) -> [bytes]` a batch of link
packets.  The transport keeps the session reference (cookie or Location-Path)
and the session id the service names; a non-success answer raises
TransportError.  aiohttp / aiocoap are imported only when a transport is used.

A refusal that says when to come back (429 / 503 with Retry-After, CoAP
4.29 / 5.03 with Max-Age; nothing was processed) is retried up to `retries`
times after backoff_s(): at least what the service asked, doubled on each
refusal in a row, capped at MAX_BACKOFF_S, times a random factor in [1, 1.5]
so that refused clients do not come back together.
"""

import asyncio
import random

from host_tools.http_binding import (
    CF_DATA,
    CF_FLIGHT,
    COAP_PATH,
    COOKIE,
    CT_DATA,
    CT_FLIGHT,
    ERROR_HEADER,
    SID_HEADER,
    SID_OPTION,
    WAIT_HEADER,
    WAIT_QUERY,
    FramingError,
    pack_packets,
    unpack_packets,
)

__all__ = ["TransportError", "HttpTransport", "CoapTransport", "make_transport", "backoff_s"]

RETRIES = 3
MAX_BACKOFF_S = 30.0


def backoff_s(retry_after, attempt, rand=random.random):
    """Seconds to wait before retry number `attempt` (0-based) of a request
    refused with `retry_after` seconds (module doc)."""
    return min(MAX_BACKOFF_S, max(float(retry_after), 0.5) * 2**attempt) * (1.0 + 0.5 * rand())


class TransportError(Exception):
    """A non-success answer: status (HTTP int or CoAP code string), reason
    (the service's short reason, e.g. unknown_session), detail text, and
    retry_after (seconds the service asked to wait, or None) and packets:
    link packets the refusal carried (an unknown_session answer to a batch
    holds the service's RESET for the session, docs/BINDINGS.md: give them
    to the link), else []."""

    def __init__(self, status, reason, detail="", retry_after=None, packets=()):
        Exception.__init__(self, "%s %s %s" % (status, reason, detail))
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.packets = list(packets)


def _carried(body):
    """The link packets of a refusal's application/atls-data body ([] if bad)."""
    try:
        return unpack_packets(body)
    except FramingError:
        return []


async def _with_retries(transport, attempt_once):
    """attempt_once() again after backoff while refusals say when to retry."""
    for attempt in range(transport.retries + 1):
        try:
            return await attempt_once()
        except TransportError as e:
            if e.retry_after is None or attempt >= transport.retries:
                raise
            transport.backoffs += 1
            await asyncio.sleep(backoff_s(e.retry_after, attempt))


def _seconds(value):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return None  # an HTTP-date or junk: not honoured


class HttpTransport:
    """One ATLS session over HTTP/1.1 (draft §9): keeps the session cookie
    and the session id.  `ssl`: None (default verification for https), an
    ssl.SSLContext, or False (no verification of the HTTPS leg)."""

    def __init__(
        self, url, ssl=None, session=None, timeout_s=30.0, flight_type=CT_FLIGHT, retries=RETRIES
    ):
        import aiohttp

        self._aiohttp = aiohttp
        self.url = url
        self.ssl = ssl
        self.flight_type = flight_type
        self._own = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.cookie = None
        self.sid = None
        self.requests = 0
        self.retries = retries
        self.backoffs = 0  # refusals waited out

    def reset(self):
        """Forget the session (the next flight starts a new one)."""
        self.cookie = None
        self.sid = None

    async def _post(self, body, ctype, extra=None):
        return await _with_retries(self, lambda: self._post_once(body, ctype, extra))

    async def _post_once(self, body, ctype, extra=None):
        aiohttp = self._aiohttp
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        headers = {"Content-Type": ctype}
        if self.cookie is not None:
            headers["Cookie"] = "%s=%s" % (COOKIE, self.cookie)
        if extra:
            headers.update(extra)
        self.requests += 1
        kw = {} if self.ssl is None else {"ssl": self.ssl}
        async with self._session.post(
            self.url, data=body, headers=headers, timeout=self._timeout, **kw
        ) as resp:
            data = await resp.read()
            if resp.status != 200:
                got = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                packets = _carried(data) if got == CT_DATA else []
                raise TransportError(
                    resp.status,
                    resp.headers.get(ERROR_HEADER, "http"),
                    "" if packets else data[:200].decode("utf-8", "replace"),
                    _seconds(resp.headers.get("Retry-After"))
                    if resp.status in (429, 503)
                    else None,
                    packets,
                )
            morsel = resp.cookies.get(COOKIE)
            if morsel is not None:
                self.cookie = morsel.value
            sid = resp.headers.get(SID_HEADER)
            if sid is not None:
                self.sid = int(sid)
            got = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if got != (CT_DATA if ctype == CT_DATA else ctype):
                raise TransportError(resp.status, "bad_content_type", got)
            return data

    async def post_flight(self, flight):
        """POST one TLS flight; return the service's flight (maybe b"")."""
        return await self._post(bytes(flight), self.flight_type)

    async def post_packets(self, packets, wait_ms=0):
        """POST a batch of link packets; return the packets in the answer."""
        extra = {WAIT_HEADER: str(int(wait_ms))} if wait_ms else None
        return unpack_packets(await self._post(pack_packets(packets), CT_DATA, extra))

    async def close(self):
        if self._own and self._session is not None:
            await self._session.close()
        self._session = None


_CODE_4_01 = 4 << 5 | 1
_CODE_4_29 = 4 << 5 | 29  # CoAP codes c.dd as (c << 5) | dd (RFC 7252 §3)
_CODE_5_03 = 5 << 5 | 3


class CoapTransport:
    """One ATLS session over CoAP (latest draft): POST to /.well-known/atls,
    2.01 Created + Location-Path names the session resource, 2.04 after.
    aiocoap does block-wise transfer (RFC 7959) for large flights.  A 4.01
    with an Echo option (the service validating our address before a large
    answer) is answered by the same request carrying that Echo."""

    def __init__(self, uri, context=None, timeout_s=30.0, retries=RETRIES):
        self.uri = uri.rstrip("/")
        if self.uri.count("/") < 3:
            self.uri += "/" + "/".join(COAP_PATH)
        self._base = self.uri.split("/", 3)[:3]  # coap: '' host:port
        self._own = context is None
        self._ctx = context
        self.timeout_s = timeout_s
        self.location = None
        self.sid = None
        self.requests = 0
        self.retries = retries
        self.backoffs = 0

    def reset(self):
        self.location = None
        self.sid = None

    async def _post(self, body, cf, query=()):
        return await _with_retries(self, lambda: self._post_once(body, cf, query))

    async def _post_once(self, body, cf, query=()):
        import aiocoap
        from aiocoap.numbers.optionnumbers import OptionNumber

        if self._ctx is None:
            self._ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        uri = self.uri if self.location is None else "/".join(self._base) + self.location
        echo = None
        for _ in range(2):  # again with the Echo of a 4.01 (RFC 9175 §2.4)
            msg = aiocoap.Message(
                code=aiocoap.POST, uri=uri, payload=bytes(body), content_format=cf
            )
            if query:
                msg.opt.uri_query = tuple(query)
            if echo:
                msg.opt.echo = echo
            self.requests += 1
            resp = await asyncio.wait_for(self._ctx.request(msg).response, self.timeout_s)
            echo = resp.opt.echo if int(resp.code) == _CODE_4_01 else None
            if not echo:
                break
        if not resp.code.is_successful():
            cf = resp.opt.content_format
            if cf is not None and int(cf) == CF_DATA:  # a lost session's RESETs
                packets = _carried(resp.payload)
                raise TransportError(str(resp.code), "unknown_session", "", None, packets)
            text = resp.payload[:200].decode("utf-8", "replace")
            wait = None
            if int(resp.code) in (_CODE_4_29, _CODE_5_03):
                wait = _seconds(resp.opt.max_age)
            raise TransportError(str(resp.code), text.split(":")[0], text, wait)
        if resp.opt.location_path:
            self.location = "/" + "/".join(resp.opt.location_path)
        sid = resp.opt.get_option(OptionNumber(SID_OPTION))
        if sid:
            self.sid = int.from_bytes(sid[0].value, "big")
        if resp.opt.content_format is not None and int(resp.opt.content_format) != cf:
            raise TransportError(str(resp.code), "bad_content_type", str(resp.opt.content_format))
        return resp.payload

    async def post_flight(self, flight):
        return await self._post(flight, CF_FLIGHT)

    async def post_packets(self, packets, wait_ms=0):
        q = ("%s=%d" % (WAIT_QUERY, int(wait_ms)),) if wait_ms else ()
        return unpack_packets(await self._post(pack_packets(packets), CF_DATA, q))

    async def close(self):
        if self._own and self._ctx is not None:
            await self._ctx.shutdown()
        self._ctx = None


def make_transport(url, https_ssl=None):
    if url.startswith("coap://"):
        return CoapTransport(url)
    if url.startswith("http://") or url.startswith("https://"):
        return HttpTransport(url, ssl=https_ssl)
    raise ValueError("url must be http://, https:// or coap://")
