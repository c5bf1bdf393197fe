"""Stale and forged server flights (issue 14, docs/SECURITY.md): a device
ignores a server flight that was not made for its ClientHello, and the
service stops feeding a restarted device the flights of its old attempt.

Devices are the firmware's DeviceSession (CPython) over real UDP sockets, the
service a real process on loopback; a stale flight is one the service really
sent for an earlier attempt of the same address.  Each test fails on the code
before the fix: the device ended its attempt with alert bad_record_mac (20)
or illegal_parameter (47) on the first such flight, and the service ended a
half-open session on any fragment 0 from its address, spoofed or not.
"""

import json
import os
import select
import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ServiceProc, run_device

from atls import protocol, wire
from atls.link import Link, LinkConfig
from atls.session import DISCARDS, DeviceSession
from atls.tls.client import ClientConfig, TLSClient

PSK = bytes(range(32))
LINK = {"mtu": 1200, "rto_ms": 200, "rto_max_ms": 1000}


class UdpDevice:
    """DeviceSession on its own UDP socket; datagrams are fed by the test."""

    def __init__(self, target):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.01)
        self.target = target
        cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1000, handshake_timeout_ms=10000)
        self.sess = DeviceSession(ClientConfig(psk=PSK, psk_identity=b"dev-1"), cfg)
        self.t0 = time.monotonic()
        self.events = []

    def now(self):
        return int((time.monotonic() - self.t0) * 1000)

    def connect(self):
        self.sess.connect(self.now())
        self.flush()

    def flush(self):
        for d in self.sess.datagrams(self.now()):
            self.sock.sendto(d, self.target)
        self.events += self.sess.events()

    def feed(self, datagrams):
        for d in datagrams:
            self.sess.receive(d, self.now())
        self.events += self.sess.events()

    def collect_flight(self, seconds=5):
        """The service's datagrams up to the end of its flight, not fed."""
        got, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got.append(self.sock.recv(4096))
            except socket.timeout:
                continue
            if got[-1][0] & 7 == protocol.HS_END:
                return got
        raise AssertionError("no flight from the service")

    def run(self, seconds, until):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            self.flush()
            try:
                self.feed([self.sock.recv(4096)])
            except socket.timeout:
                pass
        return until()

    def up(self):
        return self.sess.state == "up"

    def failures(self):
        return [e for e in self.events if e[0] == "failed"]

    def echo(self):
        """A message to the service and its echo back: end to end."""
        self.sess.send(b"ping", self.now())
        return self.run(3, lambda: ("message", b"ping") in self.events)


@pytest.fixture
def svc(tmp_path):
    s = ServiceProc(tmp_path, devices={"dev-1": PSK}, link=LINK)
    yield s
    s.stop()


def forged_flight(sid, kind="garbage", suite=protocol.TLS_AES_128_CCM_8_SHA256):
    """A first server flight anyone on the path can write (RFC 8446 §4.1.3):
    a ServerHello choosing our PSK (identity 0) with a fresh x25519 share,
    then (garbage) a protected record that opens under no key of ours, or
    (sh_only) nothing more, or (bad_suite) a suite we did not offer."""
    pub = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if kind == "bad_suite":
        suite = 0x1302  # TLS_AES_256_GCM_SHA384
    exts = (
        b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: TLS 1.3
        + b"\x00\x33\x00\x24\x00\x1d\x00\x20"  # key_share: x25519
        + pub
        + b"\x00\x29\x00\x02\x00\x00"  # pre_shared_key: selected_identity 0
    )
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + suite.to_bytes(2, "big") + b"\x00"
    body += len(exts).to_bytes(2, "big") + exts
    sh = b"\x02" + len(body).to_bytes(3, "big") + body
    flight = b"\x16\x03\x03" + len(sh).to_bytes(2, "big") + sh
    if kind == "garbage":
        flight += b"\x17\x03\x03\x00\x30" + os.urandom(48)  # "EncryptedExtensions"
    return wire.encode_hs(sid, 1, 0, flight, True)


