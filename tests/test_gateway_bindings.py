"""The gateway forwards ZigBee devices' ATLS traffic to the service over UDP,
HTTP(S) or CoAP (issue 8; host_tools/gateway/relay.py, docs/BINDINGS.md
"Gateway").  Real processes, loopback only.

* End to end (sim.fleet: emulated 802.15.4 radio and XBees, the gateway
  process on the coordinator's pty, the service process with its UDP, HTTP
  and CoAP listeners, MicroPython unix-port devices running firmware/main.py):
  four devices paired to four services of one gateway - UDP, HTTP, CoAP, and
  HTTPS through a TLS-terminating reverse proxy trusted by a configured CA -
  each complete a session and 100 messages each way exactly once; every byte
  the gateway sent toward the service (recorded by taps on each leg, and the
  proxy's decrypted view) is free of the plaintext the devices and the
  service exchanged.
* In process (the firmware's DeviceSession under CPython as the device, a
  RelayFlow as the gateway's relay, a real service process): flights are
  posted and answered byte for byte, fragments fit the radio MTU, the device
  adopts the service's session id; `unknown_session` from the service, an
  unknown session id after a gateway restart, a refused handshake and a
  device restarting its handshake each end in the documented way.
* Config: service specs, per-device routes, bad configs refused.
"""

import asyncio
import json
import os
import socket
import ssl
import sys
import threading
import time

import aiohttp
import pytest
from aiohttp import web
from e2e import ServiceProc

from atls import wire
from atls.link import LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools import gateway as G
from host_tools import pki
from host_tools.gateway import relay
from host_tools.gateway.config import Target
from host_tools.service.dedupe import stored_reset_keys, token_under
from host_tools.toolchain import free_port

pytestmark = pytest.mark.timeout(150)

PSK = bytes(range(32))
MTU = 66  # the emulated XBee's NP with network encryption (sim/radio.py)


def _now():
    return int(time.monotonic() * 1000)


# ---- config ---------------------------------------------------------------------------


def _config(tmp_path, services, **extra):
    p = tmp_path / "gw.json"
    p.write_text(json.dumps(dict({"services": services, "state_dir": "st"}, **extra)))
    return G.Config(p)


def test_config_services_udp_http_https_coap_and_routes(tmp_path):
    ca = pki.make_ca("Relay Test CA")
    (tmp_path / "ca.pem").write_bytes(pki.pem(ca.cert))
    c = _config(
        tmp_path,
        {
            "default": "127.0.0.1:5684",
            "udp2": {"udp": "10.0.0.1:7"},
            "web": {
                "url": "https://user:secret@svc.example:8443/atls",
                "ca": "ca.pem",
                "poll_ms": 5000,
            },
            "plain": {"url": "http://127.0.0.1:8080/atls"},
            "coap": {"url": "coap://127.0.0.1:5683/.well-known/atls"},
        },
        routes={"DEV-7": "coap", "0013a20041000001": "web"},
        relay={"rto_ms": 500},
    )
    assert c.services["default"] == ("127.0.0.1", 5684) and c.services["udp2"] == ("10.0.0.1", 7)
    web_t, coap_t = c.services["web"], c.services["coap"]
    assert web_t.kind == "http" and isinstance(web_t.ssl, ssl.SSLContext)
    assert web_t.opts["poll_ms"] == 5000 and web_t.opts["rto_ms"] == 500  # service > relay
    assert c.services["plain"].ssl is None and coap_t.kind == "coap"
    assert web_t.describe() == "https://svc.example:8443/atls"  # no credentials in logs
    assert "secret" not in G.describe_service(web_t)
    assert G.describe_service(c.services["default"]) == "udp:127.0.0.1:5684"
    assert c.routes == {"dev-7": "coap", "0013a20041000001": "web"}
    insecure = _config(tmp_path, {"s": {"url": "https://h/atls", "insecure": True}})
    assert insecure.services["s"].ssl is False


