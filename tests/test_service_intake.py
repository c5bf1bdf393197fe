"""The service under a first-flight flood (issue 14, docs/SECURITY.md): what
costs TLS work is scheduled (host_tools.service.admission.Intake), replayed
ClientHellos are refused before TLS, an IP's full queue refuses before any
parsing, refusals say when to come back (Retry-After / Max-Age) and the
project's clients wait that long, jittered; CoAP answers to an unvalidated
address stay within 3x (RFC 9175 §2.4 Echo).  The service runs in this
process with real OpenSSL; devices are the firmware modules."""

import asyncio
import os
import socket

import aiocoap
import pytest
from aiohttp import web
from test_bindings import Svc, cert_config, creds  # noqa: F401 - module fixture

from atls import wire
from atls.channel import key_block
from atls.link import Link, LinkConfig
from atls.tls.client import ClientConfig, TLSClient
from host_tools import http_binding as hb
from host_tools.atls_http_client import transports as tr
from host_tools.service import Service, admission
from host_tools.service.admission import DEFAULT_LIMITS
from host_tools.service.tls_engine import ServerConfig

PSK = bytes(range(32))


class Wire:
    def __init__(self):
        self.out = []

    def sendto(self, data, addr):
        self.out.append((bytes(data), addr))


def _service(**limits):
    svc = Service(ServerConfig(psks={b"dev-1": PSK}), LinkConfig(mtu=1200), limits=limits)
    svc.connection_made(Wire())
    return svc


def _hello(identity=b"dev-1"):
    tls = TLSClient(ClientConfig(psk=PSK, psk_identity=identity))
    tls.start()
    return tls, wire.encode_hs(0, 0, 0, tls.data_to_send(), True)


def test_replayed_client_hello_from_other_addresses_costs_no_handshake():
    """One ClientHello (valid binder) replayed from 300 addresses: each
    replay started a session and a whole handshake; now only the first does
    (RFC 8446 §4.1.2: a fresh random per ClientHello), and its own
    retransmission still reaches its session."""
    svc = _service()
    _, hello = _hello()
    for port in range(1000, 1300):
        svc.datagram_received(hello, ("192.0.2.%d" % (port % 50 + 1), port))
        svc.tick()
    assert svc.counters["sessions_total"] == 1
    assert svc.counters["drops"]["client_hello_replay"] == 299
    svc.datagram_received(hello, ("192.0.2.1", 1000))  # 1000 % 50 + 1 == 1
    assert svc.counters["sessions_total"] == 1
    assert svc.counters["drops"]["client_hello_replay"] == 299


def test_flood_from_one_ip_does_not_delay_another_ips_handshake():
    """500 fresh ClientHellos from one IP arrive in one batch before an
    honest device's, from another IP: the honest one is among the first two
    handshakes started (round robin across IPs), the flooding IP holds at
    most intake_per_ip queued flights, the rest are refused before parsing,
    and packets of an existing session are never queued."""
    svc = _service()
    svc.reader = type("Batch", (), {"batching": True})()  # as the batch reader does
    for port in range(500):
        svc.datagram_received(_hello(b"nobody")[1], ("198.51.100.7", 2000 + port))
    tls, hello = _hello()
    svc.datagram_received(hello, ("203.0.113.9", 5684))
    assert svc.counters["sessions_total"] == 0  # nothing started inside the batch
    assert len(svc.intake) == DEFAULT_LIMITS["intake_per_ip"] + 1
    assert svc.counters["drops"]["intake_full"] == 500 - DEFAULT_LIMITS["intake_per_ip"]
    started = []
    orig = svc._start
    svc.intake.run(lambda a, p, n: (started.append(a), orig(a, p, n)), svc.now_ms())
    assert ("203.0.113.9", 5684) in started[:2]


def test_honest_device_completes_while_a_flood_is_queued():
    """End to end in process: a flood of fresh ClientHellos from 2 IPs
    arrives every tick; the device's handshake and a message round trip
    complete, and TLS work started per tick stays within a slice."""
    svc = _service()
    w = svc.transport
    addr = ("203.0.113.9", 5684)
    tls = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev-1"))
    link = Link("client", LinkConfig(mtu=1200, rto_ms=200))
    tls.start()
    now = 0
    link.send_flight(tls.data_to_send(), now)
    got, port = [], 3000
    base = _hello(b"nobody")[1]
    for tick in range(300):  # noqa: B007 - read after the loop
        now += 10
        svc.reader = type("Batch", (), {"batching": True})()
        for _ in range(100):  # fresh ClientHellos (a new random each: not replays)
            port += 1
            flood = base[:16] + os.urandom(32) + base[48:]
            svc.datagram_received(flood, ("198.51.100.%d" % (port % 2), port))
        for d in link.datagrams(now):
            svc.datagram_received(d, addr)
        svc.reader = None
        svc.start_queued()
        svc.tick()
        out, w.out = [x for x in w.out if x[1] == addr], []
        for d, _ in out:
            link.receive(d, now)
        for ev in link.events():
            if ev[0] == "flight":
                tls.receive(ev[1])
                flight = tls.data_to_send()
                if flight:
                    link.send_flight(flight, now)
                if tls.connected and link.channel is None:
                    link.start_channel(key_block(tls), tls.suite)
                    link.send(b"ping", now)
            elif ev[0] == "message":
                got.append(ev[1])
        if got:
            break
    assert got == [b"ping"] and tick < 100
    assert svc.counters["sessions_total"] < (port - 3000) / 10  # most flood: no TLS work
    assert addr in svc.intake.known  # authenticated: its next first flights go first


