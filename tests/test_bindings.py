"""ATLS over HTTP (draft-friel-tls-atls-00 §9, latest draft "ATLS over HTTP
Transport") and over CoAP (latest draft "ATLS over CoAP Transport"): a real
service process (host_tools.service with http_listen/coap_listen) and the
host client (host_tools.atls_http_client: the firmware's TLSClient + Link
under CPython), loopback only.

Checked: sessions with 100 messages each way exactly once and in order
(PSK and certificate mode, HTTP and CoAP, the CLI); an HTTP exchange captured
on the wire has the §9.7 shape with flights carried byte for byte; a
TLS-terminating reverse proxy (aiohttp, its own CA) sees only ATLS bodies and
never the plaintext; CoAP flights and batches larger than one block go
block-wise (RFC 7959 options seen on the wire); malformed requests get 4xx /
4.xx, are counted by reason and leave a concurrent session alone; half-open
and idle sessions time out."""

import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import time
import types

import aiocoap
import aiohttp
import conftest
import pytest
from aiohttp import web
from e2e import ServiceProc

from atls.protocol import TLS_AES_128_CCM_8_SHA256
from atls.tls.client import ClientConfig, TLSClient
from host_tools import atls_http_client as hc
from host_tools import http_binding as hb
from host_tools import pki

pytestmark = pytest.mark.timeout(120)

ROOT = conftest.ROOT
PSK = bytes(range(32))
LINK = {"mtu": 1200, "rto_ms": 300, "rto_max_ms": 2000}


@pytest.fixture(scope="module")
def creds():
    ca = pki.make_ca("Bindings Service CA")
    sub = pki.make_cert("Bindings Issuing CA", issuer=ca, is_ca=True)
    server = pki.make_cert("service.local", issuer=sub)  # chain: leaf + intermediate
    mb_ca = pki.make_ca("Middlebox CA")
    mb = pki.make_cert("middlebox", issuer=mb_ca, san=["127.0.0.1"])
    dev_ca = pki.make_ca("Bindings Device CA")  # devices authenticate too (issue 14)
    dev = pki.make_cert("device-9", issuer=dev_ca, client=True)
    return {"ca": ca, "server": server, "mb_ca": mb_ca, "mb": mb, "dev_ca": dev_ca, "dev": dev}


class Svc(ServiceProc):
    """ServiceProc with the HTTP and CoAP listeners on ephemeral ports."""

    def __init__(self, tmp, creds=None, link=None, limits=None, **extra):
        server = dev_ca = certs = None
        if creds is not None:  # the whole chain goes into server.pem
            server = types.SimpleNamespace(cert=creds["server"].chain, key=creds["server"].key)
            dev_ca, certs = creds["dev_ca"], {"device-9": creds["dev"].cert}
        extra = dict({"http_listen": "127.0.0.1:0", "coap_listen": "127.0.0.1:0"}, **extra)
        ServiceProc.__init__(
            self,
            tmp,
            devices={"device-1": PSK, "device-2": PSK[::-1]},
            server=server,
            device_ca=dev_ca,
            certs=certs,
            link=link or LINK,
            limits=limits,
            extra=extra,
        )
        addrs = json.loads((self.tmp / "service.ready.json").read_text())
        self.http = "http://%s/atls" % addrs["http"]
        self.http_latest = "http://%s/.well-known/atls" % addrs["http"]
        self.coap = "coap://%s/.well-known/atls" % addrs["coap"]
        self.http_hostport = addrs["http"]


def psk_config(identity=b"device-1", psk=PSK):
    return ClientConfig(psk=psk, psk_identity=identity)


def cert_config(creds):
    key = creds["dev"].key.private_numbers().private_value.to_bytes(32, "big")
    return ClientConfig(
        ca_certs=[pki.der(creds["ca"].cert)],
        server_name="service.local",
        client_certs=[pki.der(creds["dev"].cert)],
        client_key=key,
    )


def check(summary, count):
    assert summary["ok"], summary
    assert summary["received"] == count and summary["delivered"] == count
    assert summary["in_order"] and summary["duplicates"] == 0
    assert summary["closed"], summary


def records(body):
    """TLS records (type, length) of a flight; the body must be whole records."""
    out = []
    pos = 0
    while pos < len(body):
        assert len(body) - pos >= 5 and body[pos + 1] == 3
        n = int.from_bytes(body[pos + 3 : pos + 5], "big")
        out.append((body[pos], n))
        pos += 5 + n
    assert pos == len(body)
    return out


@pytest.fixture
def svc(tmp_path, creds):
    s = Svc(tmp_path, creds)
    yield s
    s.stop()


