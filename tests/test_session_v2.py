"""Issue 13, items 1-4: what a hostile path forges can neither duplicate, lose
nor stall a message (docs/PROTOCOL.md §4-§5, link protocol v2).

The device is the firmware's DeviceSession (CPython), the service the real
service core (host_tools.service.core.Service, OpenSSL), in one process on a
virtual clock; `Net` is the path between them and can drop or forge packets
in either direction.  Each test is written to fail on link protocol v1.
"""

import pytest

from atls import protocol, wire
from atls.link import LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools.service.core import Service
from host_tools.service.tls_engine import ServerConfig

PSK = bytes(range(32))
ADDR = ("192.0.2.7", 5684)


class App:
    """Records every message the service application gets."""

    def __init__(self):
        self.got = []
        self.sessions = []
        self.ids = []

    def on_connect(self, session):
        self.sessions.append(session)

    def on_message(self, session, payload):
        self.got.append(bytes(payload))
        self.ids.append(getattr(session, "last_msg_id", None))

    def on_close(self, session, reason):
        pass


class Net:
    def __init__(self, state_dir=None, **dev_kw):
        self.now = 0
        self.addr = ADDR  # the device's address as the service sees it
        self.app = App()
        kw = {"state_dir": state_dir} if state_dir is not None else {}
        self.svc = self._service(kw)
        cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600, handshake_timeout_ms=5000)
        self.dev = DeviceSession(
            ClientConfig(psk=PSK, psk_identity=b"dev-1"), cfg, retry_ms=1000, **dev_kw
        )
        self.up = self.down = None  # filters: return False to drop a packet
        self.events = []
        self.starts = []  # when the device started a handshake
        self.to_dev = []
        self.elsewhere = []  # what the service sent to other addresses
        self.dev.connect(self.now)
        self.starts.append(self.now)

    def _service(self, kw):
        svc = Service(
            ServerConfig(psks={b"dev-1": PSK}),
            LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=1600),
            app=self.app,
            **kw,
        )
        svc.now_ms = lambda: self.now
        svc.connection_made(self)
        return svc

    def restart_service(self, state_dir):
        self.svc = self._service({"state_dir": state_dir})

    def sendto(self, data, addr):
        if addr == self.addr:
            self.to_dev.append(bytes(data))
        else:
            self.elsewhere.append((bytes(data), addr))

    def step(self, ms=10):
        self.now += ms
        hs = self.dev.handshakes
        out = self.dev.datagrams(self.now)
        if self.dev.handshakes != hs:
            self.starts.append(self.now)
        for d in out:
            if self.up is None or self.up(d):
                self.svc.datagram_received(d, self.addr)
        self.svc.tick()
        out, self.to_dev = self.to_dev, []
        for d in out:
            if self.down is None or self.down(d):
                self.dev.receive(d, self.now)
        self.events += self.dev.events()

    def run(self, ms, until=None):
        end = self.now + ms
        while self.now < end:
            self.step()
            if until is not None and until():
                return True
        return False

    def received(self):
        return [bytes(e[1]) for e in self.events if e[0] == "message"]

    def sid(self):
        link = self.dev.link
        return link.session_id if link is not None else 0

    def forge_error(self, sid=None, reason=protocol.UNKNOWN_SESSION):
        # an unauthenticated ERROR, as anyone on the path can write it
        d = bytearray(wire.encode(protocol.ERROR, self.sid() if sid is None else sid, b"\x00"))
        d[3] = reason
        self.dev.receive(bytes(d), self.now)
        self.events += self.dev.events()


def is_ack(d):
    return len(d) > 3 and d[0] & 7 == protocol.ACK


def up(net):
    assert net.run(5000, lambda: net.dev.state == "up" and net.app.sessions), net.events
    net.run(500)


def test_item1_forged_error_after_lost_ack_never_duplicates():
    net = Net()
    up(net)
    net.down = lambda d: not is_ack(d)  # the path drops the service's ACKs...
    net.dev.send(b"reading", net.now)
    net.run(300)
    assert net.app.got == [b"reading"]
    for _ in range(5):  # ...and forges ERROR(unknown_session) five times
        net.forge_error()
        net.run(1500)
    net.down = None
    net.run(8000)
    assert net.app.got == [b"reading"]  # exactly once at the application
    assert not net.dev.pending()  # and acknowledged in the end


def test_item1_message_sent_again_in_a_new_session_is_delivered_once():
    # the session really ends (here: the device drops its link, as after a
    # clock rebase) after the service delivered a message whose ACK was lost
    net = Net()
    up(net)
    net.down = lambda d: not is_ack(d)
    for i in range(3):
        net.dev.send(b"m%d" % i, net.now)
    net.run(300)
    assert net.app.got == [b"m0", b"m1", b"m2"]
    net.dev.rebase(0, net.now)  # a new session; m0..m2 are sent again in it
    net.down = None
    assert net.run(8000, lambda: not net.dev.pending() and net.dev.state == "up")
    net.dev.send(b"m3", net.now)
    net.run(1000)
    assert net.app.got == [b"m0", b"m1", b"m2", b"m3"]
    assert len(net.app.sessions) == 2
    assert net.svc.counters["duplicates_suppressed"] == 3
    ids = net.app.ids
    assert ids == list(range(ids[0], ids[0] + 4))  # per-device ids, across sessions