def test_config_defaults_as_documented(tmp_path):
    """A config naming only a service gets the defaults config.py documents."""
    from host_tools.gateway.config import DEFAULT_LIMITS, DEFAULT_RELAY

    p = tmp_path / "gw.json"
    p.write_text(json.dumps({"services": {"default": ":5684"}}))
    c = G.Config(p)
    assert c.services == {"default": ("127.0.0.1", 5684)}
    assert (c.serial, c.baudrate, c.escaped, c.routes) == (None, 115200, False, {})
    assert (c.udp_listen, c.capture, c.join_window_s, c.auto_confirm) == (None, None, 60, False)
    assert c.state_dir == tmp_path / "gateway-state"
    assert c.pairing_path == tmp_path / "gateway-state" / "pairing.json"
    assert (
        c.limits
        == DEFAULT_LIMITS
        == {
            "rate_per_s": 50,
            "rate_burst": 100,
            "max_devices": 1000,
            "max_payload": 84,
            "max_pending_pairings": 32,
        }
    )
    assert c.relay == DEFAULT_RELAY and DEFAULT_RELAY["poll_ms"] == 15000


@pytest.mark.parametrize(
    "services,extra,msg",
    [
        ({"s": {"url": "ftp://h/atls"}}, {}, "url must be"),
        ({"s": {"url": "http://h/atls", "ca": "ca.pem"}}, {}, "only apply to https"),
        ({"s": {"url": "coap://h/x", "insecure": True}}, {}, "only apply to https"),
        ({"s": {"url": "https://h/atls", "ca": "missing.pem"}}, {}, "service 's'"),
        ({"s": {"url": "http://h/atls", "colour": 1}}, {}, "unknown keys"),
        ({"s": {"url": "http://h/atls", "poll_ms": 40000}}, {}, "timeout_s must exceed"),
        ({"s": {"url": "http://h/atls", "queue": 0}}, {}, "positive integer"),
        ({"s": {"url": "http://h/atls"}}, {"relay": {"bogus": 1}}, "unknown keys"),
        ({"s": "127.0.0.1:1"}, {"routes": {"dev-1": "nope"}}, "unknown service"),
        ({"s": "no-port"}, {}, "host:port"),
    ],
)
def test_config_rejects_bad_services(tmp_path, services, extra, msg):
    with pytest.raises(G.GatewayError) as e:
        _config(tmp_path, services, **extra)
    assert msg in str(e.value)


# ---- in process: a device (CPython, the firmware's modules) and one RelayFlow ----------


class Svc(ServiceProc):
    def __init__(self, tmp, devices=None, http=0, **kw):
        ServiceProc.__init__(
            self,
            tmp,
            devices=devices or {"dev-a": PSK},
            link={"mtu": MTU, "rto_ms": 300, "rto_max_ms": 2000},
            limits={"rate_per_s": 5000, "rate_burst": 10000},
            extra={"http_listen": "127.0.0.1:%d" % http, "coap_listen": "127.0.0.1:0"},
            **kw,
        )
        addrs = json.loads((self.tmp / "service.ready.json").read_text())
        self.http = "http://%s/atls" % addrs["http"]
        self.coap = "coap://%s/.well-known/atls" % addrs["coap"]


@pytest.fixture
def svc(tmp_path):
    s = Svc(tmp_path)
    yield s
    s.stop()


class Recording:
    """Wraps the relay's transports: every flight posted and every answer."""

    flights = []

    @classmethod
    def install(cls, monkeypatch):
        cls.flights = []
        for name in ("HttpTransport", "CoapTransport"):
            base = getattr(relay, name)

            class Rec(base):
                async def post_flight(self, flight, _base=base):
                    answer = await _base.post_flight(self, flight)
                    Recording.flights.append((bytes(flight), bytes(answer)))
                    return answer

            monkeypatch.setattr(relay, name, Rec)


def reassemble(packets, flight):
    """The bytes of one flight from HS/HS_END fragments (first copy of each)."""
    frags = {}
    end = None
    for p in packets:
        t = p[0] & 7
        if t <= wire.HS_END and p[3] == flight:
            frags.setdefault(p[4], bytes(p[5:]))
            if t == wire.HS_END:
                end = p[4]
    assert end is not None and sorted(frags) == list(range(end + 1))
    return b"".join(frags[i] for i in range(end + 1))