# ---- HTTP sessions ---------------------------------------------------------------


def test_http_psk_cli_100_each_way(svc):
    """draft §3.1 bootstrapping client (the CLI), PSK, 100 messages each way."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.atls_http_client",
            "--url",
            svc.http,
            "--psk-id",
            "device-1",
            "--psk",
            PSK.hex(),
            "--count",
            "100",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    lines = p.stdout.splitlines()
    s = json.loads(lines[-1])
    check(s, 100)
    assert s["flights"] == 2 and s["suite"] == TLS_AES_128_CCM_8_SHA256
    echoes = [ln for ln in lines if ln.startswith("echo ")]
    assert echoes[0] == "echo 0: atls-http-client message 00000" and len(echoes) == 100
    c = svc.counters()
    assert c["handshakes_ok"] == 1 and c["messages_in"] == 100 and c["messages_out"] == 100
    assert c["http"]["sessions_total"] == 1 and c["http"]["rejected"] == {}
    assert c["sessions_active"] == 0  # CLOSE both ways ended it
    assert PSK.hex() not in svc.logs()


def test_http_certificate_mode_latest_draft_names_100_each_way(svc, creds):
    """Certificate mode (chain of two), with the latest draft's path and
    content type (/.well-known/atls, application/atls)."""
    tr = hc.HttpTransport(svc.http_latest, flight_type=hb.CT_FLIGHT_LATEST)
    client = hc.AtlsClient(tr, cert_config(creds))
    s = asyncio.run(hc.run(tr, None, 100, client=client))
    check(s, 100)
    assert len(client.flights_sent) == 2
    c = svc.counters()
    assert c["handshakes_ok"] == 1 and c["messages_in"] == 100
    assert '"mode": "cert"' in svc.logs()


# ---- §9.7 on the wire --------------------------------------------------------------


class TcpRecorder:
    """A transparent TCP relay that keeps every byte of each connection."""

    def __init__(self, target):
        self.target = target
        self.conns = []  # [client->server bytearray, server->client bytearray]

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader, writer):
        host, port = self.target.split(":")
        ur, uw = await asyncio.open_connection(host, int(port))
        rec = [bytearray(), bytearray()]
        self.conns.append(rec)

        async def pipe(r, w, buf):
            try:
                while True:
                    d = await r.read(65536)
                    if not d:
                        break
                    buf += d
                    w.write(d)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, uw, rec[0]), pipe(ur, writer, rec[1]))

    async def stop(self):
        self.server.close()


def parse_http(stream):
    """HTTP/1.1 messages (start line, headers [(name, value)], body) from
    one direction of a connection (Content-Length bodies)."""
    out = []
    pos = 0
    while pos < len(stream):
        end = stream.index(b"\r\n\r\n", pos)
        head = stream[pos:end].decode("latin-1").split("\r\n")
        headers = [tuple(x.strip() for x in h.split(":", 1)) for h in head[1:]]
        n = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        body = bytes(stream[end + 4 : end + 4 + n])
        assert len(body) == n
        out.append((head[0], headers, body))
        pos = end + 4 + n
    return out


def hdr(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def test_http_exchange_matches_section_9_7(svc):
    """draft-00 §9.7: POST /atls with Content-Type application/atls+octet-
    stream carrying the client's flight unmodified; 200 OK with the same type
    and the server's flight; Set-Cookie on the first response only, echoed on
    every later request; then the channel's packets (application/atls-data)."""

    async def go():
        rec = TcpRecorder(svc.http_hostport)
        addr = await rec.start()
        tr = hc.HttpTransport("http://%s/atls" % addr)
        client = hc.AtlsClient(tr, psk_config())
        s = await hc.run(tr, None, 5, client=client)
        await asyncio.sleep(0.1)
        await rec.stop()
        return s, client, rec

    s, client, rec = asyncio.run(go())
    check(s, 5)
    reqs, resps = [], []
    for up, down in rec.conns:
        reqs += parse_http(up)
        resps += parse_http(down)
    assert len(reqs) == len(resps) == s["requests"] >= 4

    # handshake: exactly the two flights of a PSK handshake
    sent, got = client.flights_sent, client.flights_received
    assert len(sent) == 2
    for i in range(2):
        line, h, body = reqs[i]
        assert line == "POST /atls HTTP/1.1"
        assert hdr(h, "Content-Type") == ["application/atls+octet-stream"]
        assert body == sent[i]  # byte for byte what TLSClient wrote
        rline, rh, rbody = resps[i]
        assert rline.startswith("HTTP/1.1 200 ")
        assert hdr(rh, "Content-Type") == ["application/atls+octet-stream"]
        assert rbody == got[i]  # what the TLS client was fed
    assert records(sent[0])[0][0] == 22 and sent[0][5] == 1  # ClientHello record
    assert all(t in (22, 23) for t, _ in records(got[0]))  # ServerHello + encrypted flight
    assert records(sent[1]) and all(t == 23 for t, _ in records(sent[1]))  # {Finished}
    assert got[1] == b""  # TLS 1.3: nothing follows the client's Finished (no tickets)

    # session tracking (§9.4): cookie set once, on the first response, echoed after
    assert not hdr(reqs[0][1], "Cookie")
    cookies = hdr(resps[0][1], "Set-Cookie")
    assert len(cookies) == 1
    m = re.match(r"atls-session=([0-9a-f]{32});", cookies[0])
    assert m, cookies
    for _line, h, _ in reqs[1:]:
        assert hdr(h, "Cookie") == ["atls-session=" + m.group(1)]
    for _, h, _ in resps[1:]:
        assert not hdr(h, "Set-Cookie")
    sids = {hdr(h, "ATLS-Session-Id")[0] for _, h, _ in resps}
    assert sids == {str(s["sid"])}

    # channel: batches of length-prefixed link packets, ATLS marker on each
    for (line, h, body), (_, rh, rbody) in zip(reqs[2:], resps[2:]):
        assert line == "POST /atls HTTP/1.1"
        assert hdr(h, "Content-Type") == ["application/atls-data"]
        assert hdr(rh, "Content-Type") == ["application/atls-data"]
        for p in hb.unpack_packets(body) + hb.unpack_packets(rbody):
            assert p[0] & 0xF0 == 0xA0 and int.from_bytes(p[1:3], "big") == s["sid"]


