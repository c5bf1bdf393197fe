"""Regressions found by (or for) the fuzzers of tests/fuzz: one test per flaw,
written to fail on the code before its fix.

Flaws in modules this harness does not own (atls.tls.*, atls.session) are
marked xfail(strict=True) with the owner named: the test reproduces the flaw
today and turns into an XPASS failure - remove the marker - once it is fixed.
"""

from fuzz.targets import SeededRng

from atls.link import Link, LinkConfig
from atls.protocol import SECP256R1, X25519
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
CLOSE_NOTIFY = b"\x15\x03\x03\x00\x02\x01\x00"  # RFC 8446 §6: warning(1) close_notify(0)


def _exchange(dev, srv, now, on_flight):
    for d in dev.datagrams(now):
        srv.receive(d, now)
    for ev in srv.events():
        if ev[0] == "flight":
            srv.send_flight(on_flight(ev[1]), now)
    for d in srv.datagrams(now):
        dev.receive(d, now)  # must never raise: the session survives any input


# Issue 12, "Never dies" (fixed in firmware/atls/session.py and tls/client.py).
# A path answers ClientHello with HelloRetryRequest + a plaintext warning
# close_notify: the client used to queue ClientHello2 and go CLOSED without
# raising, and the next flight made tls.receive() raise UsageError("connection
# is closed"), which escaped DeviceSession.receive (and ended main.py on a
# device).  Now an alert before the handshake completes is fatal: the session
# fails that handshake, backs off and starts a new one; nothing escapes.
def test_session_survives_hrr_plus_close_notify_then_another_flight():
    cfg = ClientConfig(psk=PSK, psk_identity=b"dev", groups=(X25519, SECP256R1))
    dev = DeviceSession(cfg, LinkConfig(mtu=64), rng=SeededRng(b"regress"))
    srv = Link("server", LinkConfig(mtu=64), session_id=0x2345)
    tls = ServerConnection(ServerConfig(psks={b"dev": PSK}, groups=("secp256r1",)).build())
    flights = []

    def on_flight(data):
        flights.append(data)
        if len(flights) == 1:
            return tls.feed(data) + CLOSE_NOTIFY  # HelloRetryRequest + close_notify
        return b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"  # anything: a third flight

    dev.connect(0)
    for now in range(20, 2000, 20):
        _exchange(dev, srv, now, on_flight)
    events = dev.events()
    assert any(ev[0] == "failed" for ev in events), events  # that handshake failed
    assert dev.state in ("waiting", "handshaking")  # and the session goes on