class Radio:
    """The device's side: DeviceSession + a radio made of two lists.  Packets
    from the relay are delivered on the next turn, like frames in flight."""

    def __init__(self, target, identity=b"dev-a", psk=PSK, **link):
        self.counters = relay.new_counters()
        self.clients = relay.Clients()
        self.flow = self.new_flow(target)
        self.dev = DeviceSession(
            ClientConfig(psk=psk, psk_identity=identity),
            LinkConfig(mtu=MTU, rto_ms=300, rto_max_ms=2000, **link),
            retry_ms=200,
            retry_max_ms=1000,
        )
        self.up = []  # every packet device -> relay
        self.down = []  # every packet relay -> device
        self.inbox = []
        self.events = []

    def new_flow(self, target):
        """A fresh RelayFlow: what a restarted gateway has for this device."""
        self.flow = relay.RelayFlow(
            ("zb", bytes(8)), target, self._down, self.clients, self.counters, MTU
        )
        return self.flow

    def _down(self, flow, pkt):
        assert flow is self.flow and 0 < len(pkt) <= MTU
        self.down.append(bytes(pkt))
        self.inbox.append(bytes(pkt))

    def kinds(self, kind):
        return [e for e in self.events if e[0] == kind]

    async def run(self, until, timeout=20.0):
        if self.dev.state == "idle":
            self.dev.connect(_now())
        end = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < end, (self.events[-5:], self.counters)
            inbox, self.inbox = self.inbox, []
            for p in inbox:
                self.dev.receive(p, _now())
            for d in self.dev.datagrams(_now()):
                self.up.append(bytes(d))
                self.flow.send(bytes(d))
            self.events += self.dev.events()
            await asyncio.sleep(0.003)

    async def exchange(self, n, tag=b"m"):
        """Send n messages, wait until each is acknowledged and echoed."""
        msgs = [b"%s-%04d" % (tag, i) for i in range(n)]
        got0 = len(self.kinds("message"))
        acked0 = len(self.kinds("delivered"))
        sent = 0

        def done():
            nonlocal sent
            while sent < n and len(self.dev.pending()) < 8:
                self.dev.send(msgs[sent], _now())
                sent += 1
            return (
                len(self.kinds("message")) - got0 >= n
                and len(self.kinds("delivered")) - acked0 >= n
            )

        await self.run(done)
        return msgs, [bytes(e[1]) for e in self.kinds("message")[got0:]]

    async def close(self):
        self.flow.close()
        await self.clients.close()


@pytest.mark.parametrize("kind", ["http", "coap"])
def test_relay_in_process_flights_unmodified_sid_adopted(svc, kind, monkeypatch):
    """Each device flight reassembled from its radio fragments is exactly what
    was posted, each answer exactly what the device got back as fragments (at
    most the MTU each); the device uses the session id the service named;
    then 40 messages each way through post_packets, in order, once."""
    Recording.install(monkeypatch)
    target = Target(
        "svc",
        {
            "url": svc.http if kind == "http" else svc.coap,
            "rto_ms": 300,
            "rto_max_ms": 2000,
            "poll_ms": 2000,
        },
    )

    async def go():
        r = Radio(target)
        try:
            await r.run(lambda: r.dev.state == "up")
            sid = r.flow.sess.sid
            msgs, echoes = await r.exchange(40)
            return r, sid, msgs, echoes
        finally:
            await r.close()

    r, sid, msgs, echoes = asyncio.run(go())
    assert echoes == msgs  # the echo app: exactly once, in order
    assert r.dev.link.session_id == sid and 0 < sid <= 0xFFFF
    flights = Recording.flights
    assert len(flights) == 2  # PSK: ClientHello, then client Finished
    assert flights[0][0] == reassemble(r.up, 0) and flights[1][0] == reassemble(r.up, 2)
    assert flights[0][1] == reassemble(r.down, 1) and flights[1][1] == b""
    first = [p for p in r.up if p[0] & 7 <= wire.HS_END and p[3] == 0]
    assert first and all(p[1:3] == b"\x00\x00" for p in first)  # §1: sid 0 on flight 0
    assert all(p[1:3] == sid.to_bytes(2, "big") for p in r.down)  # never the placeholder
    assert len([p for p in r.down if p[3] == 1 and p[0] & 7 <= wire.HS_END]) >= 2  # fragmented
    c = r.counters
    assert c["sessions"] == 1 and c["handshakes"] == 1 and c["active"] == 0
    assert c["flights_up"] == 2 and c["flights_down"] == 1 and c["error_packets"] == 0
    assert c["packets_up"] >= 41 and c["packets_down"] >= 41 and c["errors"] == {}
    s = svc.counters()
    assert s["handshakes_ok"] == 1 and s["messages_in"] == 40 and s["messages_out"] == 40
    assert s[kind]["sessions_total"] == 1 and s[kind]["rejected"] == {}


def _resets(packets):
    return [p for p in packets if p[0] & 7 == wire.ERROR and p[3] == wire.RESET]