def test_queued_flight_of_a_retransmitting_device_does_not_go_stale():
    """A flight that waits past intake_max_age_ms while its device keeps
    retransmitting it is still served.  It was dropped as stale (the
    retransmission kept the first one's time), and queued again from the
    back by the next one: behind a steady flood a device never started."""
    drops = []
    intake = admission.Intake(DEFAULT_LIMITS, drops.append)
    _, hello = _hello()
    addr = ("192.0.2.1", 1000)
    age = DEFAULT_LIMITS["intake_max_age_ms"]
    assert intake.put(addr, [hello], 0)
    assert intake.put(addr, [hello], age - 100)  # the device's retransmission
    assert intake.take(age + 100) == (addr, [hello])
    assert drops == []


def test_authenticated_address_gets_in_past_a_full_ip_queue():
    """Behind a gateway every device shares one IP with the spoofed first
    flights the gateway relays, so that IP's queue and rate are full of
    them: an address that authenticated before is refused for neither, and
    takes the place of the oldest flight of an unknown address."""
    drops = []
    lim = dict(DEFAULT_LIMITS, first_flights_per_ip_per_s=1, first_flights_per_ip_burst=8)
    intake = admission.Intake(lim, drops.append)
    gw = "127.0.0.1"
    for port in range(lim["intake_per_ip"]):
        assert intake.put((gw, port), [_hello(b"nobody")[1]], 0)
    dev = (gw, 40000)
    _, hello = _hello()
    assert intake.refuses(dev, hello, 1)  # unknown: refused unparsed, as before
    intake.validated(dev, 1)
    assert not intake.refuses(dev, hello, 2)
    assert intake.put(dev, [hello], 2)  # past the full queue and the empty bucket
    assert drops == ["intake_full", "intake_evicted"]
    served = [intake.take(3)[0] for _ in range(len(intake))]
    assert dev in served and (gw, 0) not in served


def test_intake_refuses_beyond_the_per_ip_rate():
    drops = []
    lim = dict(DEFAULT_LIMITS, first_flights_per_ip_per_s=1, first_flights_per_ip_burst=2)
    intake = admission.Intake(lim, drops.append)
    for port in range(5):
        hello = _hello()[1]
        intake.put(("192.0.2.1", port), [hello], 0)
    assert len(intake) == 2 and drops == ["first_flight_rate"] * 3


def test_backoff_honours_retry_after_with_jitter():
    assert tr.backoff_s(2, 0, rand=lambda: 0.0) == 2.0
    assert tr.backoff_s(2, 0, rand=lambda: 0.999) < 3.0
    assert tr.backoff_s(2, 2, rand=lambda: 0.0) == 8.0  # doubled per refusal in a row
    assert tr.backoff_s(0, 0, rand=lambda: 0.0) == 0.5  # never at once
    assert tr.backoff_s(1000, 0, rand=lambda: 0.0) == tr.MAX_BACKOFF_S