def test_item2_replacing_session_takes_over_service_messages():
    net = Net()
    up(net)
    net.up = lambda d: not is_ack(d)  # the device's ACKs are lost
    sess = net.app.sessions[-1]
    for i in range(3):
        sess.send(b"cmd%d" % i)
    net.run(300)
    assert net.received() == [b"cmd0", b"cmd1", b"cmd2"]
    sess.send(b"cmd3")  # queued or in flight when the device moves on
    net.dev.rebase(0, net.now)  # the device starts a new session
    net.up = None
    assert net.run(8000, lambda: len(net.app.sessions) == 2 and b"cmd3" in net.received())
    net.run(2000)
    # nothing lost, nothing twice: the device de-duplicated cmd0..cmd2
    assert net.received() == [b"cmd0", b"cmd1", b"cmd2", b"cmd3"]
    assert net.dev.counters["duplicates"] >= 1
    assert net.svc.counters["messages_moved"] >= 1


def _starts_per_minute(starts):
    return max(len([t for t in starts if s <= t < s + 60000]) for s in starts)


@pytest.mark.parametrize("pattern", ["error_when_up", "error_always", "busy", "drop_acks"])
def test_item3_forged_packets_bound_handshakes_to_six_a_minute(pattern):
    net = Net()
    up(net)
    if pattern == "drop_acks":
        net.up = net.down = lambda d: not is_ack(d)
    t_end = net.now + 120000
    while net.now < t_end:
        net.step(50)
        if pattern == "error_when_up" and net.dev.state == "up":
            net.forge_error()
        elif pattern == "error_always":
            net.forge_error()  # with the session id the path sees
            net.forge_error(0, protocol.BUSY)
        elif pattern == "busy":
            net.forge_error(0, protocol.BUSY)
        if pattern == "drop_acks" and net.now % 5000 == 0:
            net.dev.send(b"x", net.now)
    assert _starts_per_minute(net.starts) <= 6, net.starts


def test_item3_backoff_is_not_reset_by_an_unauthenticated_end():
    net = Net()
    up(net)
    net.down = lambda d: d[0] & 7 not in (protocol.HS, protocol.HS_END)  # handshakes fail
    net.dev.rebase(0, net.now)
    net.run(40000)
    # 1, 2, 4, 8, 16 s apart (handshake timeouts of 5 s in between), never 1 s again
    gaps = [b - a for a, b in zip(net.starts[1:], net.starts[2:])]
    assert gaps == sorted(gaps) and len(net.starts) <= 7, net.starts


def test_item4_off_path_error_cannot_abort_a_handshake():
    net = Net()
    # the ClientHello is out, nothing came back yet: no session id
    net.down = lambda d: False
    net.step()
    assert net.dev.state == "handshaking" and net.sid() == 0
    for sid in (0x1234, 0xBEEF, 7):  # ERROR for any other session id
        net.forge_error(sid)
    net.forge_error(0, protocol.BUSY)  # and busy for session 0: a hint, not fatal
    assert net.dev.state == "handshaking" and net.dev.link.state == "handshake"
    assert not [e for e in net.events if e[0] in ("down", "failed")]
    net.down = None
    up(net)
    assert net.dev.handshakes == 1


def test_item4_service_answers_no_3_byte_probe():
    net = Net()
    up(net)
    before = net.svc.counters["datagrams_out"]
    net.svc.datagram_received(wire.encode(protocol.DATA, 0x4242, b"")[:3], ("198.51.100.9", 9))
    assert net.svc.counters["datagrams_out"] == before  # 3 bytes in: nothing out


def test_channels_tag_messages_and_channel_0_is_unchanged():
    net = Net()
    got = []
    net.app.on_channel_message = lambda s, ch, p: got.append((ch, bytes(p)))
    up(net)
    net.dev.send(b"app", net.now)
    net.dev.send(b"update-status", net.now, 2)
    sess = net.app.sessions[-1]
    sess.send(b"cmd")
    sess.send(b"chunk", channel=2)
    net.run(1000)
    assert net.app.got == [b"app"] and got == [(2, b"update-status")]
    msgs = [e for e in net.events if e[0] == "message"]
    assert msgs == [("message", b"cmd"), ("message", b"chunk", 2)]
    assert net.dev.link.peer_channels == 0x04  # the service grants channel 2


def test_service_restart_resets_the_session_and_never_delivers_twice(tmp_path):
    net = Net(state_dir=tmp_path)
    up(net)
    net.down = lambda d: not is_ack(d)  # the reading arrives, its ACK does not
    net.dev.send(b"before", net.now)
    net.run(300)
    assert net.app.got == [b"before"]
    net.restart_service(tmp_path)  # same state directory: marks and reset key
    net.down = None
    # the retransmission reaches a service without the session: RESET (the
    # token from the old service's HELLO) ends it, a new session re-sends
    assert net.run(15000, lambda: not net.dev.pending() and net.dev.state == "up")
    assert net.svc.counters["resets_sent"] >= 1
    assert ("down", "reset") in net.events
    net.dev.send(b"after", net.now)
    net.run(1000)
    assert net.app.got == [b"before", b"after"]  # "before" was suppressed once
    assert net.svc.counters["duplicates_suppressed"] == 1
    assert oct((tmp_path / "reset.key").stat().st_mode & 0o777) == "0o600"