# ---- a TLS-terminating middlebox ---------------------------------------------------

HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class ReverseProxy:
    """HTTPS in (its own certificate), HTTP out: a TLS-terminating middlebox
    that logs every request and response it relays."""

    def __init__(self, upstream, cred):
        self.upstream = upstream
        self.cred = cred
        self.log = []

    async def start(self, tmp):
        (tmp / "mb.pem").write_bytes(pki.pem(self.cred.cert))
        (tmp / "mb.key").write_bytes(pki.pem(self.cred.key))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "mb.pem", tmp / "mb.key")
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        return "https://127.0.0.1:%d/atls" % self.runner.addresses[0][1]

    async def handle(self, request):
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as r:
            rbody = await r.read()
            rheaders = [(k, v) for k, v in r.headers.items() if k.lower() not in HOP]
            status = r.status
        self.log.append(
            {
                "secure": request.secure,
                "headers": dict(request.headers),
                "body": body,
                "status": status,
                "resp_headers": rheaders,
                "resp_body": rbody,
            }
        )
        resp = web.Response(status=status, body=rbody)
        for k, v in rheaders:
            resp.headers.add(k, v)
        return resp

    async def stop(self):
        await self.session.close()
        await self.runner.cleanup()


def test_tls_terminating_proxy_sees_only_atls(svc, creds, tmp_path):
    """draft §3.1 Figure 1: client -HTTPS-> middlebox -HTTP-> service.  The
    client trusts the middlebox's CA for the outer leg and the service's CA
    for ATLS; the middlebox relays everything yet never sees a plaintext
    marker, and every body it handled is typed and shaped as ATLS."""
    marker = b"PLAINTEXT-MARKER-7f3a"

    async def go():
        proxy = ReverseProxy("http://" + svc.http_hostport, creds["mb"])
        url = await proxy.start(tmp_path)
        outer = ssl.create_default_context(cadata=pki.pem(creds["mb_ca"].cert).decode())
        tr = hc.HttpTransport(url, ssl=outer)
        client = hc.AtlsClient(tr, cert_config(creds))
        s = await hc.run(tr, None, 100, prefix=marker + b" ", client=client)
        await proxy.stop()
        return s, proxy.log

    s, log = asyncio.run(go())
    check(s, 100)
    assert len(log) == s["requests"] and all(e["secure"] for e in log)
    kinds = {"application/atls+octet-stream": 0, "application/atls-data": 0}
    for e in log:
        ctype = e["headers"]["Content-Type"]
        rtype = dict(e["resp_headers"])["Content-Type"]
        assert ctype == rtype and ctype in kinds and e["status"] == 200
        kinds[ctype] += 1
        seen = (
            e["body"]
            + e["resp_body"]
            + repr(e["headers"]).encode()
            + repr(e["resp_headers"]).encode()
        )
        assert marker not in seen and marker.hex().encode() not in seen
        if ctype == "application/atls+octet-stream":
            records(e["body"]), records(e["resp_body"])  # whole TLS records only
        else:
            for p in hb.unpack_packets(e["body"]) + hb.unpack_packets(e["resp_body"]):
                assert p[0] & 0xF0 == 0xA0
    assert kinds["application/atls+octet-stream"] == 2 and kinds["application/atls-data"] > 20
    c = svc.counters()
    assert c["messages_in"] == 100 and c["messages_out"] == 100