def test_http_client_waits_out_429_retry_after():
    """The project's HTTP client resent a refused request at once; now it
    waits the Retry-After the service gave (jittered) and then succeeds."""

    async def go():
        hits = []

        async def handle(request):
            hits.append(asyncio.get_running_loop().time())
            if len(hits) == 1:
                return web.Response(status=429, headers={"Retry-After": "0"})
            return web.Response(body=b"", content_type=hb.CT_DATA)

        app = web.Application()
        app.router.add_post("/atls", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        t = tr.HttpTransport("http://127.0.0.1:%d/atls" % port)
        try:
            assert await t.post_packets([]) == []
        finally:
            await t.close()
            await runner.cleanup()
        return hits, t.backoffs

    hits, backoffs = asyncio.run(go())
    assert len(hits) == 2 and backoffs == 1
    assert hits[1] - hits[0] >= 0.5  # backoff_s(0, 0) >= 0.5


@pytest.fixture
def svc(tmp_path, creds):  # noqa: F811
    s = Svc(tmp_path, creds)
    yield s
    s.stop()


def test_coap_answer_to_unvalidated_address_within_3x(svc, creds):  # noqa: F811
    """A spoofed CoAP POST of a certificate-mode ClientHello drew the whole
    server flight (over 1024 bytes, block-wise) to the spoofed address; now
    the answer is a 4.01 with an Echo (RFC 9175 §2.4) within 3x of the
    request, and the same request with that Echo gets the flight."""
    tls = TLSClient(cert_config(creds))
    tls.start()
    hello = tls.data_to_send()
    host, port = svc.coap.split("/")[2].rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)

    def post(mid, echo=None):
        m = aiocoap.Message(mtype=aiocoap.CON, mid=mid, token=bytes([mid]), code=aiocoap.POST)
        m.opt.uri_path = hb.COAP_PATH
        m.opt.content_format = hb.CF_FLIGHT
        if echo:
            m.opt.echo = echo
        m.payload = hello
        raw = m.encode()
        sock.sendto(raw, (host, int(port)))
        while True:
            got = sock.recv(4096)
            r = aiocoap.Message.decode(got)
            if r.code != aiocoap.EMPTY:  # not a bare ACK
                return raw, got, r

    try:
        req, raw, first = post(1)
        _, _, second = post(2, first.opt.echo)
    finally:
        sock.close()
    assert first.code == aiocoap.UNAUTHORIZED and first.opt.echo
    assert len(raw) <= 3 * len(req)
    assert second.code == aiocoap.CREATED and len(second.payload) > 3 * len(req) // 2
    assert svc.counters()["coap"]["echo_challenges"] == 1


def test_coap_client_answers_the_echo_and_completes(svc, creds):  # noqa: F811
    """The project's CoAP client repeats a request with the service's Echo."""
    from host_tools import atls_http_client as hc

    async def go():
        t = tr.CoapTransport(svc.coap)
        client = hc.AtlsClient(t, cert_config(creds))
        try:
            await client.connect()
            return t.requests
        finally:
            await t.close()

    assert asyncio.run(go()) >= 3  # ClientHello, again with the Echo, the client's flight


def test_binder_check_verdicts_rfc8446_4_2_11_2():
    """One SHA-256 + HMAC (RFC 8446 §4.2.11.2) says what OpenSSL would."""
    from host_tools.service.binder_check import BinderCheck

    check = BinderCheck({b"dev-1": PSK})
    t2 = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev-1"))
    t2.start()
    flight = t2.data_to_send()
    assert check.verdict(flight) is True
    assert check.verdict(flight[:11] + os.urandom(32) + flight[43:]) is False  # new random
    assert BinderCheck({b"dev-1": PSK[::-1]}).verdict(flight) is False  # wrong key
    assert BinderCheck({}).verdict(flight) is False  # unknown identity: the same verdict
    t3 = TLSClient(ClientConfig(ca_certs=[b"\x30\x00"], server_name="x"))
    t3.start()
    assert check.verdict(t3.data_to_send()) is None  # no PSK offered: OpenSSL decides
    for n in range(len(flight)):  # truncated anywhere: never an exception
        assert check.verdict(flight[:n]) in (None, False)


def test_wrong_binders_get_no_tls_work_while_others_wait():
    """50 fresh ClientHellos with the registered identity and a binder that
    no longer verifies, queued from 10 IPs: each took a TLS session (~0.5 ms
    in OpenSSL); now, while others wait, they are dropped by the binder
    check and an honest one still starts."""
    svc = _service()
    svc.reader = type("Batch", (), {"batching": True})()
    base = _hello()[1]
    for port in range(50):
        flood = base[:16] + os.urandom(32) + base[48:]
        svc.datagram_received(flood, ("198.51.100.%d" % (port % 10 + 1), 4000 + port))
    svc.datagram_received(_hello()[1], ("203.0.113.9", 5684))
    svc.reader = None
    for _ in range(20):
        svc.start_queued()
    assert svc.counters["drops"]["bad_binder"] >= 49
    assert svc.counters["sessions_total"] <= 2 and svc.counters["handshakes_failed"] <= 1


def test_batch_reader_reads_every_datagram_in_batches():
    """asyncio's datagram transport reads one datagram per loop turn; the
    batch reader drains the socket instead, and the transport itself reads
    nothing (it used to race the reader: its reader is added after
    connection_made)."""
    from host_tools.udp_reader import BatchReader

    class Proto(asyncio.DatagramProtocol):
        def __init__(self):
            self.batched, self.direct, self.batches = 0, 0, 0

        def connection_made(self, t):
            self.reader = BatchReader.attach(t, self.got, self.after)

        def got(self, data, addr):
            self.batched += 1

        def datagram_received(self, data, addr):
            self.direct += 1

        def after(self):
            self.batches += 1

    async def go():
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(500):
            s.sendto(b"x" * 100, t.get_extra_info("sockname"))
        await asyncio.sleep(0.3)
        s.close()
        t.close()
        await asyncio.sleep(0.05)
        return p

    p = asyncio.run(go())
    assert p.direct == 0 and p.batched == 500 and p.batches <= 3


