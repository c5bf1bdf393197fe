"""Issue 19 (shared state): two service workers sharing established sessions
through a real redis-server (host_tools.service.state_store).

The device is the firmware's DeviceSession (CPython), the workers two real
service cores (OpenSSL) in one process on one virtual clock, each with its
own StateStore on the same Redis (started per test on a unix socket in tmp).
`Pair.to` chooses which worker gets the device's datagrams, as a balancer
would after a worker was lost or the worker set changed.
"""

import base64
import tempfile
import threading

import pytest

from atls.channel import split_key_block
from atls.link import Link, LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools.registry.seal import MasterKey
from host_tools.service import state_codec
from host_tools.service.core import Service
from host_tools.service.redis_server import RedisServer
from host_tools.service.state_store import StateStore
from host_tools.service.tls_engine import ServerConfig

PSKS = {b"dev-%d" % i: bytes([i]) * 32 for i in range(1, 4)}
ADDR = ("192.0.2.7", 5684)


@pytest.fixture
def rds():
    with tempfile.TemporaryDirectory(prefix="rds") as d:  # short: a unix socket path
        server = RedisServer(d)
        try:
            yield server
        finally:
            server.stop()


class App:
    def __init__(self):
        self.got = []
        self.sessions = []

    def on_connect(self, session):
        self.sessions.append(session)

    def on_message(self, session, payload):
        self.got.append(bytes(payload))
        if payload.startswith(b"echo:"):
            session.send(b"re:" + bytes(payload[5:]))

    def on_close(self, session, reason):
        pass


class Worker:
    def __init__(self, pair, url, key_file):
        self.pair = pair
        self.app = App()
        self.out = []
        svc = self.svc = Service(
            ServerConfig(psks=dict(PSKS)),
            LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600),
            app=self.app,
        )
        svc.now_ms = lambda: pair.now
        svc.connection_made(self)
        self.store = StateStore(RedisServer.client_for(url), MasterKey(key_file))
        self.store.attach(svc)

    def sendto(self, data, addr):
        self.out.append((bytes(data), addr))


class Pair:
    def __init__(self, rds, tmp_path, devices=(b"dev-1",)):
        self.now = 0
        key = tmp_path / "seal.key"
        self.w = [Worker(self, rds.url, key), Worker(self, rds.url, key)]
        self.to = 0
        self.devs = {}
        cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600, handshake_timeout_ms=5000)
        for i, ident in enumerate(devices):
            dev = DeviceSession(ClientConfig(psk=PSKS[ident], psk_identity=ident), cfg)
            dev.connect(self.now)
            self.devs[(ADDR[0], ADDR[1] + i)] = dev
        self.got = []  # what the devices received, in order

    @property
    def dev(self):
        return next(iter(self.devs.values()))

    def step(self, ms=10):
        self.now += ms
        for addr, dev in self.devs.items():
            for d in dev.datagrams(self.now):
                self.w[self.to].svc.datagram_received(d, addr)
        for w in self.w:
            w.svc.tick()
        self.deliver()

    def deliver(self):
        for w in self.w:
            out, w.out = w.out, []
            for d, addr in out:
                self.devs[addr].receive(d, self.now)
        for dev in self.devs.values():
            self.got += [bytes(e[1]) for e in dev.events() if e[0] == "message"]

    def run(self, ms, until=None):
        end = self.now + ms
        while self.now < end:
            self.step()
            if until is not None and until():
                return True
        return False

    def all_got(self):
        return self.w[0].app.got + self.w[1].app.got


def _up(pair):
    assert pair.run(5000, lambda: all(d.state == "up" for d in pair.devs.values()))
    pair.run(300)