# ---- malformed HTTP requests --------------------------------------------------------


async def _post(session, url, body, ctype, cookie=None, method="POST", chunked=False):
    """(status, ATLS-Error, body, Set-Cookie value or None)"""
    headers = {"Content-Type": ctype} if ctype else {}
    if cookie:
        headers["Cookie"] = "atls-session=" + cookie
    data = body
    if chunked:

        async def gen():
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        data = gen()
    async with session.request(method, url, data=data, headers=headers) as r:
        c = r.cookies.get("atls-session")
        return r.status, r.headers.get("ATLS-Error"), await r.read(), c.value if c else None


async def _until(cond, timeout=20):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end
        await asyncio.sleep(0.01)


def test_http_malformed_requests_4xx_counted_session_unaffected(svc):
    """Wrong content type, missing/forged cookie, oversized bodies (declared
    and chunked), garbage flights, bad framing, wrong state, wrong method:
    each gets its 4xx and short reason, counted by reason, while a session
    running at the same time completes 100 messages each way exactly once,
    in order."""

    async def barrage(tr, client):
        await _until(lambda: client.link is not None)
        good = tr.cookie
        res = {}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            u = svc.http
            res["ctype"] = await _post(s, u, b"\x16\x03\x01", "text/plain")
            res["no_ctype"] = await _post(s, u, b"\x16\x03\x01", None)
            res["missing_cookie"] = await _post(s, u, b"", hb.CT_DATA)
            res["forged_cookie"] = await _post(s, u, b"", hb.CT_DATA, "ab" * 16)
            res["forged_flight"] = await _post(
                s, u, client.flights_sent[0], hb.CT_FLIGHT, "cd" * 16
            )
            res["junk_cookie"] = await _post(s, u, b"", hb.CT_DATA, "not-hex")
            res["too_big"] = await _post(s, u, os.urandom(20000), hb.CT_FLIGHT)
            res["too_big_chunked"] = await _post(
                s, u, os.urandom(20000), hb.CT_DATA, good, chunked=True
            )
            res["garbage"] = await _post(s, u, os.urandom(300), hb.CT_FLIGHT)
            res["garbage_tls"] = await _post(s, u, b"\x16\x03\x01\x00\x05hello", hb.CT_FLIGHT)
            res["partial_record"] = await _post(s, u, b"\x16\x03\x01\x00\x50abc", hb.CT_FLIGHT)
            res["empty_flight"] = await _post(s, u, b"", hb.CT_FLIGHT)
            res["bad_framing"] = await _post(s, u, b"\x00\x09abc", hb.CT_DATA, good)
            res["flight_on_established"] = await _post(
                s, u, client.flights_sent[0] + b"x", hb.CT_FLIGHT, good
            )
            res["get"] = await _post(s, u, b"", None, method="GET")
            # a second, half-open session (a fresh ClientHello), then link packets on it
            half = await _post(s, u, client.flights_sent[0], hb.CT_FLIGHT)
            assert half[0] == 200 and re.fullmatch("[0-9a-f]{32}", half[3])
            res["half_open_data"] = await _post(s, u, b"", hb.CT_DATA, half[3])
            # junk link packets in good framing on the good session: the link drops them
            junk = hb.pack_packets(
                [
                    b"\x00junk",
                    b"\xab"
                    + tr.sid.to_bytes(2, "big")
                    + (60000).to_bytes(2, "big")
                    + os.urandom(20),
                ]
            )
            res["junk_packets"] = await _post(s, u, junk, hb.CT_DATA, good)
        return res

    async def go():
        tr = hc.HttpTransport(svc.http)
        client = hc.AtlsClient(tr, psk_config())
        return await asyncio.gather(hc.run(tr, None, 100, client=client), barrage(tr, client))

    s, res = asyncio.run(go())
    check(s, 100)
    expect = {
        "ctype": (415, "bad_content_type"),
        "no_ctype": (415, "bad_content_type"),
        "missing_cookie": (400, "missing_cookie"),
        "forged_cookie": (403, "unknown_session"),
        "forged_flight": (403, "unknown_session"),
        "junk_cookie": (403, "unknown_session"),
        "too_big": (413, "too_big"),
        "too_big_chunked": (413, "too_big"),
        "garbage": (400, "handshake_failed"),
        "garbage_tls": (400, "handshake_failed"),
        "partial_record": (400, "handshake_failed"),
        "empty_flight": (400, "empty_flight"),
        "bad_framing": (400, "bad_framing"),
        "flight_on_established": (409, "established"),
        "get": (405, "bad_method"),
        "half_open_data": (409, "not_established"),
        "junk_packets": (200, None),
    }
    for k, (status, reason) in expect.items():
        got = res[k]
        assert got[:2] == (status, reason), (k, got)
        if status != 200:
            assert got[2].startswith(reason.encode() + b":") and len(got[2]) < 120, (k, got)
            assert got[3] is None  # no cookie handed out on a rejection
    c = svc.counters()
    assert c["http"]["rejected"] == {
        "bad_content_type": 2,
        "missing_cookie": 1,
        "unknown_session": 3,
        "too_big": 2,
        "handshake_failed": 3,
        "empty_flight": 1,
        "bad_framing": 1,
        "established": 1,
        "bad_method": 1,
        "not_established": 1,
    }, c["http"]["rejected"]
    # the sealed-looking junk fails the AEAD (auth), or, when the good session
    # already finished its 100 messages and closed, is dropped as "closed"
    assert c["drops"].get("not_atls") == 1
    assert c["drops"].get("auth", 0) + c["drops"].get("closed", 0) == 1, c["drops"]
    assert c["handshakes_failed"] == 3 and c["handshakes_ok"] == 1
    assert c["messages_in"] == 100 and c["messages_out"] == 100