def test_reset_token_never_goes_to_another_address():
    # a stranger replays the device's sealed packet from its own address: the
    # service must not answer with the session's RESET token
    net = Net()
    up(net)
    seen = []
    net.up = lambda d: seen.append(d) or True
    net.dev.send(b"x" * 30, net.now)
    net.run(300)
    data = [d for d in seen if d[0] & 7 == protocol.DATA]
    net.svc.datagram_received(data[0], ("198.51.100.9", 4444))
    assert all(len(d) == 4 for d, _ in net.elsewhere), net.elsewhere  # ERROR at most
    token = net.dev.link.reset_token
    assert token and not [d for d, _ in net.elsewhere if token in d]
    assert net.app.got == [b"x" * 30] and net.svc.counters["resets_sent"] == 0


def test_session_follows_the_device_to_a_new_address():
    # the gateway restarts: the device's packets come from another port; its
    # next authenticated message moves the session, no new handshake
    net = Net()
    up(net)
    net.addr = ("192.0.2.7", 6000)
    net.dev.send(b"moved", net.now)
    net.run(2000)
    assert net.app.got == [b"moved"] and net.dev.handshakes == 1
    assert net.app.sessions[-1].addr == net.addr
    net.app.sessions[-1].send(b"reply")
    net.run(1000)
    assert ("message", b"reply") in net.events


def test_service_messages_wait_for_the_next_session_when_a_session_times_out():
    net = Net()
    up(net)
    net.up = lambda d: not is_ack(d)  # the device's ACKs are lost...
    net.app.sessions[-1].send(b"cmd0")
    net.run(300)
    assert net.received() == [b"cmd0"]
    net.up = net.down = lambda d: False  # ...then the device is gone a while
    net.app.sessions[-1].send(b"late")  # never reaches it in this session
    net.run(65000)  # the service's link gives up (peer_timeout): the session ends
    assert not net.svc.sessions
    net.up = net.down = None
    net.dev.rebase(0, net.now)
    assert net.run(30000, lambda: len(net.app.sessions) == 2)
    net.app.sessions[-1].send(b"cmd1")
    net.run(2000)
    assert net.received() == [b"cmd0", b"late", b"cmd1"]  # held, re-sent, never twice
    assert net.dev.counters["duplicates"] == 1


def test_no_reset_token_of_this_run_can_be_collected(tmp_path):
    """Anyone may send a sealed-looking packet for any session id the service
    does not hold and get its RESET: that token must never be the one a
    session of the same run carries in its HELLO (else collecting all 65,536
    ids' tokens would let the path end any later session).  First run: no
    RESET at all; after a restart: RESETs carry the previous run's tokens."""
    net = Net(state_dir=tmp_path)
    up(net)
    sid = net.dev.link.session_id
    probe = wire.encode(protocol.DATA, sid, bytes(30))
    first = net.svc.unknown_answer(protocol.DATA, sid, probe)
    assert first == wire.encode(protocol.ERROR, sid, bytes((protocol.UNKNOWN_SESSION,)))
    old_token = net.dev.link.reset_token
    net.restart_service(tmp_path)
    ans = net.svc.unknown_answer(protocol.DATA, sid, probe)
    assert ans == wire.encode(protocol.ERROR, sid, bytes((protocol.RESET,)) + old_token)
    for s in range(1, 200):  # what anyone can collect now ends no session of this run
        p = wire.encode(protocol.DATA, s, bytes(30))
        assert net.svc.unknown_answer(protocol.DATA, s, p)[4:] != net.svc.peers.token(s)


def test_moves_deliver_each_service_message_once_across_many_sessions():
    """Regression: a replaced session's end held again the messages its
    replacement had just taken, so each further re-handshake sent them once
    more under new ids (the device delivered them twice) and the service's
    queue for a device that never got an ACK through grew without bound
    (the abuse bench's service RSS)."""
    net = Net()
    up(net)
    net.up = lambda d: not is_ack(d)  # the device's ACKs are lost
    net.app.sessions[-1].send(b"cmd0")
    net.app.sessions[-1].send(b"cmd1")
    net.run(300)
    for k in range(4):  # the device starts at most six handshakes a minute
        net.dev.rebase(0, net.now)
        assert net.run(8000, lambda: len(net.app.sessions) == k + 2), k
        net.run(300)
        sess = net.app.sessions[-1]
        held = net.svc.peers.held.get(sess.key, (0, []))[1]
        assert len(sess.link.unacked(True)) + len(sess.backlog) + len(held) == 2
    net.up = None
    net.run(3000)
    assert net.received() == [b"cmd0", b"cmd1"]
