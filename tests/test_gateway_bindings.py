"""The gateway forwards ZigBee devices' ATLS traffic to the service over UDP,
HTTP(S) or CoAP (issue 8; host_tools/gateway_relay.py, docs/BINDINGS.md
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
import ssl
import threading
import time
import types

import aiohttp
import pytest
from aiohttp import web

from atls import wire
from atls.link import LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig

from host_tools import gateway as G
from host_tools import gateway_relay as relay
from host_tools import pki

from e2e import ServiceProc

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
    c = _config(tmp_path, {
        "default": "127.0.0.1:5684", "udp2": {"udp": "10.0.0.1:7"},
        "web": {"url": "https://user:secret@svc.example:8443/atls", "ca": "ca.pem",
                "poll_ms": 5000},
        "plain": {"url": "http://127.0.0.1:8080/atls"},
        "coap": {"url": "coap://127.0.0.1:5683/.well-known/atls"}},
        routes={"DEV-7": "coap", "0013a20041000001": "web"}, relay={"rto_ms": 500})
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


@pytest.mark.parametrize("services,extra,msg", [
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
])
def test_config_rejects_bad_services(tmp_path, services, extra, msg):
    with pytest.raises(G.GatewayError) as e:
        _config(tmp_path, services, **extra)
    assert msg in str(e.value)


# ---- in process: a device (CPython, the firmware's modules) and one RelayFlow ----------

class Svc(ServiceProc):
    def __init__(self, tmp, devices=None, **kw):
        ServiceProc.__init__(
            self, tmp, devices=devices or {"dev-a": PSK},
            link={"mtu": MTU, "rto_ms": 300, "rto_max_ms": 2000},
            limits={"rate_per_s": 5000, "rate_burst": 10000},
            extra={"http_listen": "127.0.0.1:0", "coap_listen": "127.0.0.1:0"}, **kw)
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
                async def post_flight(self, flight):
                    answer = await base.post_flight(self, flight)
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

    def __init__(self, target, identity=b"dev-a", psk=PSK):
        self.counters = relay.new_counters()
        self.clients = relay.Clients()
        self.flow = self.new_flow(target)
        self.dev = DeviceSession(ClientConfig(psk=psk, psk_identity=identity),
                                 LinkConfig(mtu=MTU, rto_ms=300, rto_max_ms=2000),
                                 retry_ms=200, retry_max_ms=1000)
        self.up = []  # every packet device -> relay
        self.down = []  # every packet relay -> device
        self.inbox = []
        self.events = []

    def new_flow(self, target):
        """A fresh RelayFlow: what a restarted gateway has for this device."""
        self.flow = relay.RelayFlow(("zb", bytes(8)), target, self._down, self.clients,
                                    self.counters, MTU)
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
            return len(self.kinds("message")) - got0 >= n and \
                len(self.kinds("delivered")) - acked0 >= n
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
    target = relay.Target("svc", {"url": svc.http if kind == "http" else svc.coap,
                                  "rto_ms": 300, "rto_max_ms": 2000, "poll_ms": 2000})

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
    assert c["packets_up"] >= 80 and c["packets_down"] >= 80 and c["errors"] == {}
    s = svc.counters()
    assert s["handshakes_ok"] == 1 and s["messages_in"] == 40 and s["messages_out"] == 40
    assert s[kind]["sessions_total"] == 1 and s[kind]["rejected"] == {}


def test_relay_unknown_session_and_gateway_restart_make_the_device_rehandshake(svc):
    """unknown_session on a batch (the service no longer knows the cookie)
    ends the relay session with an ERROR; the device re-handshakes and its
    unacknowledged messages go through the new session.  A restarted
    gateway (a fresh RelayFlow) answers the device's old session id with an
    ERROR unknown_session, and the device comes back the same way."""
    target = relay.Target("svc", {"url": svc.http, "rto_ms": 300, "rto_max_ms": 2000,
                                  "poll_ms": 2000})

    async def go():
        r = Radio(target)
        try:
            await r.run(lambda: r.dev.state == "up")
            a = await r.exchange(10, b"a")
            first_sid = r.flow.sess.sid
            r.flow.sess.tr.cookie = "00" * 16  # the service forgot the session
            b = await r.exchange(10, b"b")
            second_sid = r.flow.sess.sid
            r.new_flow(target)  # the gateway restarted: no relay state for the device
            c = await r.exchange(10, b"c")
            return r, a, b, c, first_sid, second_sid
        finally:
            await r.close()

    r, a, b, c, sid1, sid2 = asyncio.run(go())
    for msgs, echoes in (a, b, c):
        assert sorted(set(echoes)) == msgs  # every message echoed (exactly once by the app)
    errors = [p for p in r.down if p[0] & 7 == wire.ERROR]
    assert errors == [wire.encode(wire.ERROR, sid1, b"\x01"),
                      wire.encode(wire.ERROR, sid2, b"\x01")]
    downs = r.kinds("down")
    assert [e[1] for e in downs] == ["unknown_session", "unknown_session"]
    assert r.dev.handshakes_ok == 3 and len({sid1, sid2, r.dev.link.session_id}) == 3
    k = r.counters
    assert k["errors"].get("batch_unknown_session") == 1 and k["error_packets"] == 2
    assert k["drops"].get("unknown_session", 0) >= 1 and k["handshakes"] == 3
    s = svc.counters()
    assert s["handshakes_ok"] == 3 and s["messages_in"] == 30
    assert s["http"]["rejected"] == {"unknown_session": 1}


def test_relay_refused_handshake_and_device_restart(svc):
    """A PSK the service does not know: the flight gets 400 handshake_failed
    and the device an ERROR handshake_failed (sid 0: it has none yet).  A
    device that starts a new handshake while its session is open gets a new
    relay session (the old one is dropped)."""
    async def go():
        target = relay.Target("svc", {"url": svc.coap, "rto_ms": 300, "rto_max_ms": 2000,
                                      "poll_ms": 2000})
        bad = Radio(target, psk=bytes(32))
        try:
            await bad.run(lambda: bad.kinds("down"))
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
        return bad, good, old, msgs, echoes

    bad, good, old, msgs, echoes = asyncio.run(go())
    assert bad.kinds("down")[0][1] == "handshake_failed"
    assert [p for p in bad.down if p[0] & 7 == wire.ERROR][0] == \
        wire.encode(wire.ERROR, 0, b"\x02")
    assert bad.counters["errors"] == {"flight_handshake_failed": 1}
    assert bad.counters["handshakes"] == 0 and bad.counters["active"] == 0
    assert echoes == msgs and old.state == relay._DEAD
    assert good.counters["errors"].get("device_restarted") == 1
    assert good.counters["sessions"] == 2 and good.counters["handshakes"] == 2
    s = svc.counters()
    assert s["handshakes_failed"] == 1 and s["handshakes_ok"] == 2