# ---- CoAP --------------------------------------------------------------------------


class UdpRecorder:
    """A UDP relay between CoAP client(s) and the service that keeps every
    datagram: ("req" | "resp", bytes)."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.seen = []
        self.up = {}  # client addr -> upstream transport

    async def start(self):
        loop = asyncio.get_running_loop()
        rec = self

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, t):
                rec.front = t

            def datagram_received(self, data, addr):
                rec.seen.append(("req", data))
                up = rec.up.get(addr)
                if up is None:
                    asyncio.ensure_future(rec._open(addr, data))
                else:
                    up.sendto(data)

        await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        return "127.0.0.1:%d" % self.front.get_extra_info("sockname")[1]

    async def _open(self, addr, first):
        rec = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, _):
                rec.seen.append(("resp", data))
                rec.front.sendto(data, addr)

        t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Back, remote_addr=self.target
        )
        self.up[addr] = t
        t.sendto(first)

    def messages(self):
        return [(d, aiocoap.Message.decode(b)) for d, b in self.seen]

    def stop(self):
        self.front.close()
        for t in self.up.values():
            t.close()


def _coap_session(svc, tls_config, count, size, recorder=True):
    async def go():
        rec = None
        url = svc.coap
        if recorder:
            rec = UdpRecorder(svc.coap.split("/")[2])
            url = "coap://%s/.well-known/atls" % await rec.start()
        tr = hc.CoapTransport(url)
        client = hc.AtlsClient(tr, tls_config)
        s = await hc.run(tr, None, count, client=client, size=size)
        if rec:
            rec.stop()
        return s, client, rec

    return asyncio.run(go())


def test_coap_psk_100_each_way_blockwise_batches(svc):
    """Latest draft's CoAP binding: POST /.well-known/atls, 2.01 Created with
    a Location-Path for the session, 2.04 Changed after; 400-byte messages
    make batches of four larger than one 1024-byte block both ways, so Block1
    (requests) and Block2 (responses) are exercised (RFC 7959)."""
    s, client, rec = _coap_session(svc, psk_config(), 100, 400)
    check(s, 100)
    msgs = rec.messages()
    reqs = [m for d, m in msgs if d == "req" and m.code.is_request()]
    resps = [m for d, m in msgs if d == "resp" and m.code.is_response()]
    first = reqs[0]
    assert first.code == aiocoap.POST and first.opt.uri_path == (".well-known", "atls")
    assert int(first.opt.content_format) == hb.CF_FLIGHT
    assert first.payload == client.flights_sent[0]
    created = [m for m in resps if m.code == aiocoap.CREATED]
    assert len(created) == 1
    loc = created[0].opt.location_path
    assert loc[:2] == (".well-known", "atls") and re.fullmatch("[0-9a-f]{32}", loc[2])
    assert int(created[0].opt.content_format) == hb.CF_FLIGHT
    assert all(m.opt.uri_path == loc for m in reqs[1:])
    assert {m.code for m in resps} <= {aiocoap.CREATED, aiocoap.CHANGED, aiocoap.CONTINUE}
    assert any(m.opt.block1 is not None and m.opt.block1.more for m in reqs)
    assert any(m.opt.block2 is not None and m.opt.block2.more for m in resps)
    assert all(
        int(m.opt.content_format) == hb.CF_DATA
        for m in reqs[2:]
        if m.opt.content_format is not None
    )
    c = svc.counters()
    assert c["coap"]["sessions_total"] == 1 and c["messages_in"] == 100
    assert c["coap"]["rejected"] == {}


def test_coap_certificate_flight_larger_than_one_block(svc, creds):
    """Certificate mode with a two-certificate chain: the server's flight is
    over 1024 bytes and reaches the client block-wise (Block2 on the 2.01),
    reassembled byte for byte; then 100 messages each way."""
    s, client, rec = _coap_session(svc, cert_config(creds), 100, 0)
    check(s, 100)
    flight = client.flights_received[0]
    assert len(flight) > 1024 and records(flight)
    msgs = rec.messages()
    parts = [m for d, m in msgs if d == "resp" and m.code == aiocoap.CREATED]
    assert len(parts) >= 2 and parts[0].opt.block2.more
    assert b"".join(m.payload for m in parts) == flight
    c = svc.counters()
    assert c["handshakes_ok"] == 1 and c["messages_out"] == 100


async def _coap(ctx, uri, payload, cf=None, code=None, query=()):
    msg = aiocoap.Message(code=code or aiocoap.POST, uri=uri, payload=payload)
    if cf is not None:
        msg.opt.content_format = cf
    if query:
        msg.opt.uri_query = query
    r = await asyncio.wait_for(ctx.request(msg).response, 20)
    return str(r.code), r.payload, r.opt.location_path, r.opt.size1


def test_coap_malformed_4xx_counted_session_unaffected(svc):
    """Wrong/missing Content-Format, packets without a session resource,
    unknown session resources, an oversized flight (refused at the first
    Block1 block past 16 KiB), garbage flights, a GET, packets on a half-open
    session: 4.xx with a reason; a concurrent session is unaffected."""

    async def barrage(tr, client):
        await _until(lambda: client.link is not None)
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        base = svc.coap
        host = base.rsplit("/", 2)[0]
        res = {}
        try:
            res["cf"] = await _coap(ctx, base, b"\x16\x03\x01", 0)
            res["no_cf"] = await _coap(ctx, base, b"\x16\x03\x01")
            res["missing_session"] = await _coap(ctx, base, b"", hb.CF_DATA)
            res["unknown"] = await _coap(ctx, base + "/" + "ab" * 16, b"", hb.CF_DATA)
            res["unknown_flight"] = await _coap(
                ctx, base + "/" + "cd" * 16, client.flights_sent[0], hb.CF_FLIGHT
            )
            res["too_big"] = await _coap(ctx, base, os.urandom(20000), hb.CF_FLIGHT)
            res["garbage"] = await _coap(ctx, base, os.urandom(300), hb.CF_FLIGHT)
            res["bad_framing"] = await _coap(ctx, host + tr.location, b"\x00\x09ab", hb.CF_DATA)
            res["get"] = await _coap(ctx, base, b"", code=aiocoap.GET)
            res["other_path"] = await _coap(ctx, host + "/elsewhere", b"x", hb.CF_FLIGHT)
            half = await _coap(ctx, base, client.flights_sent[0], hb.CF_FLIGHT)
            assert half[0].startswith("2.01") and len(half[2]) == 3
            res["half_open_data"] = await _coap(
                ctx, host + "/" + "/".join(half[2]), b"", hb.CF_DATA
            )
        finally:
            await ctx.shutdown()
        return res

    async def go():
        tr = hc.CoapTransport(svc.coap)
        client = hc.AtlsClient(tr, psk_config())
        return await asyncio.gather(hc.run(tr, None, 100, client=client), barrage(tr, client))

    s, res = asyncio.run(go())
    check(s, 100)
    expect = {
        "cf": ("4.15", "bad_content_type"),
        "no_cf": ("4.15", "bad_content_type"),
        "missing_session": ("4.00", "missing_cookie"),
        "unknown": ("4.04", "unknown_session"),
        "unknown_flight": ("4.04", "unknown_session"),
        "too_big": ("4.13", "too_big"),
        "garbage": ("4.00", "handshake_failed"),
        "bad_framing": ("4.00", "bad_framing"),
        "get": ("4.05", "bad_method"),
        "other_path": ("4.04", ""),
        "half_open_data": ("4.09", "not_established"),
    }
    for k, (code, reason) in expect.items():
        got = res[k]
        assert got[0].startswith(code) and got[1].startswith(reason.encode()), (k, got)
        assert not got[2]  # no session resource handed out on a rejection
    assert res["too_big"][3] == 16384  # Size1: the limit (RFC 7959 §4)
    c = svc.counters()
    assert c["coap"]["rejected"] == {
        "bad_content_type": 2,
        "missing_cookie": 1,
        "unknown_session": 2,
        "too_big": 1,
        "handshake_failed": 1,
        "bad_framing": 1,
        "bad_method": 1,
        "not_established": 1,
    }, c["coap"]["rejected"]
    assert c["messages_in"] == 100 and c["messages_out"] == 100


# ---- timeouts ----------------------------------------------------------------------


def test_half_open_and_idle_sessions_time_out(tmp_path):
    """A half-open HTTP or CoAP session ends after the link's
    handshake_timeout_ms, an established one after the service's
    idle_timeout_s; their cookie / resource is unknown afterwards."""
    svc = Svc(tmp_path, link=dict(LINK, handshake_timeout_ms=800), limits={"idle_timeout_s": 2})
    try:

        async def go():
            res = {}
            # half-open HTTP and CoAP sessions
            tls = TLSClient(psk_config())
            tls.start(0)
            ch = tls.data_to_send()
            h = hc.HttpTransport(svc.http)
            await h.post_flight(ch)
            co = hc.CoapTransport(svc.coap)
            await co.post_flight(ch)
            assert h.cookie and co.location
            # an established HTTP session, one message through
            tr = hc.HttpTransport(svc.http)
            client = hc.AtlsClient(tr, psk_config(b"device-2", PSK[::-1]))
            await client.connect()
            client.send(b"hello")
            while not [e for e in client.events() if e[0] == "message"]:
                await client.exchange(wait_ms=200)
            await client.exchange()  # its ACK
            await asyncio.sleep(1.5)  # > handshake_timeout_ms, < idle_timeout_s
            for name, t in (("http_half", h), ("coap_half", co)):
                try:
                    await t.post_packets([])
                    res[name] = "alive"
                except hc.TransportError as e:
                    res[name] = e.reason
            await client.exchange()  # still up: keeps it busy
            res["established_after_1.5s"] = client.link.state
            await asyncio.sleep(2.8)  # > idle_timeout_s (timers run every 10 ms)
            try:
                await client.exchange()
                res["idle"] = "alive"
            except hc.TransportError as e:
                res["idle"] = (e.status, e.reason)
            for t in (h, co, tr):
                await t.close()
            return res

        res = asyncio.run(go())
        assert res == {
            "http_half": "unknown_session",
            "coap_half": "unknown_session",
            "established_after_1.5s": "open",
            "idle": (403, "unknown_session"),
        }
        logs = svc.logs()
        assert logs.count('"reason": "handshake timeout"') == 2
        assert '"reason": "idle"' in logs
    finally:
        svc.stop()


# ---- retries, long poll, limits, HTTPS on the service ------------------------------


class TwiceTransport(hc.HttpTransport):
    """Posts every flight twice (a client retrying after a lost response)."""

    async def post_flight(self, flight):
        a = await hc.HttpTransport.post_flight(self, flight)
        b = await hc.HttpTransport.post_flight(self, flight)
        assert a == b
        return a


def test_http_repeated_flight_gets_the_same_answer(svc):
    """A retried flight is answered from the stored answer, not fed to
    OpenSSL again: the handshake still completes and the session works."""
    tr = TwiceTransport(svc.http)
    s = asyncio.run(hc.run(tr, psk_config(), 10, client=hc.AtlsClient(tr, psk_config())))
    check(s, 10)
    c = svc.counters()
    assert c["handshakes_ok"] == 1 and c["handshakes_failed"] == 0
    assert c["http"]["flights"] == 4 and c["http"]["sessions_total"] == 1


def test_http_long_poll_returns_when_the_service_has_packets(svc):
    """ATLS-Wait: an empty batch waits until the service's link has something
    to send — here the retransmission of an echo the client did not ACK
    (rto_ms 300) — and a poll with nothing coming returns empty after the wait."""

    async def go():
        tr = hc.HttpTransport(svc.http)
        client = hc.AtlsClient(tr, psk_config())
        await client.connect()
        client.send(b"ping")
        out = client.link.datagrams(client.clock())
        answer = await tr.post_packets(out)
        data = [p for p in answer if p[0] == 0xAB]  # the echo (DATA), not yet ACKed
        t0 = time.monotonic()
        again = await tr.post_packets([], wait_ms=5000)
        waited = time.monotonic() - t0
        for p in answer + again:
            client.link.receive(p, client.clock())
        await client.exchange()  # ACK it now
        t1 = time.monotonic()
        idle = await tr.post_packets([], wait_ms=400)
        waited_idle = time.monotonic() - t1
        await client.close()
        await tr.close()
        return data, again, waited, idle, waited_idle, client.link.state

    data, again, waited, idle, waited_idle, state = asyncio.run(go())
    assert len(data) == 1 and again == data  # the same sealed bytes again
    assert 0.15 < waited < 3.0
    assert idle == [] and 0.35 < waited_idle < 3.0
    assert state == "closed"


def test_http_busy_and_rate_limits(tmp_path):
    """max_half_open: a new session evicts the oldest half-open one (issue
    14: no busy while half-open sessions can go); the per-address token
    bucket -> 429 rate."""
    svc = Svc(tmp_path, limits={"max_half_open": 1, "rate_per_s": 1, "rate_burst": 5})
    try:

        async def go():
            tls = TLSClient(psk_config())
            tls.start(0)
            ch = tls.data_to_send()
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
                return [await _post(s, svc.http, ch, hb.CT_FLIGHT) for _ in range(6)]

        res = asyncio.run(go())
        assert [(r[0], r[1]) for r in res] == [(200, None)] * 5 + [(429, "rate")]
        c = svc.counters()
        assert c["http"]["rejected"] == {"rate": 1} and c["drops"]["evicted"] == 4
    finally:
        svc.stop()


def test_service_https_listener(tmp_path, creds):
    """The service's own HTTPS listener (config `https`): the CLI verifies it
    with --https-ca; the cookie is marked Secure."""
    mb = creds["mb"]
    (tmp_path / "h.pem").write_bytes(pki.pem(mb.cert))
    (tmp_path / "h.key").write_bytes(pki.pem(mb.key))
    (tmp_path / "h-ca.pem").write_bytes(pki.pem(creds["mb_ca"].cert))
    svc = Svc(tmp_path, https={"cert": "h.pem", "key": "h.key"})
    try:
        url = svc.http.replace("http://", "https://")
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "host_tools.atls_http_client",
                "--url",
                url,
                "--psk-id",
                "device-1",
                "--psk",
                PSK.hex(),
                "--count",
                "20",
                "--https-ca",
                str(tmp_path / "h-ca.pem"),
                "--quiet",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        s = json.loads(p.stdout.splitlines()[-1])
        check(s, 20)

        async def cookie():
            tls = TLSClient(psk_config())
            tls.start(0)
            ctx = ssl.create_default_context(cadata=pki.pem(creds["mb_ca"].cert).decode())
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    url, data=tls.data_to_send(), ssl=ctx, headers={"Content-Type": hb.CT_FLIGHT}
                ) as r:
                    return r.status, r.headers.getall("Set-Cookie")

        status, set_cookie = asyncio.run(cookie())
        assert status == 200 and len(set_cookie) == 1
        attrs = {a.strip().split("=")[0].lower() for a in set_cookie[0].split(";")[1:]}
        assert attrs == {"httponly", "path", "samesite", "secure"}
    finally:
        svc.stop()


@pytest.mark.parametrize("kind", ["http", "coap"])
def test_unregistered_certificate_is_refused_on_its_last_flight(tmp_path, creds, kind):
    """A device certificate from the trusted device CA that is not in the
    registry: TLS completes, the service refuses the last flight (400 / 4.00
    handshake_failed: not registered) - it does not answer as if the session
    were up and RESET the device later (PROTOCOL.md §5: a handshake the
    service refused ends with handshake_failed)."""
    svc = Svc(tmp_path, creds)
    stranger = pki.make_cert("device-x", issuer=creds["dev_ca"], client=True)
    cfg = ClientConfig(
        ca_certs=[pki.der(creds["ca"].cert)],
        server_name="service.local",
        client_certs=[pki.der(stranger.cert)],
        client_key=stranger.key.private_numbers().private_value.to_bytes(32, "big"),
    )

    async def go():
        tr = hc.make_transport(svc.http if kind == "http" else svc.coap)
        client = hc.AtlsClient(tr, cfg)
        try:
            await client.connect()
            return None
        except hc.TransportError as e:
            return e
        finally:
            await tr.close()

    try:
        err = asyncio.run(go())
        c = svc.counters()
    finally:
        svc.stop()
    assert err is not None and err.reason == "handshake_failed", err
    assert "not registered" in err.detail
    assert c["handshakes_failed"] == 1 and c["handshakes_ok"] == 0
    assert c[kind]["rejected"] == {"handshake_failed": 1} and c["resets_sent"] == 0
