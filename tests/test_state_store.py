"""Issue 19 (shared state): two service workers sharing established sessions
through a real redis-server (host_tools.service.state_store).

The device is the firmware's DeviceSession (CPython), the workers two real
service cores (OpenSSL) in one process on one virtual clock, each with its
own StateStore on the same Redis (started per test on a unix socket in tmp).
`Pair.to` chooses which worker gets the device's datagrams, as a balancer
would after a worker was lost or the worker set changed.
"""

import base64
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
from host_tools.service.routing import SidSpace
from host_tools.service.state_store import StateStore
from host_tools.service.tls_engine import ServerConfig

PSKS = {b"dev-%d" % i: bytes([i]) * 32 for i in range(1, 4)}
ADDR = ("192.0.2.7", 5684)


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
                if addr in self.devs:  # (a device that moved no longer listens there)
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
    assert w1.app.sessions == [s1] and s1.loaded and not s0.loaded  # on_connect, once
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
    # the session goes on: the message is delivered and acknowledged (ACK nonces
    # from the reserve of the last commit); the reply, a new DATA seq, waits
    assert p.run(3000, lambda: not p.dev.pending())
    assert w0.app.got == [b"echo:during"] and p.got == []
    assert c["redis_up"] == 0 and c["state_errors"] >= 1 and c["state_withheld"] >= 1
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
    assert p.run(3000, lambda: p.got == [b"re:during"])  # committed, then sent
    # the session that lived through it is stored again: worker 1 can take it over
    p.to = 1
    p.dev.send(b"echo:after", p.now)
    assert p.run(3000, lambda: p.got[-1:] == [b"re:after"] and not p.dev.pending())
    assert p.w[1].app.got == [b"echo:after"] and p.dev.handshakes == 1


def _evalsha(r):
    st = r.info("commandstats")
    return {k[len("cmdstat_") :]: v["calls"] for k, v in st.items() if "config" not in k}


def test_round_trips_per_message(rds, tmp_path):
    """One COMMIT for a device message the application does not answer, two
    when it answers (the acceptance, then the reply's DATA seq); none for
    the device's ACKs or our own (ACK counters come from the reserve)."""
    p = Pair(rds, tmp_path)
    _up(p)
    r = rds.client()
    p.dev.send(b"warm", p.now)
    p.run(500)
    n = 50
    for kind, per in ((b"plain", 1), (b"echo", 2)):
        r.config_resetstat()
        for i in range(n):
            p.dev.send(b"%s:%d" % (kind, i), p.now)
            p.run(30)
        p.run(1000)
        calls = _evalsha(r)
        assert calls == {"evalsha": per * n, "hget": per * n, "hset": per * n, "pexpire": per * n}
    assert len(p.got) == n and p.w[0].app.got[-1] == b"echo:%d" % (n - 1)


