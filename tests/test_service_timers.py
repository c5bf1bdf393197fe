"""The service's timer tick (host_tools/service/timers.py, issue 19): it
visits the sessions whose deadline came, not every session every 10 ms (the
scan that was most of the service's CPU with thousands of idle sessions),
and still sends what the application queued, retransmits, and ends idle
sessions.  In process: the firmware client and Link against `Service`, a
stand-in transport and a clock the test moves."""

from atls.link import LinkConfig
from host_tools.bench.pair import CCM8, PSK, Device, Transport, exchange
from host_tools.service import Service
from host_tools.service.tls_engine import ServerConfig


class App:
    def __init__(self):
        self.sessions = []

    def on_connect(self, session):
        self.sessions.append(session)

    def on_message(self, session, payload):
        pass

    def on_close(self, session, reason):
        pass


def _fleet(n):
    ids = [b"t%03d" % i for i in range(n)]
    app = App()
    svc = Service(
        ServerConfig(psks={i: PSK for i in ids}, suites=("TLS_AES_128_CCM_8_SHA256",)),
        LinkConfig(mtu=1200),
        limits={"rate_per_s": 10**9, "rate_burst": 10**9, "idle_timeout_s": 30},
        app=app,
    )
    clock = [0]
    svc.now_ms = lambda: clock[0]
    svc.intake.burst_ms = svc.intake.tokens_ms = 1e12  # the clock stands still: no TLS budget
    tr = Transport()
    svc.connection_made(tr)
    devs = []
    for k, ident in enumerate(ids):
        dev = Device(CCM8, 1200, identity=ident)
        dev.start(0)
        exchange(dev, svc, tr, ("10.0.%d.%d" % (k >> 8, k & 255), 5000 + k))
        assert dev.up
        devs.append(dev)
    return svc, tr, app, devs, clock


def test_tick_visits_no_session_when_none_is_due():
    svc, tr, app, devs, clock = _fleet(30)
    visits = []
    real = svc.transmit
    svc.transmit = lambda sess, now: (visits.append(sess.sid), real(sess, now))
    clock[0] = 5  # every handshake is acknowledged: no link timer is due yet
    for _ in range(20):
        svc.tick()
    assert visits == []  # the old tick: 30 visits per tick
    assert len(svc.sessions) == 30


def test_an_app_message_goes_out_at_the_next_tick_and_idle_sessions_end():
    svc, tr, app, devs, clock = _fleet(3)
    tr.take()
    clock[0] = 10
    app.sessions[1].send(b"hello")  # from outside any datagram: a timer or the app's own task
    svc.tick()
    out = tr.take()
    assert len(out) == 1  # the DATA, at once; the others were not visited
    devs[1].link.receive(out[0], 10)
    devs[1].pump(10)
    assert devs[1].messages == [b"hello"]
    # unacknowledged for a while (the device's ACK is withheld): retransmitted by its timer
    clock[0] = 10 + 3000
    svc.tick()
    assert any(d[5:] for d in tr.take())
    clock[0] = 31000 + 10  # past idle_timeout_s: every session ends on its idle deadline
    svc.tick()
    assert svc.sessions == {}
