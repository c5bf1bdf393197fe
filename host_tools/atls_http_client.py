"""ATLS over HTTP(S) and CoAP, client side (CPython): the draft's
bootstrapping use case (draft-friel-tls-atls-00 §3.1) with the device's own
TLS client and link modules (firmware/atls, imported unchanged).

    python -m host_tools.atls_http_client --url http://127.0.0.1:8080/atls \\
        --psk-id device-1 --psk 00112233... [--ca ca.pem --server-name svc] [--count N]

sends N numbered messages through the service, prints each echo and, as the
last line, a JSON summary.  `--url coap://host:port/.well-known/atls` uses
CoAP instead; `https://` URLs cross TLS-terminating middleboxes (verify the
middlebox with --https-ca, or not at all with --https-insecure: ATLS
authenticates the service end to end either way).

Wire conventions (docs/BINDINGS.md):
* Handshake: each request body is one TLS flight exactly as TLSClient wrote
  it, each 200 OK (CoAP 2.01/2.04) body the service's next flight exactly as
  OpenSSL wrote it (draft §9.1, §9.7), Content-Type application/atls+octet-
  stream (draft -00; application/atls of the latest draft is accepted too).
  The service sets the cookie `atls-session` on its first response (§9.4);
  the client echoes it.  Over CoAP the first answer is 2.01 Created with a
  Location-Path naming the session resource, later requests go there.
* Every successful response names the session id the link packets use:
  HTTP header `ATLS-Session-Id` (decimal), CoAP option 65004 (2 bytes).
* After the handshake both sides export the key block (PROTOCOL.md §3) and
  run the link's channel: request and response bodies are batches of link
  packets (DATA/ACK/CLOSE, PROTOCOL.md §1) each preceded by its length as
  2 bytes big-endian, Content-Type application/atls-data (CoAP Content-Format
  65001).  An empty batch polls; `ATLS-Wait: ms` (CoAP Uri-Query wait=ms)
  lets the service hold the answer until it has something to send.

Reusable parts (e.g. for a gateway): `HttpTransport` / `CoapTransport`, one
per ATLS session, each with `post_flight(bytes) -> bytes` and
`post_packets([bytes], wait_ms) -> [bytes]`; `pack_packets` /
`unpack_packets`; `AtlsClient` runs TLSClient + Link over either transport.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

from atls.errors import AlertError  # noqa: E402
from atls.link import Link, LinkConfig, QueueFull  # noqa: E402
from atls.tls.client import ClientConfig, TLSClient  # noqa: E402

__all__ = [
    "CT_FLIGHT",
    "CT_FLIGHT_LATEST",
    "CT_DATA",
    "CF_FLIGHT",
    "CF_DATA",
    "SID_OPTION",
    "COOKIE",
    "SID_HEADER",
    "WAIT_HEADER",
    "ERROR_HEADER",
    "MAX_BODY",
    "FramingError",
    "TransportError",
    "pack_packets",
    "unpack_packets",
    "HttpTransport",
    "CoapTransport",
    "make_transport",
    "AtlsClient",
    "run",
    "main",
]

CT_FLIGHT = "application/atls+octet-stream"  # draft-00 §9.2
CT_FLIGHT_LATEST = "application/atls"  # latest draft, "Content-Type Header"
FLIGHT_TYPES = (CT_FLIGHT, CT_FLIGHT_LATEST)
CT_DATA = "application/atls-data"  # ours: a batch of link packets (docs/BINDINGS.md)
CF_FLIGHT = 65000  # CoAP Content-Formats: experimental range (RFC 7252 §12.3);
CF_DATA = 65001  # the draft's application/atls ID is still TBD
SID_OPTION = 65004  # CoAP option, experimental range (RFC 7252 §12.2), elective
COOKIE = "atls-session"
SID_HEADER = "ATLS-Session-Id"
WAIT_HEADER = "ATLS-Wait"
ERROR_HEADER = "ATLS-Error"
MAX_BODY = 16384
LABEL = b"application-layer-tls"
KEY_BLOCK_LEN = 56


class FramingError(ValueError):
    pass


class TransportError(Exception):
    """A non-success answer: status (HTTP int or CoAP code string), reason
    (the service's short reason, e.g. unknown_session) and detail text."""

    def __init__(self, status, reason, detail=""):
        Exception.__init__(self, "%s %s %s" % (status, reason, detail))
        self.status = status
        self.reason = reason
        self.detail = detail


def pack_packets(packets):
    """len (2 bytes, big-endian) || packet, for each packet."""
    out = bytearray()
    for p in packets:
        if not 0 < len(p) <= 0xFFFF:
            raise FramingError("packet length must be 1..65535")
        out += len(p).to_bytes(2, "big")
        out += p
    return bytes(out)


def unpack_packets(body, max_packets=1024):
    out = []
    pos = 0
    n = len(body)
    while pos < n:
        if n - pos < 2:
            raise FramingError("truncated length prefix")
        ln = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if ln == 0 or pos + ln > n:
            raise FramingError("bad packet length")
        if len(out) >= max_packets:
            raise FramingError("too many packets")
        out.append(bytes(body[pos : pos + ln]))
        pos += ln
    return out


class HttpTransport:
    """One ATLS session over HTTP/1.1 (draft §9): keeps the session cookie
    and the session id.  `ssl`: None (default verification for https), an
    ssl.SSLContext, or False (no verification of the HTTPS leg)."""

    def __init__(self, url, ssl=None, session=None, timeout_s=30.0, flight_type=CT_FLIGHT):
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

    def reset(self):
        """Forget the session (the next flight starts a new one)."""
        self.cookie = None
        self.sid = None

    async def _post(self, body, ctype, extra=None):
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
                raise TransportError(
                    resp.status,
                    resp.headers.get(ERROR_HEADER, "http"),
                    data[:200].decode("utf-8", "replace"),
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


class CoapTransport:
    """One ATLS session over CoAP (latest draft): POST to /.well-known/atls,
    2.01 Created + Location-Path names the session resource, 2.04 after.
    aiocoap does block-wise transfer (RFC 7959) for large flights."""

    def __init__(self, uri, context=None, timeout_s=30.0):
        self.uri = uri.rstrip("/")
        if self.uri.count("/") < 3:
            self.uri += "/.well-known/atls"
        self._base = self.uri.split("/", 3)[:3]  # coap: '' host:port
        self._own = context is None
        self._ctx = context
        self.timeout_s = timeout_s
        self.location = None
        self.sid = None
        self.requests = 0

    def reset(self):
        self.location = None
        self.sid = None

    async def _post(self, body, cf, query=()):
        import aiocoap
        from aiocoap.numbers.optionnumbers import OptionNumber

        if self._ctx is None:
            self._ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        uri = self.uri if self.location is None else "/".join(self._base) + self.location
        msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=bytes(body), content_format=cf)
        if query:
            msg.opt.uri_query = tuple(query)
        self.requests += 1
        resp = await asyncio.wait_for(self._ctx.request(msg).response, self.timeout_s)
        if not resp.code.is_successful():
            text = resp.payload[:200].decode("utf-8", "replace")
            raise TransportError(str(resp.code), text.split(":")[0], text)
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
        q = ("wait=%d" % int(wait_ms),) if wait_ms else ()
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


def _now_ms():
    return int(time.monotonic() * 1000)


class AtlsClient:
    """TLSClient + Link over an HTTP or CoAP transport.  After connect(),
    send() queues messages and exchange() moves packets; events() returns
    ("message", bytes), ("delivered", seq), ("closed"|"error", reason)."""

    def __init__(self, transport, tls_config, link_config=None, clock=_now_ms):
        self.transport = transport
        self.tls_config = tls_config
        self.link_config = link_config or LinkConfig(mtu=1200)
        self.clock = clock
        self.tls = None
        self.link = None
        self.suite = None
        self.handshake_ms = None
        self.flights_sent = []  # exactly what TLSClient wrote, per request
        self.flights_received = []  # exactly what the service answered
        self._ev = []

    @property
    def sid(self):
        return self.transport.sid

    async def connect(self, max_flights=6):
        t0 = self.clock()
        tls = self.tls = TLSClient(self.tls_config)
        tls.start(t0)
        out = tls.data_to_send()
        for _ in range(max_flights):
            self.flights_sent.append(out)
            answer = await self.transport.post_flight(out)
            self.flights_received.append(answer)
            was_connected = tls.connected
            if answer:
                tls.receive(answer, self.clock())  # AlertError on any failure
            out = tls.data_to_send()
            if was_connected:  # that was our last flight; the answer held tickets at most
                break
            if not out:
                if tls.connected:
                    break
                raise AlertError(80, "service answered without completing its flight")
        if not tls.connected:
            raise AlertError(80, "handshake did not finish")
        if self.transport.sid is None:
            raise TransportError(200, "no_session_id", "the service named no session id")
        self.link = Link("client", self.link_config, self.transport.sid)
        self.link.start_channel(tls.exporter(LABEL, b"", KEY_BLOCK_LEN), tls.suite)
        self.suite = tls.suite
        self.handshake_ms = self.clock() - t0

    def send(self, payload):
        """Queue a message (raises QueueFull when the link's queue is full)."""
        return self.link.send(payload, self.clock())

    def events(self):
        ev = self._ev
        self._ev = []
        return ev

    async def exchange(self, wait_ms=0):
        """Send what the link has (maybe nothing: a poll) and take in the
        answer.  wait_ms lets the service hold an otherwise empty answer."""
        out = self.link.datagrams(self.clock())
        answer = await self.transport.post_packets(out, 0 if out else wait_ms)
        now = self.clock()
        for p in answer:
            self.link.receive(p, now)
        self._ev.extend(self.link.events())
        return len(out), len(answer)

    async def close(self, timeout_s=5.0):
        """Close the channel (CLOSE both ways, PROTOCOL.md §5)."""
        if self.link is None:
            return
        self.link.close(0)
        end = time.monotonic() + timeout_s
        while self.link.state not in ("closed", "failed") and time.monotonic() < end:
            await self.exchange(wait_ms=200)


def tls_config_from_args(a):
    kw = {}
    if a.psk:
        kw["psk"] = bytes.fromhex(a.psk)
        kw["psk_identity"] = a.psk_id.encode()
    if a.ca:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certs = x509.load_pem_x509_certificates(Path(a.ca).read_bytes())
        kw["ca_certs"] = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        kw["server_name"] = a.server_name
        kw["check_hostname"] = a.server_name is not None
    if a.suites:
        kw["suites"] = [int(s, 0) for s in a.suites.split(",")]
    return ClientConfig(**kw)


async def run(
    transport,
    tls_config,
    count=10,
    prefix=b"atls-http-client message ",
    timeout_s=60.0,
    out=None,
    link_config=None,
    size=0,
    client=None,
):
    """Connect, send `count` messages (prefix, number, padded with '.' to
    `size` bytes), wait for each echo, close; return a summary dict.
    `out(line)` gets one line per echo; pass `client` to inspect it after."""
    client = client or AtlsClient(transport, tls_config, link_config)
    t0 = time.monotonic()
    summary = {
        "ok": False,
        "sent": 0,
        "delivered": 0,
        "received": 0,
        "in_order": True,
        "duplicates": 0,
        "error": None,
    }
    got = []
    try:
        await client.connect()
        summary.update(
            suite=client.suite,
            sid=client.sid,
            handshake_ms=client.handshake_ms,
            flights=len(client.flights_sent),
        )
        expected = [(prefix + b"%05d" % i).ljust(size, b".") for i in range(count)]
        sent = delivered = 0
        end = t0 + timeout_s
        while (len(got) < count or delivered < count) and time.monotonic() < end:
            while sent < count:
                try:
                    client.send(expected[sent])
                except QueueFull:
                    break
                sent += 1
            await client.exchange(wait_ms=500)
            for ev in client.events():
                if ev[0] == "message":
                    got.append(bytes(ev[1]))
                    if out:
                        text = bytes(ev[1]).decode("utf-8", "replace")
                        out("echo %d: %s" % (len(got) - 1, text))
                elif ev[0] == "delivered":
                    delivered += 1
                elif ev[0] in ("error", "closed"):
                    raise TransportError("link", ev[0], str(ev[1]))
        await client.close()
        summary.update(
            sent=sent,
            delivered=delivered,
            received=len(got),
            in_order=got == expected[: len(got)],
            duplicates=len(got) - len(set(got)),
            closed=client.link.state == "closed",
        )
        summary["ok"] = got == expected and delivered == count
    except Exception as e:  # TransportError, AlertError, aiohttp/aiocoap errors: report
        summary["error"] = "%s: %s" % (type(e).__name__, e)
        summary["received"] = len(got)
    finally:
        await transport.close()
    summary["requests"] = transport.requests
    summary["elapsed_s"] = round(time.monotonic() - t0, 3)
    if client.link is not None:
        summary["link"] = {k: v for k, v in client.link.counters.items() if k != "drops"}
        summary["drops"] = {k: v for k, v in client.link.drops.items() if v}
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description="ATLS over HTTP(S)/CoAP client (draft §3.1)")
    ap.add_argument(
        "--url", required=True, help="http(s)://host:port/atls or coap://host:port/.well-known/atls"
    )
    ap.add_argument("--psk-id", help="PSK identity")
    ap.add_argument("--psk", help="PSK (hex)")
    ap.add_argument("--ca", help="PEM CA certificate(s) for the service's ATLS certificate")
    ap.add_argument("--server-name", help="name the service's certificate must carry")
    ap.add_argument("--suites", help="comma-separated suite code points, e.g. 0x1305")
    ap.add_argument("--count", type=int, default=10, help="messages to send (default 10)")
    ap.add_argument("--size", type=int, default=0, help="pad messages to this many bytes")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--https-ca", help="PEM CA for the HTTPS leg (a middlebox's CA)")
    ap.add_argument(
        "--https-insecure",
        action="store_true",
        help="do not verify the HTTPS leg (ATLS still authenticates the service)",
    )
    ap.add_argument("--quiet", action="store_true", help="print the summary only")
    a = ap.parse_args(argv)
    if bool(a.psk) != bool(a.psk_id) or not (a.psk or a.ca):
        ap.error("give --psk-id with --psk, and/or --ca")
    https_ssl = None
    if a.https_insecure:
        https_ssl = False
    elif a.https_ca:
        https_ssl = ssl.create_default_context(cafile=a.https_ca)
    try:
        cfg = tls_config_from_args(a)
        transport = make_transport(a.url, https_ssl)
    except Exception as e:
        ap.error(str(e))
    summary = asyncio.run(
        run(
            transport,
            cfg,
            a.count,
            timeout_s=a.timeout,
            size=a.size,
            out=None if a.quiet else print,
        )
    )
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