def test_a_loaded_record_never_reuses_the_writers_ack_nonces(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.dev.send(b"plain", p.now)
    p.run(300)
    (s0,) = w0.svc.sessions.values()
    s1 = w1.store.adopt(w1.svc, s0.sid, ADDR, p.now)
    # worker 0 may seal ACKs up to its reserve without a commit; worker 1 starts beyond
    lim0, lim1 = s0.shared.lim[0], s1.shared.lim[0]
    assert s0.link.channel.ack_seq <= lim0 <= s0.link.channel.ack_seq + state_codec.RESERVE
    assert s1.link.channel.ack_seq >= lim0 and lim1 == s1.link.channel.ack_seq
    assert s1.link.channel.top == s0.link.channel.top  # the same replay window


class _Always4242(SidSpace):
    """Ignores what is taken (service.routing.Taken normally skips ids live
    in Redis): the commit's own check must still refuse the id."""

    def new(self, taken):
        return 4242


def test_a_session_id_taken_in_redis_fails_the_handshake_cleanly(rds, tmp_path):
    p = Pair(rds, tmp_path)
    w0 = p.w[0]
    r = rds.client()
    r.hset("atls:s:4242", mapping={"v": 7, "b": b"someone else's"})
    w0.svc.sids = _Always4242()  # the draw lands on an id another worker stored
    p.run(1000)
    c = w0.svc.counters
    assert c["handshakes_ok"] == 0 and c["handshake_failures"] == {"sid_in_use": 1}
    assert r.hget("atls:s:4242", "v") == b"7" and not w0.svc.sessions


def test_config_section_metrics_and_a_worker_built_from_it(rds, tmp_path):
    import json

    from host_tools.service.config import build_from_config
    from host_tools.service.errors import ConfigError
    from host_tools.service.metrics import ServiceMetrics
    from host_tools.service.state_store import from_config

    for bad in ({"url": rds.url, "ttl": 5}, {"key_prefix": "x"}, {"url": rds.url, "retry_ms": 0}):
        with pytest.raises(ConfigError):
            from_config(bad, tmp_path)
    (tmp_path / "devices.json").write_text(
        json.dumps({"devices": {"dev-1": {"psk": PSKS[b"dev-1"].hex()}}})
    )
    cfg = {"registry": "devices.json", "redis": {"url": rds.url, "key_prefix": "t1:"}}
    (tmp_path / "service.json").write_text(json.dumps(cfg))
    svc, _ = build_from_config(tmp_path / "service.json")
    assert svc.store.prefix == "t1:" and svc.store.r.ping()
    text = ServiceMetrics(svc).render().decode()
    assert "atls_state_store_up 1.0" in text
    assert 'atls_state_store_total{event="commits"} 0.0' in text
    rds.stop()
    svc.store.adopt(svc, 77, ADDR, 0)  # a packet for a session it does not hold
    text = ServiceMetrics(svc).render().decode()
    assert "atls_state_store_up 0.0" in text
    assert 'atls_state_store_total{event="errors"} 1.0' in text


class HoldApp(App):
    """A hold_acks application whose worker never finishes (it is lost)."""

    hold_acks = True

    def __init__(self, done):
        super().__init__()
        self.done = done

    def on_message(self, session, payload):
        self.got.append(bytes(payload))
        if not self.done:
            import asyncio

            return asyncio.get_event_loop().create_future()  # never done
        return None


def test_hold_acks_messages_a_lost_worker_never_made_safe_are_delivered_again(rds, tmp_path):
    import asyncio

    asyncio.set_event_loop(asyncio.new_event_loop())
    p = Pair(rds, tmp_path)
    for w, done in zip(p.w, (False, True)):
        w.app = HoldApp(done)
        w.svc.app = w.app
    _up(p)
    p.dev.send(b"m1", p.now)
    p.run(500)
    assert p.w[0].app.got == [b"m1"] and p.dev.pending() == [b"m1"]  # delivered, not safe
    p.to = 1  # worker 0 is lost with its awaitable; the device sends m1 again
    assert p.run(5000, lambda: not p.dev.pending())
    assert p.w[1].app.got == [b"m1"] and p.w[1].svc.counters["state_redelivered"] == 1
    p.dev.send(b"m2", p.now)
    assert p.run(3000, lambda: not p.dev.pending())
    assert p.w[1].app.got == [b"m1", b"m2"] and p.dev.handshakes == 1


def test_flush_commits_acknowledgements_for_a_graceful_handover(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.dev.send(b"echo:1", p.now)
    assert p.run(2000, lambda: p.got == [b"re:1"])
    p.run(500)  # the device's ACK of the reply: not committed on its own
    (s0,) = w0.svc.sessions.values()
    assert w0.store.flush(w0.svc) == 1
    s1 = w1.store.adopt(w1.svc, s0.sid, ADDR, p.now)
    assert s1.link.unacked() == [] and s1.link.first_unacked_id() == s0.link.first_unacked_id()


def test_made_up_session_ids_cost_bounded_redis_lookups(rds, tmp_path):
    from atls import protocol, wire

    p = Pair(rds, tmp_path)
    w0 = p.w[0]
    r = rds.client()
    r.config_resetstat()
    w0.store.lookups_per_s = 50  # (5000 by default)
    for i in range(1, 61):  # a flood from spoofed addresses, one made-up id each
        pkt = wire.encode(protocol.DATA, i, bytes(17))
        w0.svc.datagram_received(pkt, ("198.51.100.%d" % i, 1000 + i))
    c = w0.svc.counters
    assert _evalsha(r).get("hmget") == 50 and c["state_lookups_refused"] == 10
    assert c["state_load_misses"] == 50 and not w0.svc.sessions
    p.now += 1000  # a new second: lookups again, but not of an id that just missed
    for _ in range(3):
        w0.svc.datagram_received(wire.encode(protocol.DATA, 70, bytes(17)), ("198.51.100.1", 1))
    assert _evalsha(r).get("hmget") == 51


def test_a_replayed_packet_from_a_spoofed_address_gets_at_most_3x_back(rds, tmp_path):
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    captured = []
    p.dev.send(b"plain:x", p.now)
    captured += p.dev.datagrams(p.now + 1)
    p.run(500)
    (s0,) = w0.svc.sessions.values()
    s0.send(b"big" * 300)  # in flight to the device, which does not answer
    w0.svc.tick()
    w0.out.clear()
    victim = ("203.0.113.9", 4444)
    for d in captured:  # the device's old DATA, replayed to worker 1 from another address
        w1.svc.datagram_received(d, victim)
    for _ in range(30):
        p.now += 100
        w1.svc.tick()
    sent = [d for d, a in w1.out if a == victim]
    assert s0.sid in w1.svc.sessions and sent  # kept: it answers the replay with an ACK
    assert sum(map(len, sent)) <= 3 * sum(map(len, captured)) and max(map(len, sent)) < 100


def test_two_worker_processes_and_one_killed(rds, tmp_path):
    """Real service processes (python -m host_tools.service, each its own clock)
    sharing Redis: the device handshakes with the first, which is then killed
    with SIGKILL; the second continues the session, nothing lost or repeated."""
    import socket
    import time

    from e2e import ServiceProc

    redis_cfg = {"url": rds.url, "seal_key_file": str(tmp_path / "seal.key")}
    procs = [None, None]

    def start(i):
        (tmp_path / str(i)).mkdir()
        extra = {"redis": redis_cfg, "app": "tests.test_state_store:EchoTagged"}
        procs[i] = ServiceProc(tmp_path / str(i), {"dev-1": PSKS[b"dev-1"]}, extra=extra)

    starts = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    cfg = LinkConfig(mtu=1200, rto_ms=100, rto_max_ms=400, handshake_timeout_ms=5000)
    dev = DeviceSession(ClientConfig(psk=PSKS[b"dev-1"], psk_identity=b"dev-1"), cfg)
    t0 = time.monotonic()
    got = []
    target = [procs[0].addr]

    def run(seconds, until):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = int((time.monotonic() - t0) * 1000)
            for d in dev.datagrams(now):
                sock.sendto(d, target[0])
            while True:
                try:
                    dev.receive(sock.recv(2048), now)
                except BlockingIOError:
                    break
            got.extend(bytes(e[1]) for e in dev.events() if e[0] == "message")
            if until():
                return True
            time.sleep(0.005)
        return False

    try:
        dev.connect(0)
        assert run(10, lambda: dev.state == "up")
        for i in range(3):
            dev.send(b"a%d" % i, int((time.monotonic() - t0) * 1000))
        assert run(10, lambda: len(got) == 3 and not dev.pending())
        procs[0].proc.kill()  # SIGKILL, mid-session
        target[0] = procs[1].addr  # where the balancer sends the device now
        for i in range(3):
            dev.send(b"b%d" % i, int((time.monotonic() - t0) * 1000))
        assert run(10, lambda: len(got) == 6 and not dev.pending())
        c1 = procs[1].counters(0)
        for _ in range(30):  # the stats file is written every second
            if c1["messages_in"] == 3:
                break
            c1 = procs[1].counters(0.1)
        assert got == [b"w0:a0", b"w0:a1", b"w0:a2", b"w1:b0", b"w1:b1", b"w1:b2"]
        assert dev.handshakes == 1 and c1["handshakes_ok"] == 0 and c1["state_loads"] == 1
        assert c1["messages_in"] == 3 and c1["state_conflicts"] == 0
    finally:
        sock.close()
        for p in procs:
            if p is not None:
                p.stop()


class EchoTagged:
    """Echoes with the worker's tag (its config folder's name: 0 or 1)."""

    def __init__(self):
        import os
        import sys

        cfg = sys.argv[sys.argv.index("--config") + 1]
        self.tag = b"w" + os.path.basename(os.path.dirname(cfg)).encode()

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        session.send(self.tag + b":" + bytes(payload))

    def on_close(self, session, reason):
        pass