def test_second_worker_continues_the_session_without_a_handshake(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    assert w0.svc.counters["handshakes_ok"] == 1 and w0.svc.counters["state_commits"] >= 1
    p.to = 1  # the balancer now sends the device to worker 1
    for i in range(5):
        p.dev.send(b"echo:%d" % i, p.now)
        p.run(100)
    assert p.run(3000, lambda: not p.dev.pending() and len(p.got) == 5)
    assert w1.app.got == [b"echo:%d" % i for i in range(5)] and w0.app.got == []
    assert p.got == [b"re:%d" % i for i in range(5)]  # replies once each, in order
    assert w1.svc.counters["state_loads"] == 1 and w1.svc.counters["handshakes_ok"] == 0
    assert p.dev.handshakes == 1 and p.dev.handshakes_ok == 1
    # the same channel keys on both workers and at the device
    (s0,), (s1,) = w0.svc.sessions.values(), w1.svc.sessions.values()
    assert s1.key_block == s0.key_block and s1.identity == "dev-1"
    assert s1.link.channel.tag_len == p.dev.link.channel.tag_len
    # worker 1 sends on its own; worker 0's stale copy catches up on its next packet
    s1.send(b"from-w1")
    p.run(500)
    assert p.got[-1] == b"from-w1"
    p.to = 0
    p.dev.send(b"echo:back", p.now)
    assert p.run(3000, lambda: p.got[-1:] == [b"re:back"] and not p.dev.pending())
    assert w0.app.got == [b"echo:back"] and w0.svc.counters["state_conflicts"] >= 1
    assert p.dev.handshakes == 1
    assert p.all_got().count(b"echo:back") == 1


def test_alternating_workers_deliver_every_message_once(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    sent = []
    for i in range(30):
        p.to = i % 2
        m = b"echo:%d" % i
        p.dev.send(m, p.now)
        sent.append(m)
        p.run(30)
    assert p.run(5000, lambda: not p.dev.pending() and len(p.got) == 30)
    p.run(500)
    assert sorted(p.all_got()) == sorted(sent)  # each exactly once at an application
    assert sorted(p.got) == sorted(b"re:%d" % i for i in range(30))
    assert p.dev.handshakes == 1


def test_the_same_packet_offered_to_both_is_accepted_once(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.to = 1
    p.dev.send(b"load", p.now)
    p.run(300)  # worker 1 holds a copy now too
    for i in range(20):
        p.now += 10
        p.dev.send(b"m%d" % i, p.now)
        pkts = p.dev.datagrams(p.now)
        first, second = (w0, w1) if i % 2 else (w1, w0)
        for d in pkts:  # a duplicating path: both workers get every datagram
            first.svc.datagram_received(d, ADDR)
            second.svc.datagram_received(d, ADDR)
        p.deliver()
    p.run(2000)
    got = p.all_got()
    assert sorted(got) == sorted([b"load"] + [b"m%d" % i for i in range(20)])
    assert w0.svc.counters["state_conflicts"] + w1.svc.counters["state_conflicts"] >= 10


def test_concurrent_workers_never_accept_a_packet_twice(rds, tmp_path):
    """Two threads, each a worker, get the same datagram at the same moment."""
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.to = 1
    p.dev.send(b"load", p.now)
    p.run(300)
    n = 40
    for i in range(n):
        p.now += 10
        p.dev.send(b"c%d" % i, p.now)
        pkts = p.dev.datagrams(p.now)
        gate = threading.Barrier(2)

        def feed(w, pkts=pkts, gate=gate):
            gate.wait()
            for d in pkts:
                w.svc.datagram_received(d, ADDR)

        ts = [threading.Thread(target=feed, args=(w,)) for w in (w0, w1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        p.deliver()
    p.run(2000)
    got = p.all_got()
    for i in range(n):
        assert got.count(b"c%d" % i) == 1, (i, got)


def _secrets(sess):
    ck, sk, civ, siv = split_key_block(sess.key_block)
    out = []
    for s in (ck, sk, civ, siv, sess.key_block, PSKS[b"dev-1"]):
        out += [s, s.hex().encode(), base64.b64encode(s)]
    return out


def test_redis_never_sees_channel_keys_and_records_do_not_swap(rds, tmp_path):
    p = Pair(rds, tmp_path, devices=(b"dev-1", b"dev-2"))
    _up(p)
    for dev in p.devs.values():
        dev.send(b"echo:x", p.now)
    p.run(500)
    sessions = list(p.w[0].svc.sessions.values())
    assert len(sessions) == 2
    r = rds.client()
    keys = list(r.scan_iter("*"))
    assert len(keys) == 2
    dump = b"".join(k + b"".join(r.hgetall(k).values()) for k in keys)
    for sess in sessions:
        assert sess.key_block is not None
        for s in _secrets(sess):
            assert s not in dump
    # a record copied onto the other session's key does not open
    a, b = sessions
    ka, kb = (p.w[0].store._key(s.sid) for s in (a, b))
    r.hset(kb, "b", r.hget(ka, "b"))
    w1 = p.w[1]
    assert w1.store.adopt(w1.svc, b.sid, ADDR, p.now) is None
    assert b.sid not in w1.svc.sessions
    # while the genuine one still does
    assert w1.store.adopt(w1.svc, a.sid, ADDR, p.now) is not None


def test_codec_places_every_link_field(rds, tmp_path):
    """A Link field the codec does not know would silently not travel."""
    link = Link("server", LinkConfig(), 1)
    assert set(vars(link)) - {"ack_to"} <= set(state_codec.LINK_FIELDS)
    assert set(state_codec.LINK_FIELDS) - {"ack_to"} <= set(vars(link))


def test_redis_down_keeps_sessions_refuses_new_ones_and_recovers(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0 = p.w[0]
    c = w0.svc.counters
    rds.stop()
    p.dev.send(b"echo:during", p.now)
    assert p.run(3000, lambda: p.got == [b"re:during"] and not p.dev.pending())
    assert c["redis_up"] == 0 and c["state_errors"] >= 1
    # a new device is refused (busy) before any TLS work, and counted
    cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600, handshake_timeout_ms=5000)
    dev2 = DeviceSession(ClientConfig(psk=PSKS[b"dev-2"], psk_identity=b"dev-2"), cfg)
    dev2.connect(p.now)
    p.devs[(ADDR[0], ADDR[1] + 1)] = dev2
    p.run(1500)
    assert dev2.state != "up" and c["state_refused"] >= 1 and c["drops"].get("busy", 0) >= 1
    assert c["handshakes_ok"] == 1
    rds.start()  # Redis is back (empty: it kept nothing)
    assert p.run(40000, lambda: c["handshakes_ok"] == 2)
    assert c["redis_up"] == 1 and dev2.state == "up"
    # the session that lived through it is stored again: worker 1 can take it over
    p.to = 1
    p.dev.send(b"echo:after", p.now)
    assert p.run(3000, lambda: p.got[-1:] == [b"re:after"] and not p.dev.pending())
    assert p.w[1].app.got == [b"echo:after"] and p.dev.handshakes == 1