def test_relay_unknown_session_and_gateway_restart_make_the_device_rehandshake(tmp_path):
    """PROTOCOL.md §5, BINDINGS.md "Relay": the service restarts and no longer
    has the session: the device's next batch (or the relay's probe) gets the
    service's RESET for that session id, which the relay forwards unchanged;
    the device ends the session on it (the token from the service's HELLO)
    and re-handshakes, and its unacknowledged messages go through the new
    session exactly once.  A restarted gateway (a fresh RelayFlow) has no
    say over the device's session: it sends the device nothing (no forged
    ERROR), the service still holds the session so there is no RESET either,
    and the device finds the dead path by its own peer timeout."""
    port = free_port(socket.SOCK_STREAM)
    svc = Svc(tmp_path, http=port)
    url = svc.http

    async def go():
        nonlocal svc
        target = Target("svc", {"url": url, "rto_ms": 300, "rto_max_ms": 2000, "poll_ms": 2000})
        r = Radio(target, peer_timeout_ms=3000)
        try:
            await r.run(lambda: r.dev.state == "up")
            a = await r.exchange(10, b"a")
            first_sid = r.flow.sess.sid
            svc.stop()  # the service restarts: it has lost the session (same reset.key)
            svc = Svc(tmp_path, http=port)
            b = await r.exchange(10, b"b-after-restart")  # DATA longer than a RESET
            second_sid = r.flow.sess.sid
            r.new_flow(target)  # the gateway restarted: no relay state for the device
            c = await r.exchange(10, b"c-gateway-restarted")
            return r, a, b, c, first_sid, second_sid
        finally:
            await r.close()

    try:
        r, a, b, c, sid1, sid2 = asyncio.run(go())
        s = svc.counters()
    finally:
        svc.stop()
    for msgs, echoes in (a, b, c):
        assert sorted(set(echoes)) == msgs  # every message echoed (exactly once by the app)
    # the restarted service's RESET: the token under the run before's key
    token = token_under(stored_reset_keys(tmp_path / "service-state")[1], sid1)
    reset = wire.encode(wire.ERROR, sid1, bytes((wire.RESET,)) + token)
    errors = [p for p in r.down if p[0] & 7 == wire.ERROR]
    assert errors and set(errors) == {reset}  # the service's RESET, nothing forged
    assert [e[1] for e in r.kinds("down")] == ["reset", "peer_timeout"]
    assert r.dev.handshakes_ok == 3 and len({sid1, sid2, r.dev.link.session_id}) == 3
    k = r.counters
    assert k["error_packets"] == 0 and k["resets_down"] == len(errors)
    assert k["drops"].get("unknown_session", 0) >= 1 and k["probes"] >= 1
    assert k["handshakes"] == 3
    # the restarted service: the RESET, then both new sessions; nothing twice
    assert s["resets_sent"] >= 1 and s["handshakes_ok"] == 2 and s["messages_in"] == 20
    rej = s["http"]["rejected"]
    assert rej.get("unknown_session", 0) >= 1 and rej.get("missing_cookie", 0) >= 1


def test_relay_probe_after_gateway_and_service_restart_gets_the_reset(tmp_path):
    """Both the gateway and the service restarted: the fresh relay has no
    cookie for the device's session, so it posts the device's sealed packet
    alone, without one (a probe); the service, which does not hold that
    session id either, answers with its RESET, which reaches the device
    unchanged and ends the session at once (no peer timeout: it is 60 s
    here); the device re-handshakes and its message goes through once."""
    port = free_port(socket.SOCK_STREAM)
    svc = Svc(tmp_path, http=port)
    url = svc.http

    async def go():
        nonlocal svc
        target = Target("svc", {"url": url, "rto_ms": 300, "rto_max_ms": 2000, "poll_ms": 2000})
        r = Radio(target)  # peer_timeout_ms: the default 60 s
        try:
            await r.run(lambda: r.dev.state == "up")
            sid = r.flow.sess.sid
            r.flow.close()
            svc.stop()
            svc = Svc(tmp_path, http=port)
            r.new_flow(target)
            msgs, echoes = await r.exchange(3, b"after-both-restarted")
            return r, sid, msgs, echoes
        finally:
            await r.close()

    try:
        r, sid, msgs, echoes = asyncio.run(go())
        s = svc.counters()
    finally:
        svc.stop()
    assert sorted(set(echoes)) == msgs
    token = token_under(stored_reset_keys(tmp_path / "service-state")[1], sid)
    reset = wire.encode(wire.ERROR, sid, bytes((wire.RESET,)) + token)
    errors = [p for p in r.down if p[0] & 7 == wire.ERROR]
    assert errors and set(errors) == {reset}
    assert [e[1] for e in r.kinds("down")] == ["reset"]
    k = r.counters
    assert k["probes"] >= 1 and k["resets_down"] == len(errors) and k["error_packets"] == 0
    assert s["resets_sent"] >= 1 and s["handshakes_ok"] == 1 and s["messages_in"] == 3