def _client_hello(psk=PSK):
    """A first flight of a firmware TLS client (its own link), as datagrams."""
    tls = TLSClient(ClientConfig(psk=psk, psk_identity=b"dev-1"))
    tls.start(0)
    link = Link("client", LinkConfig(mtu=1200))
    link.send_flight(tls.data_to_send(), 0)
    return link.datagrams(0)


def test_stale_flight_of_an_earlier_attempt_is_ignored(svc):
    """The device's attempt timed out before the service's flight reached it;
    it starts again from the same address, and that flight (really sent by
    the service for the old ClientHello) arrives first.  The device drops
    it and completes this attempt: no failure, no third handshake."""
    dev = UdpDevice(svc.addr)
    dev.connect()
    stale = dev.collect_flight()
    old_sid = protocol.peek(stale[0])[1]
    dev.connect()  # a new handshake (new ClientHello), same address
    dev.feed(stale)
    assert dev.failures() == [] and dev.sess.state == "handshaking"
    assert dev.sess.counters["stale_flights"] == 1
    assert dev.sess.link.session_id == 0  # the stale flight taught it nothing
    assert dev.run(10, dev.up), dev.events
    assert dev.failures() == [] and dev.sess.handshakes == 2
    assert dev.sess.link.session_id != old_sid
    assert dev.echo()
    dev.feed(stale)  # a late retransmission of it: dropped by the link
    assert dev.up() and dev.sess.counters["stale_flights"] == 1


@pytest.mark.parametrize("kind", ["garbage", "sh_only", "bad_suite"])
def test_injected_server_hello_does_not_abort_the_handshake(svc, kind):
    """A forged first flight injected before the service's answer: the device
    ignores it, also when it is repeated (its session id is refused now), and
    completes with the service."""
    dev = UdpDevice(svc.addr)
    dev.connect()
    forged = forged_flight(0xBEEF, kind)
    dev.feed([forged, forged, forged])
    assert dev.failures() == []
    assert dev.run(10, dev.up), dev.events
    assert dev.failures() == [] and dev.sess.handshakes == 1
    assert dev.sess.counters["stale_flights"] == 1
    assert dev.sess.link.drops["unknown_session"] == 2
    assert dev.echo()


def test_server_alert_still_ends_the_attempt(svc):
    """A plaintext alert (a wrong PSK: decrypt_error) keeps ending the
    attempt at once: the device must learn it, not wait for more."""
    dev = UdpDevice(svc.addr)
    dev.connect()
    dev.feed([wire.encode_hs(0x0BAD, 1, 0, b"\x15\x03\x03\x00\x02\x02\x33", True)])
    assert dev.failures() == [("failed", "tls alert 51")]


@pytest.mark.parametrize("count", [DISCARDS, DISCARDS + 1])
def test_at_most_discards_bad_flights_per_attempt(svc, count):
    """DISCARDS forged flights are survived; one more ends the attempt as
    before (each cost the device a key agreement)."""
    dev = UdpDevice(svc.addr)
    dev.connect()
    dev.feed([forged_flight(0x100 + k) for k in range(count)])
    if count > DISCARDS:
        assert dev.failures() == [("failed", "tls alert 20")]
        assert dev.sess.counters["stale_flights"] == DISCARDS
        return
    assert dev.failures() == []
    assert dev.run(10, dev.up), dev.events
    assert dev.failures() == [] and dev.sess.handshakes == 1
    assert dev.sess.counters["stale_flights"] == DISCARDS