def test_first_handshake_from_behind_a_gateway_gets_in_past_its_relayed_flood():
    """A device's *first* ClientHello from behind a gateway (a new address:
    not known yet) was refused with the spoofed flights the gateway relays
    once that IP's queue was full.  Now a flight refused for a full queue
    or the IP's rate whose binder verifies takes an unknown flight's place:
    binder_checks_per_ip_per_s per IP (burst 2x), first_flights_per_ip_per_s
    at a fleet IP (one that devices authenticated from); past that budget,
    and for wrong binders, refused as before."""
    drops = []
    lim = dict(
        DEFAULT_LIMITS,
        first_flights_per_ip_per_s=1,
        first_flights_per_ip_burst=8,
        binder_checks_per_ip_per_s=1,
    )
    intake = admission.Intake(lim, drops.append, psks={b"dev-1": PSK})
    for ip in ("127.0.0.1", "192.0.2.9"):
        for port in range(lim["intake_per_ip"]):
            assert intake.put((ip, port), [_hello(b"nobody")[1]], 0)
    gw, other = "127.0.0.1", "192.0.2.9"
    assert not intake.put((other, 50), [_hello(b"nobody")[1]], 1)  # check 1: unknown identity
    assert not intake.refuses((other, 51), _hello()[1], 1)  # a check left: parsed
    assert intake.put((other, 51), [_hello()[1]], 1)  # check 2: verifies, in
    assert intake.refuses((other, 52), _hello()[1], 1)  # budget spent: refused unread
    assert drops == ["intake_full", "intake_evicted", "intake_full"]
    intake.validated((gw, 40000), 0)  # a device behind the gateway, earlier: a fleet IP
    good = _hello()[1]
    for port in range(5):  # past the queue and the IP's rate, its budget is the IP's
        assert not intake.put((gw, 100 + port), [_hello(b"nobody")[1]], 2)
    assert intake.put((gw, 40001), [good], 2)
    assert intake.put((gw, 40001), [good], 3)  # its retransmission: in place
    assert not intake.put((gw, 40003), [good], 3)  # the same hello elsewhere: a replay
    assert drops[-1] == "client_hello_replay" and drops.count("intake_evicted") == 2


def test_coap_exchanges_bounded_per_session_and_per_ip(tmp_path):
    """The bounds of the HTTP binding hold for CoAP exchanges too (one
    BindingCore): a session's third waiting request answers its oldest at
    once, and past max_requests_per_ip requests in progress from one
    address a request gets 5.03 busy with Max-Age."""
    from test_bindings import Svc

    from host_tools import atls_http_client as hc

    svc = Svc(tmp_path, limits={"max_requests_per_ip": 3, "max_pending_polls": 10})

    async def go():
        trs = []
        for ident, psk in ((b"device-1", PSK), (b"device-2", PSK[::-1])):
            tr = hc.CoapTransport(svc.coap)
            await hc.AtlsClient(tr, ClientConfig(psk=psk, psk_identity=ident)).connect()
            trs.append(tr)
        t0 = asyncio.get_running_loop().time()
        done = []

        async def poll(tr, tag):
            await tr.post_packets([], wait_ms=6000)
            done.append((tag, round(asyncio.get_running_loop().time() - t0, 1)))

        tasks = []
        for tr, tag in ((0, "a0"), (0, "a1"), (0, "a2"), (1, "b0")):
            tasks.append(asyncio.ensure_future(poll(trs[tr], tag)))
            await asyncio.sleep(0.3)
        early = list(done)  # a2 cut a0; a1, a2, b0: 3 in progress from this address
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        msg = aiocoap.Message(code=aiocoap.POST, uri=svc.coap, payload=b"\x16\x03\x01")
        msg.opt.content_format = hb.CF_FLIGHT
        r = await asyncio.wait_for(ctx.request(msg).response, 10)
        await ctx.shutdown()
        for t in tasks:
            t.cancel()
        for tr in trs:
            await tr.close()
        return early, (str(r.code), r.opt.max_age)

    try:
        early, busy = asyncio.run(go())
        assert [t for t, _ in early] == ["a0"] and early[0][1] < 2, early
        assert busy[0].startswith("5.03") and busy[1] == 10
    finally:
        svc.stop()