def test_relay_refused_handshake_and_device_restart(svc):
    """A PSK the service does not know: the flight gets 400 handshake_failed
    and the device an ERROR handshake_failed for session 0 (it has no id
    yet), which it takes as a hint (§5: back off, never fatal); it retries
    until its handshake times out, every answer addressed to session 0.  A
    device that starts a new handshake while its session is open gets a new
    relay session (the old one is dropped)."""

    async def go():
        target = Target(
            "svc", {"url": svc.coap, "rto_ms": 300, "rto_max_ms": 2000, "poll_ms": 2000}
        )
        bad = Radio(target, psk=bytes(32), handshake_timeout_ms=4000)
        hints = [0]

        def down():
            if bad.dev.link is not None:  # ERRORs the device took as hints (§5)
                hints[0] = max(hints[0], bad.dev.link.counters["hints"])
            return bad.kinds("down")

        try:
            await bad.run(down)
        finally:
            await bad.close()
        good = Radio(target)
        try:
            await good.run(lambda: good.dev.state == "up")
            old = good.flow.sess
            await good.exchange(5)
            good.dev.connect(_now())  # e.g. a reboot: a new ClientHello with sid 0
            await good.run(lambda: good.dev.state == "up" and good.flow.sess is not old)
            msgs, echoes = await good.exchange(5, b"after")
        finally:
            await good.close()
        return bad, hints[0], good, old, msgs, echoes

    bad, hints, good, old, msgs, echoes = asyncio.run(go())
    assert bad.kinds("down")[0][1] == "handshake_timeout"
    errors = [p for p in bad.down if p[0] & 7 == wire.ERROR]
    assert errors and set(errors) == {wire.encode(wire.ERROR, 0, b"\x02")}
    assert hints >= 1 and bad.dev.handshakes_ok == 0
    n = bad.counters["errors"]["flight_handshake_failed"]
    assert bad.counters["errors"] == {"flight_handshake_failed": n} and n == len(errors)
    assert bad.counters["handshakes"] == 0 and bad.counters["active"] == 0
    assert echoes == msgs and old.state == relay.DEAD
    assert good.counters["errors"].get("device_restarted") == 1
    assert good.counters["sessions"] == 2 and good.counters["handshakes"] == 2
    s = svc.counters()
    assert s["handshakes_failed"] == n and s["handshakes_ok"] == 2


def test_relay_refused_later_flight_carries_the_assigned_session_id(svc, monkeypatch):
    """§5: the service refuses the device's second flight (client Finished)
    after it assigned a session id: the relay's ERROR handshake_failed
    carries that id - the one the device has - and the device, whose channel
    is not confirmed yet, ends the attempt (handshake_failed), no hint."""
    base = relay.HttpTransport

    class RefuseSecond(base):
        flights = 0

        async def post_flight(self, flight):
            RefuseSecond.flights += 1
            if RefuseSecond.flights == 2:
                raise relay.TransportError(400, "handshake_failed", "handshake_failed: test")
            return await base.post_flight(self, flight)

    monkeypatch.setattr(relay, "HttpTransport", RefuseSecond)
    target = Target("svc", {"url": svc.http, "rto_ms": 300, "rto_max_ms": 2000})

    async def go():
        r = Radio(target)
        try:
            await r.run(lambda: r.kinds("down") or r.kinds("failed"))
            return r, r.dev.last_error
        finally:
            await r.close()

    r, last = asyncio.run(go())
    sids = {p[1:3] for p in r.down if p[0] & 7 != wire.ERROR}
    assert len(sids) == 1 and sids != {b"\x00\x00"}  # the service flight named the id
    sid = int.from_bytes(sids.pop(), "big")
    errors = [p for p in r.down if p[0] & 7 == wire.ERROR]
    assert errors == [wire.encode(wire.ERROR, sid, b"\x02")]
    assert last == "handshake_failed" and r.dev.state != "up"
    assert r.counters["errors"] == {"flight_handshake_failed": 1}


# ---- end to end: MicroPython devices, emulated radio, gateway and service processes ----

HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class Taps:
    """Recorders between the gateway and the service, on their own event loop
    in a thread: a UDP NAT (one upstream socket per client, so the service
    still sees one address per flow), a TCP tap and a TLS-terminating
    reverse proxy (aiohttp; HTTPS in with its own certificate, HTTP out).
    `seen[leg]` holds every payload / stream chunk / decrypted message."""

    def __init__(self):
        self.seen = {}
        self.proxy_log = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._closers = []

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def _rec(self, leg, data):
        self.seen.setdefault(leg, []).append(bytes(data))

    async def udp(self, leg, target):
        loop = asyncio.get_running_loop()
        taps = self
        ups = {}

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                taps._rec(leg, data)
                if addr not in ups:
                    front = self.t

                    class Back(asyncio.DatagramProtocol):
                        def datagram_received(self, d, _):
                            taps._rec(leg, d)
                            front.sendto(d, addr)

                    ups[addr] = [None, [data]]
                    loop.create_task(self._open(addr, Back))
                elif ups[addr][0] is None:
                    ups[addr][1].append(data)
                else:
                    ups[addr][0].sendto(data)

            async def _open(self, addr, back):
                t, _ = await loop.create_datagram_endpoint(back, remote_addr=target)
                self_ = ups[addr]
                for d in self_[1]:
                    t.sendto(d)
                self_[0] = t
                taps._closers.append(t.close)

        t, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._closers.append(t.close)
        return t.get_extra_info("sockname")[1]

    async def tcp(self, leg, target):
        async def conn(reader, writer):
            ur, uw = await asyncio.open_connection(*target)

            async def pipe(r, w):
                try:
                    while True:
                        d = await r.read(65536)
                        if not d:
                            break
                        self._rec(leg, d)
                        w.write(d)
                        await w.drain()
                except (ConnectionError, asyncio.CancelledError):
                    pass
                finally:
                    w.close()

            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

        server = await asyncio.start_server(conn, "127.0.0.1", 0)
        self._closers.append(server.close)
        return server.sockets[0].getsockname()[1]

    async def tls_proxy(self, leg, upstream, cred, tmp):
        (tmp / "mb.pem").write_bytes(pki.pem(cred.cert))
        (tmp / "mb.key").write_bytes(pki.pem(cred.key))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "mb.pem", tmp / "mb.key")
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

        async def handle(request):
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
            try:
                async with session.request(
                    request.method, upstream + request.path_qs, data=body, headers=headers
                ) as r:
                    rbody = await r.read()
                    rheaders = [(k, v) for k, v in r.headers.items() if k.lower() not in HOP]
                    status = r.status
            except aiohttp.ClientError:  # the service went away (teardown)
                return web.Response(status=502)
            self.proxy_log.append(
                {
                    "secure": request.secure,
                    "ctype": request.content_type,
                    "status": status,
                    "rtype": r.content_type,
                    "body": body,
                    "resp_body": rbody,
                }
            )
            self._rec(
                leg,
                repr(sorted(request.headers.items())).encode()
                + body
                + repr(rheaders).encode()
                + rbody,
            )
            resp = web.Response(status=status, body=rbody)
            for k, v in rheaders:
                resp.headers.add(k, v)
            return resp

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()

        async def close():
            await runner.cleanup()
            await session.close()

        self._aclose = close
        return runner.addresses[0][1]

    def stop(self):
        async def close():
            for c in self._closers:
                c()
            if getattr(self, "_aclose", None):
                await self._aclose()

        try:
            self.call(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def _fleet_class():
    from sim.fleet import Fleet  # sim/ is importable: pytest runs from ROOT

    class BindingsFleet(Fleet):
        """sim.fleet.Fleet with the service's HTTP/CoAP listeners on, the
        taps in front of each, and one gateway service per transport."""

        ROUTE = {
            "dev-01": "udp",
            "dev-02": "web",
            "dev-03": "coap",
            "dev-04": "mb",
            "dev-05": "mb-untrusted",
        }

        def __init__(self, tmp, taps, creds, **kw):
            self.tmp = tmp
            self.taps = taps
            self.tls_creds = creds
            Fleet.__init__(self, devices=len(self.ROUTE), workdir=tmp / "fleet", quiet=True, **kw)

        def start_service(self):
            cfg = {
                "listen": "127.0.0.1:0",
                "http_listen": "127.0.0.1:0",
                "coap_listen": "127.0.0.1:0",
                "registry": "devices.json",
                "link": {
                    "mtu": self.radio_state["np"],
                    "rto_ms": 500,
                    "rto_max_ms": 4000,
                    "handshake_timeout_ms": 60000,
                },
                # every HTTP/CoAP request of the gateway comes from one address
                "limits": {"idle_timeout_s": 600, "rate_per_s": 5000, "rate_burst": 10000},
                "app": "sim.sim_app:RecordingEchoApp",
            }
            (self.dir / "service.json").write_text(json.dumps(cfg))
            ready = self.dir / "service.ready"
            env = dict(os.environ, ATLS_SIM_RECORD=str(self.dir / "deliveries.jsonl"))
            p = self.spawn(
                "service",
                [
                    sys.executable,
                    "-m",
                    "host_tools.service",
                    "--config",
                    str(self.dir / "service.json"),
                    "--stats",
                    str(self.dir / "service-stats.json"),
                    "--ready-file",
                    str(ready),
                ],
                env=env,
            )
            deadline = time.time() + 20
            while not (ready.exists() and ready.read_text().strip()):
                assert p.poll() is None and time.time() < deadline, "service did not start"
                time.sleep(0.05)
            self.addrs = json.loads((self.dir / "service.ready.json").read_text())
            host, port = self.addrs["udp"].rsplit(":", 1)
            self.service_addr = (host, int(port))

        def start_gateway(self):
            def hp(s):
                h, p = s.rsplit(":", 1)
                return h, int(p)

            t, c = self.taps, self.tls_creds
            udp = t.call(t.udp("udp", self.service_addr))
            web_port = t.call(t.tcp("http", hp(self.addrs["http"])))
            coap_port = t.call(t.udp("coap", hp(self.addrs["coap"])))
            mb_port = t.call(
                t.tls_proxy("https", "http://" + self.addrs["http"], c["mb"], self.dir)
            )
            (self.dir / "mb-ca.pem").write_bytes(pki.pem(c["mb_ca"].cert))
            (self.dir / "other-ca.pem").write_bytes(pki.pem(c["other_ca"].cert))
            cfg = {
                "serial": self.radio_state["coordinator"]["pty"],
                "escaped": True,
                "services": {
                    "udp": "127.0.0.1:%d" % udp,
                    "web": {"url": "http://127.0.0.1:%d/atls" % web_port},
                    "coap": {"url": "coap://127.0.0.1:%d/.well-known/atls" % coap_port},
                    "mb": {"url": "https://127.0.0.1:%d/atls" % mb_port, "ca": "mb-ca.pem"},
                    "mb-untrusted": {
                        "url": "https://127.0.0.1:%d/atls" % mb_port,
                        "ca": "other-ca.pem",
                    },
                },
                "relay": {"rto_ms": 500, "rto_max_ms": 4000, "poll_ms": 10000},
                "state_dir": "gateway-state",
                "limits": {
                    "max_payload": self.radio_state["np"],
                    "rate_per_s": 400,
                    "rate_burst": 800,
                },
            }
            (self.dir / "gateway.json").write_text(json.dumps(cfg))
            ready = self.dir / "gateway.ready"
            p = self.spawn(
                "gateway",
                [
                    sys.executable,
                    "-m",
                    "host_tools.gateway",
                    "run",
                    "--config",
                    str(self.dir / "gateway.json"),
                    "--ready-file",
                    str(ready),
                ],
            )
            deadline = time.time() + 20
            while not ready.exists():
                assert p.poll() is None and time.time() < deadline, "gateway did not start"
                time.sleep(0.05)

        def prepare_device(self, i):
            name = Fleet.prepare_device(self, i)
            path = self.device_dir(name) / "device.json"
            dev = json.loads(path.read_text())
            dev["service"] = self.ROUTE[name]  # what it asks for when pairing
            path.write_text(json.dumps(dev))
            return name

    return BindingsFleet


MARKERS = (b'"boot":"', b'"cmd":"echo"', b'"dev":"', b',"n":')


def test_zigbee_devices_through_gateway_over_udp_http_coap_and_https_proxy(tmp_path):
    """Five MicroPython devices behind one gateway, each paired to another
    service: UDP, HTTP, CoAP, HTTPS through a TLS-terminating proxy whose CA
    the gateway is configured with, and the same proxy with a CA that does not
    match.  The first four complete their session and 100 readings each way
    (acknowledged, echoed, delivered exactly once); the fifth never gets
    through the proxy's TLS.  None of the plaintext appears on any leg from
    the gateway to the service, not even in the proxy's decrypted view."""
    creds = {"mb_ca": pki.make_ca("Middlebox CA"), "other_ca": pki.make_ca("Other CA")}
    creds["mb"] = pki.make_cert("middlebox", issuer=creds["mb_ca"], san=["127.0.0.1"])
    taps = Taps()
    fleet = _fleet_class()(tmp_path, taps, creds, count=100, period_ms=25, seed=11)
    good = ["dev-01", "dev-02", "dev-03", "dev-04"]
    try:
        names = fleet.start()
        assert fleet.pair_all(names, timeout=40)
        devs = fleet.devices
        up = fleet.wait(lambda: all(devs[n].handshakes_ok >= 1 for n in good), 40)
        assert up, {n: (d.status, d.last_error) for n, d in devs.items()}
        done = fleet.wait(
            lambda: all(devs[n].acked >= 100 and devs[n].received >= 100 for n in good), 60
        )
        assert done, {n: (d.sent, d.acked, d.received) for n, d in devs.items()}
        fleet.settle(seconds=1.5)
        _, service, gateway, deliveries = fleet.collect()
        service_log = (fleet.dir / "service.log").read_text()
    finally:
        fleet.shutdown()
        taps.stop()

    # every good device: one session, 100 readings acknowledged, 100 echoes
    for n in good:
        d = devs[n]
        assert (d.handshakes_ok, d.acked, d.received, d.failures) == (1, 100, 100, 0), n
        got = [r for r in deliveries if r["id"] == n]
        assert len(got) == 100 and all(r["ok"] and not r["dup"] for r in got), n
        assert sorted(r["n"] for r in got) == list(range(100)), n
    assert devs["dev-05"].handshakes_ok == 0 and not any(r["id"] == "dev-05" for r in deliveries)

    # each device reached the service over the transport its pairing named
    peers = {}
    for line in service_log.splitlines():
        if '"handshake_ok"' in line:
            ev = json.loads(line)
            peers[ev["identity"]] = ev["peer"]
    assert set(peers) == set(good)
    assert not peers["dev-01"].startswith(("http:", "coap:"))
    assert peers["dev-02"].startswith("http:") and peers["dev-04"].startswith("http:")
    assert peers["dev-03"].startswith("coap:")
    assert service["handshakes_ok"] == 4 and service["messages_in"] == 400
    assert service["http"]["sessions_total"] == 2 and service["coap"]["sessions_total"] == 1
    assert service["http"]["rejected"] == {} and service["coap"]["rejected"] == {}

    # the gateway's relay counters, per kind
    rh, rc = gateway["relay"]["http"], gateway["relay"]["coap"]
    assert rh["handshakes"] == 2 and rc["handshakes"] == 1
    assert rc["error_packets"] == 0 and rc["errors"] == {}
    assert rh["packets_up"] >= 200 and rc["packets_up"] >= 100 and rc["packets_down"] >= 100
    # dev-05: the proxy's certificate does not chain to other-ca.pem: no flight got through,
    # the device was told (ERROR busy) and retries with its backoff
    assert rh["errors"].get("flight_network", 0) >= 1 and rh["error_packets"] >= 1
    assert rh["error_packets"] == rh["errors"]["flight_network"]  # nobody else was told

    # the HTTPS leg: TLS in, only ATLS bodies; exactly dev-04's two flights
    log = taps.proxy_log
    assert log and all(e["secure"] and e["status"] == 200 for e in log)
    assert {e["ctype"] for e in log} == {"application/atls+octet-stream", "application/atls-data"}
    assert all(e["rtype"] == e["ctype"] for e in log)
    assert sum(e["ctype"] == "application/atls+octet-stream" for e in log) == 2
    # the plain HTTP leg carried the draft's requests, the others ATLS packets
    stream = b"".join(taps.seen["http"])
    assert b"POST /atls HTTP/1.1" in stream and b"application/atls+octet-stream" in stream
    assert all(p[0] & 0xF0 == 0xA0 for p in taps.seen["udp"]) and len(taps.seen["udp"]) > 200
    assert len(taps.seen["coap"]) > 200

    # no plaintext anywhere the gateway forwarded to: the readings' JSON, the
    # echoes and each boot id (which the service's application did see)
    boots = [devs[n].boot.encode() for n in good]
    record = (fleet.dir / "deliveries.jsonl").read_bytes()
    assert all(b in record for b in boots)
    for leg, chunks in taps.seen.items():
        blob = b"".join(chunks)
        for m in MARKERS + tuple(boots):
            assert m not in blob and m.hex().encode() not in blob, (leg, m)