class InjectingPath(threading.Thread):
    """The path between a device and the service, from one address (`up`):
    an earlier attempt from that address (a firmware ClientHello) gets the
    service's flight, which is recorded; when the device's first datagram
    comes, the path hands it that stale flight and a forged one first, then
    forwards both ways."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.up.settimeout(0.05)
        for d in _client_hello():
            self.up.sendto(d, target)
        stale = []
        while not stale or stale[-1][0] & 7 != protocol.HS_END:
            stale.append(self.up.recv(4096))
        self.inject = stale + [forged_flight(0xBEEF)]
        self.device = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for s in select.select([self.down, self.up], [], [], 0.05)[0]:
                data, addr = s.recvfrom(4096)
                if s is self.up:
                    if self.device is not None:
                        self.down.sendto(data, self.device)
                    continue
                if self.device is None:
                    self.device = addr
                    for d in self.inject:
                        self.down.sendto(d, addr)
                self.up.sendto(data, self.target)

    def close(self):
        self.stop.set()
        self.join(5)
        self.down.close()
        self.up.close()


def test_unix_port_device_ignores_stale_and_forged_flights(mpyc, svc, tmp_path):
    """The firmware under the MicroPython unix port (.mpy), tests/mpy/
    device_echo.py: the service's flight for an earlier attempt from the
    device's address and a forged flight arrive before the real answer; the
    device completes its first handshake and its messages are echoed."""
    path = InjectingPath(svc.addr)
    path.start()
    try:
        host, port = path.down.getsockname()
        cfg = {"host": host, "port": port, "psk": PSK.hex(), "psk_identity": "dev-1"}
        s = run_device(mpyc, tmp_path, dict(cfg, count=3, timeout_ms=20000))
    finally:
        path.close()
    assert s["ok"] and s["failed"] is None and s["ups"] == 1, s
    assert s["counters"]["stale_flights"] == 2 and s["counters"]["tls_failures"] == 0


# -- the service: a new ClientHello supersedes the address's half-open session ----------
def _sids(sock, seconds, until=None):
    """Session ids of what the service sends for `seconds`, or until one
    for which until(sid) is true came (then at most 10 s)."""
    got, end = [], time.monotonic() + (seconds if until is None else 10)
    while time.monotonic() < end:
        try:
            got.append(protocol.peek(sock.recv(4096))[1])
        except socket.timeout:
            continue
        if until is not None and until(got[-1]):
            break
    return got


def _ended(svc, sid):
    out = []
    for line in svc.logs().splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            if ev["event"] == "session_end" and ev.get("sid") == sid:
                out.append(ev["reason"])
    return out


def test_service_drops_the_half_open_session_a_new_client_hello_supersedes(svc):
    """A device that starts again from the same address ends its half-open
    session there (it stops retransmitting a flight nobody waits for);
    a spoofed fragment 0 or a ClientHello whose binder does not verify from
    that address does not."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.02)
    try:
        for d in _client_hello():
            sock.sendto(d, svc.addr)
        old = _sids(sock, 0, until=lambda sid: True)[-1]
        sock.sendto(wire.encode_hs(0, 0, 0, b"\x16", False), svc.addr)  # 6 spoofed bytes
        sock.sendto(wire.encode_hs(0, 0, 0, b"\x16\x03\x01", True), svc.addr)
        for d in _client_hello(psk=bytes(32)):  # a fresh ClientHello, wrong binder
            sock.sendto(d, svc.addr)
        bad = _sids(sock, 0, until=lambda sid: sid != old)[-1]  # its alert: all was read
        assert bad != old
        assert _ended(svc, old) == []  # the device's half-open session is still there
        for d in _client_hello():  # the device started again: a new, valid ClientHello
            sock.sendto(d, svc.addr)
        new = _sids(sock, 0, until=lambda sid: sid not in (old, bad))[-1]
        assert new not in (old, bad), "the new ClientHello got no answer"
        assert _ended(svc, old) == ["superseded by a new ClientHello"]
        time.sleep(0.1)
        assert old not in _sids(sock, 1.0)
        assert svc.counters()["drops"]["superseded"] == 1
    finally:
        sock.close()
