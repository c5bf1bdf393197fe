"""Routable session ids (host_tools.service.routing; docs/SCALE.md "Session
ids"): after QUIC-LB's plaintext server ids, the top bits of the 16-bit sid
name the worker that issued it."""

import pytest
from test_state_store import PSKS, Pair

from atls import protocol, wire
from atls.link import LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools.service.core import Service
from host_tools.service.errors import ConfigError
from host_tools.service.routing import SidSpace, from_config
from host_tools.service.tls_engine import ServerConfig


def test_sid_layout_worked_example():
    """docs/SCALE.md: server 5 of 3 bits issues 0xA000..0xBFFF; 0xA5C3 is its."""
    s = SidSpace(5, 3)
    assert (s.prefix, s.low_mask) == (0xA000, 0x1FFF)
    assert s.server_of(0xA5C3) == 5 and s.mine(0xA5C3)
    assert not s.mine(0xC5C3) and s.server_of(0xC5C3) == 6
    for _ in range(200):
        sid = s.new(())
        assert sid >> 13 == 5


def test_workers_never_issue_the_same_sid():
    spaces = [from_config(None, i, 4) for i in range(4)]
    assert [s.bits for s in spaces] == [2] * 4
    seen = {}
    for s in spaces:
        for _ in range(300):
            sid = s.new(seen)
            seen[sid] = s.server_id
    assert all(sid >> 14 == owner for sid, owner in seen.items())
    assert 0 not in seen


def test_server_zero_never_issues_sid_zero_even_when_nearly_full():
    s = SidSpace(0, 8)  # 255 usable ids: 0x0001..0x00FF
    taken = set()
    for _ in range(s.capacity()):
        taken.add(s.new(taken))
    assert 0 not in taken and len(taken) == 255 == s.capacity()
    with pytest.raises(RuntimeError):
        s.new(taken)


def test_default_is_the_fully_random_single_process():
    s = from_config(None)
    assert (s.server_id, s.bits) == (0, 0)
    assert s.mine(0xFFFF) and s.mine(1) and not s.mine(0)
    assert s.capacity() == 0xFFFF


@pytest.mark.parametrize(
    "routing, index, workers",
    [
        ({"server_id": 3, "server_bits": 2}, 1, 2),  # ids 3..4 do not fit in 2 bits
        ({"server_bits": 9}, 0, 1),
        ({"server_id": -1}, 0, 1),
        ({"server": 1}, 0, 1),
        ({"server_id": 1}, 0, 1),  # 1 needs server_bits >= 1
        ("x", 0, 1),
    ],
)
def test_bad_routing_config_is_refused(routing, index, workers):
    with pytest.raises(ConfigError):
        from_config(routing, index, workers)


def test_a_machine_takes_a_range_of_server_ids():
    """Two machines of 2 workers each: server ids 0-1 and 2-3 of 2 bits."""
    a = [from_config({"server_id": 0, "server_bits": 2}, i, 2).server_id for i in range(2)]
    b = [from_config({"server_id": 2, "server_bits": 2}, i, 2).server_id for i in range(2)]
    assert a + b == [0, 1, 2, 3]


def _service(space):
    svc = Service(ServerConfig(psks={b"d": bytes(32)}), LinkConfig(mtu=1200))
    svc.sids = space
    sent = []
    svc._send = lambda data, addr: sent.append((bytes(data), addr))
    return svc, sent


def test_service_issues_sids_of_its_server_id():
    svc, _ = _service(SidSpace(2, 2))
    sids = {svc.new_session(("192.0.2.1", 1000 + i), 0).sid for i in range(50)}
    assert len(sids) == 50 and all(s >> 14 == 2 for s in sids)


def test_another_workers_sid_never_gets_a_reset(tmp_path):
    """A sealed packet for an unknown sid gets RESET || token (the previous
    run's key) only when this worker issued the sid; another worker's sid
    gets ERROR(unknown_session): a token of ours is worth nothing for it."""
    Service(ServerConfig(psks={}), LinkConfig(mtu=1200), state_dir=tmp_path)  # a previous run
    svc = Service(ServerConfig(psks={}), LinkConfig(mtu=1200), state_dir=tmp_path)
    svc.sids = SidSpace(1, 2)
    sent = []
    svc._send = lambda data, addr: sent.append((bytes(data), addr))
    sealed = bytes(40)
    for sid in (0x4321, 0x8321):  # server 1's, server 2's
        svc.datagram_received(wire.encode(protocol.DATA, sid, sealed), ("192.0.2.9", 5))
    (mine, _), (other, _) = sent
    assert protocol.peek(mine) == (protocol.ERROR, 0x4321) and mine[3] == protocol.RESET
    assert len(mine) == protocol.HEADER_LEN + 1 + protocol.RESET_TOKEN_LEN
    assert protocol.peek(other) == (protocol.ERROR, 0x8321)
    assert other[3:] == bytes((protocol.UNKNOWN_SESSION,))


class _Fixed(SidSpace):
    """A SidSpace whose first pick is `first` (then the usual linear walk)."""

    first = 0

    def _start(self):
        return self.first & self.low_mask


def test_a_restarted_worker_never_issues_an_id_live_in_redis(rds, tmp_path):  # noqa: F811
    """Worker 1 runs with worker 0's server id (worker 0 restarted): its
    first pick is the id of the session its previous run stored in Redis,
    now held elsewhere; it must take another id, not refuse the handshake
    (before the fix: state_sid_in_use, the new device's handshake failed)."""
    p = Pair(rds, tmp_path)
    w0, w1 = p.w
    for w in p.w:
        w.svc.sids = _Fixed(3, 8)
    assert p.run(5000, lambda: w0.app.sessions)
    old = w0.app.sessions[0].sid
    assert old >> 8 == 3
    _Fixed.first = old
    cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600, handshake_timeout_ms=5000)
    new = DeviceSession(ClientConfig(psk=PSKS[b"dev-2"], psk_identity=b"dev-2"), cfg)
    new.connect(p.now)
    p.devs[("192.0.2.8", 1)] = new
    for _ in range(500):  # the old device stays with worker 0, the new one reaches worker 1
        p.now += 10
        for addr, dev in p.devs.items():
            for d in dev.datagrams(p.now):
                (w1 if dev is new else w0).svc.datagram_received(d, addr)
        for w in p.w:
            w.svc.tick()
        p.deliver()
        if w1.app.sessions or w1.svc.counters["handshakes_failed"]:
            break
    assert w1.app.sessions, w1.svc.counters["handshake_failures"]
    assert old in w0.svc.sessions and old not in w1.svc.sessions
    sid = w1.app.sessions[0].sid
    assert sid != old and sid >> 8 == 3
    assert w1.svc.counters["handshakes_failed"] == 0
