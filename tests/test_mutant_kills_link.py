"""atls.link and atls.channel boundaries that `make mutants` (tests/mutants/) found no test
pinning down; the link's own tests (tests/test_link.py) belong to the
protocol work, so these live apart.  docs/PROTOCOL.md §2-§3."""

import pytest

from atls import wire
from atls.errors import UsageError
from atls.link import Link, LinkConfig
from atls.protocol import ACK, CLOSE, DATA, HS_ACK


def test_a_flight_of_exactly_max_flight_bytes_is_sent_one_more_is_refused():
    for size in (1, 4096):
        cli = Link("client", LinkConfig(mtu=64, max_flight=4096))
        cli.send_flight(bytes(size), 0)
        assert cli.flight_pending() and cli.datagrams(0)
    for size in (0, 4097):
        cli = Link("client", LinkConfig(mtu=64, max_flight=4096))
        with pytest.raises(UsageError):
            cli.send_flight(bytes(size), 0)
        assert not cli.flight_pending()


def test_a_non_final_fragment_254_is_bad_fragment():
    """§2: indexes 0..254; a non-final fragment at 254 leaves no room for an
    END (255 is the last index), so it is bad_fragment, not stored."""
    srv = Link("server", LinkConfig(mtu=64, max_flight=4096), session_id=5)
    srv.receive(wire.encode_hs(0, 0, 254, b"x"), 0)
    assert srv.drops["bad_fragment"] == 1 and srv.drops["too_big"] == 0
    srv.receive(wire.encode_hs(0, 0, 253, b"x"), 0)  # 253 is a legal non-final index
    assert srv.drops["bad_fragment"] == 1


def test_an_hs_ack_without_progress_does_not_restart_the_backoff():
    """§2: the retransmission backoff restarts only when an HS_ACK
    acknowledges a fragment not acknowledged before."""
    cli = Link("client", LinkConfig(mtu=64, rto_ms=1000))
    cli.send_flight(bytes(200), 0)  # 4 fragments
    assert len(cli.datagrams(0)) == 4
    assert cli.next_timer_ms() == 1000
    assert len(cli.datagrams(1000)) == 4  # retransmitted; backoff now 2000
    assert cli.next_timer_ms() == 3000
    ack0 = wire.encode(HS_ACK, 7, bytes((0, 0x80)))  # fragment 0 of flight 0
    cli.receive(ack0, 1500)
    assert cli.next_timer_ms() == 2500  # progress: backoff back to rto_ms
    cli.receive(ack0, 1600)  # the same again: no progress, no restart
    assert cli.next_timer_ms() == 2500
    assert len(cli.datagrams(2500)) == 3  # fragment 0 is not sent again
    assert cli.next_timer_ms() == 4500


KB = bytes(range(200, 256))


def pump(a, b, now, drop=None, limit=50):
    """Exchange datagrams until both are quiet; drop(d) may eat one."""
    for _ in range(limit):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams(now):
                moved = True
                if drop is None or not drop(d):
                    dst.receive(d, now)
        if not moved:
            return


def connect(**cfg):
    cli = Link("client", LinkConfig(mtu=64, **cfg))
    srv = Link("server", LinkConfig(mtu=64, **cfg), 0x0BAD)
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 300, 1)
    pump(cli, srv, 1)
    cli.send_flight(b"\x18" * 50, 2)
    pump(cli, srv, 2)
    # both channels before the HELLOs (seq 0, §4) go out, so neither is
    # dropped as no_channel and waits rto_ms
    srv.start_channel(KB, 0x1305)
    cli.start_channel(KB, 0x1305)
    pump(cli, srv, 3)
    assert cli.state == srv.state == "open"
    assert [e[0] for e in cli.events()][-1:] == [e[0] for e in srv.events()][-1:] == ["hello"]
    assert not cli.unacked() and not srv.unacked() and cli.peer_base == srv.peer_base == 0
    return cli, srv


def test_selective_acks_count_from_next_whatever_next_is():
    """§4: ACK bit k acknowledges seq next + 1 + k; with next far from 0 the
    selectively acknowledged messages are not sent again, only the gap."""
    cli, srv = connect(window=8)
    for _ in range(40):
        cli.send(b"m", 10)
        pump(cli, srv, 10)
    for _ in range(4):
        cli.send(b"n", 20)
    first = []

    def drop_first(d):
        if not first and d[0] & 7 == DATA:
            first.append(d)
            return True
        return False

    pump(cli, srv, 20, drop=drop_first)
    assert first and len([e for e in srv.events() if e[0] == "message"]) == 40
    again = cli.datagrams(20 + 1000)  # rto_ms after: only the gap goes again
    assert again == first
    assert cli.counters["retransmissions"] == 1


def test_the_last_close_counter_still_sends_close():
    """§5: CLOSE counters 0..MAX_COUNTER are all usable; past it nothing is
    sealed (the nonce would repeat)."""
    for close_seq, sent in ((wire.MAX_COUNTER, 1), (wire.MAX_COUNTER + 1, 0)):
        cli, srv = connect()
        cli.channel.close_seq = close_seq
        cli.close()
        out = cli.datagrams(10)
        assert len([d for d in out if d[0] & 7 == CLOSE]) == sent, close_seq


def test_channel_opens_only_sealed_types():
    from atls.channel import Channel
    from atls.protocol import ERROR, HS_END

    ch = Channel(KB, 0x1305, "client")
    for t in (HS_END, HS_ACK, ERROR):
        with pytest.raises(UsageError):
            ch.open((t, 5, 0, 0, bytes(20)))


def test_link_config_bounds_are_inclusive():
    LinkConfig(mtu=32, rx_mtu=32, replay_window=64)
    LinkConfig(mtu=65535)
    LinkConfig(rto_ms=1, rto_max_ms=1, handshake_timeout_ms=1, peer_timeout_ms=1)
    LinkConfig(reorder=0, queue=0, window=1)
    LinkConfig(mtu=64, max_flight=59 * 255)  # 255 fragments of mtu - 5
    for bad in (
        dict(mtu=31),
        dict(mtu=65536),
        dict(rx_mtu=31),
        dict(replay_window=63),
        dict(rto_ms=0),
        dict(rto_ms=10, rto_max_ms=9),
        dict(handshake_timeout_ms=0),
        dict(peer_timeout_ms=0),
        dict(reorder=-1),
        dict(queue=-1),
        dict(window=0),
        dict(mtu=64, max_flight=59 * 255 + 1),
        dict(max_flight=0),
    ):
        with pytest.raises(UsageError):
            LinkConfig(**bad)


def test_close_during_the_handshake_stops_and_close_after_the_end_changes_nothing():
    cli = Link("client", LinkConfig(mtu=64))
    cli.send_flight(bytes(10), 0)
    cli.close(3)
    assert cli.state == "closed" and cli.events() == [("closed", 3)]
    cli.close(4)  # already closed: nothing
    assert cli.state == "closed" and cli.events() == []
    a, b = connect()
    a.close()
    pump(a, b, 10)
    assert a.state == b.state == "closed"
    a.events()
    a.close(2)
    assert a.state == "closed" and a.events() == []


def test_a_closed_link_answers_a_repeated_close_with_the_last_counter():
    """§5: the side that closed answers a CLOSE that comes again (its answer
    was lost), as long as a CLOSE counter is left."""
    for close_seq, sent in ((wire.MAX_COUNTER, 1), (wire.MAX_COUNTER + 1, 0)):
        a, b = connect()
        closes = []

        def keep(d):
            if d[0] & 7 == CLOSE and not closes:
                closes.append(d)
            return False

        a.close()
        pump(a, b, 10, drop=keep)
        assert b.state == "closed" and closes
        b.channel.close_seq = close_seq
        b.receive(closes[0], 5000)  # a's CLOSE again
        out = b.datagrams(10000)
        assert len([d for d in out if d[0] & 7 == CLOSE]) == sent, close_seq


def test_unacked_returns_inflight_then_queued_in_seq_order():
    a, b = connect(window=2, queue=8)
    for i in range(5):
        a.send(bytes((i,)), 10)
    assert a.unacked() == [bytes((i,)) for i in range(5)]


def test_reorder_up_to_ack_span_and_session_ids_in_16_bits():
    LinkConfig(reorder=wire.ACK_SPAN, window=wire.ACK_SPAN)
    for bad in (dict(reorder=wire.ACK_SPAN + 1), dict(window=wire.ACK_SPAN + 1)):
        with pytest.raises(UsageError):
            LinkConfig(**bad)
    Link("server", LinkConfig(), 0xFFFF)
    for role, sid in (("client", -1), ("server", 0x10000), ("server", -1), ("server", 0)):
        with pytest.raises(UsageError):
            Link(role, LinkConfig(), sid)


def test_an_hs_ack_naming_the_peers_own_flight_is_bad_ack():
    """§2: HS_ACK names one of our flights (even for a device); one naming
    the service's flight 1 is bad_ack, a late one of our flight 0 a duplicate."""
    cli, srv = connect()
    dup, bad = cli.counters["duplicates"], cli.drops["bad_ack"]
    cli.receive(wire.encode(HS_ACK, 0x0BAD, bytes((1, 0x80))), 100)
    assert cli.drops["bad_ack"] == bad + 1 and cli.counters["duplicates"] == dup
    cli.receive(wire.encode(HS_ACK, 0x0BAD, bytes((0, 0x80))), 100)
    assert cli.drops["bad_ack"] == bad + 1 and cli.counters["duplicates"] == dup + 1


def test_a_repeated_close_is_answered_a_quarter_rto_after_the_last_reply():
    a, b = connect()
    closes = []

    def keep(d):
        if d[0] & 7 == CLOSE and not closes:
            closes.append(d)
        return False

    a.close()
    pump(a, b, 10, drop=keep)  # b answers at 10 and is closed
    b.receive(closes[0], 20)
    assert b.datagrams(20) == []  # not before 10 + rto_ms // 4
    assert [d[0] & 7 for d in b.datagrams(10 + 1000 // 4)] == [CLOSE]


def test_rekey_comes_after_the_last_ack_counter_not_before():
    cli, srv = connect()
    srv.channel.ack_seq = wire.MAX_COUNTER - 1
    cli.send(b"x", 10)
    pump(cli, srv, 10)
    assert srv.events() == [
        ("message", b"x", 0, 0)
    ]  # id base + seq - 1; counter MAX_COUNTER - 1 used: one left
    cli.send(b"y", 20)
    pump(cli, srv, 20)
    assert srv.events() == [("message", b"y", 0, 1), ("rekey",)]


def test_a_flight_of_exactly_one_fragment_payload_is_one_fragment():
    """§2: a flight is cut into ceil(n / (mtu - 5)) fragments; a flight of
    exactly mtu - 5 bytes is one HS_END, one byte more is two fragments."""
    for n, want in (
        (59, [wire.HS_END]),
        (60, [wire.HS, wire.HS_END]),
        (118, [wire.HS, wire.HS_END]),
    ):
        cli = Link("client", LinkConfig(mtu=64))
        cli.send_flight(bytes(n), 0)
        assert [d[0] & 7 for d in cli.datagrams(0)] == want, n


def test_an_end_fragment_first_is_bounded_by_its_index():
    """§2: an HS_END that arrives before any other fragment (its size unknown)
    is refused as too_big when (index + 1) * its length exceeds max_flight."""
    for i, n, too_big in ((1, 600, 1), (1, 500, 0), (2, 400, 1), (0, 1000, 0)):
        srv = Link("server", LinkConfig(mtu=64, max_flight=1000), session_id=5)
        srv.receive(wire.encode_hs(0, 0, i, bytes(n), True), 0)
        assert srv.drops["too_big"] == too_big and srv.drops["bad_fragment"] == 0, (i, n)


def test_first_unacked_id_is_the_oldest_unacknowledged_message():
    """§4: the base of the next session is the id of the first message not
    yet acknowledged (id = base + seq - 1); after=True the next new id."""
    cli, srv = connect()
    assert cli.first_unacked_id() == 0 and cli.first_unacked_id(after=True) == 0
    for m in (b"a", b"b", b"c"):
        cli.send(m, 10)
    assert cli.first_unacked_id() == 0 and cli.first_unacked_id(after=True) == 3
    pump(cli, srv, 10)
    assert [e[3] for e in srv.events() if e[0] == "message"] == [0, 1, 2]
    assert cli.first_unacked_id() == 3 == cli.first_unacked_id(after=True)


def test_fragments_after_the_end_may_be_as_long_as_the_end():
    """§2: the END may be as long as the other fragments (a flight of a
    multiple of mtu - 5 bytes); a fragment that comes after it is refused
    only when shorter than the END."""
    srv = Link("server", LinkConfig(mtu=64), session_id=5)
    srv.receive(wire.encode_hs(0, 0, 1, bytes(59), True), 0)
    srv.receive(wire.encode_hs(0, 0, 0, b"\x01" * 59), 0)
    assert srv.drops["bad_fragment"] == 0
    assert srv.events()[-1] == ("flight", b"\x01" * 59 + bytes(59))
    srv = Link("server", LinkConfig(mtu=64), session_id=5)
    srv.receive(wire.encode_hs(0, 0, 1, bytes(30), True), 0)
    srv.receive(wire.encode_hs(0, 0, 0, bytes(29)), 0)
    assert srv.drops["bad_fragment"] == 1


def test_an_incomplete_flight_is_acknowledged_at_once_on_its_end_only():
    """§2: the END of a flight with gaps is acknowledged at once (the sender
    learns the gaps); another fragment of it only rto_ms/4 after the last
    repeated answer."""
    srv = Link("server", LinkConfig(mtu=64, rto_ms=1000), session_id=5)
    srv.receive(wire.encode_hs(0, 0, 0, bytes(59)), 0)
    assert [d[0] & 7 for d in srv.datagrams(0)] == []  # a first fragment: no HS_ACK
    srv.receive(wire.encode_hs(0, 0, 0, bytes(59)), 600)  # a repeat: answered
    assert [d[0] & 7 for d in srv.datagrams(600)] == [HS_ACK]
    srv.receive(wire.encode_hs(0, 0, 1, bytes(59)), 650)  # not before 600 + 250
    assert srv.datagrams(650) == []
    srv.receive(wire.encode_hs(0, 0, 3, bytes(10), True), 700)
    assert [d[0] & 7 for d in srv.datagrams(700)] == [HS_ACK]  # the END: at once


def test_an_ack_without_progress_does_not_restart_the_data_backoff():
    """§4: only an ACK that acknowledges something new restarts the
    retransmission backoff (and the peer timeout)."""
    cli, srv = connect(rto_ms=1000)
    cli.send(b"x", 10)
    assert len(cli.datagrams(10)) == 1  # lost
    assert len(cli.datagrams(1010)) == 1  # lost again; backoff now 2000
    assert cli.next_timer_ms() == 3010
    cli.receive(srv.channel.seal(ACK, 0x0BAD, 1, 0), 1500)  # next = 1: nothing new
    assert cli.drops["bad_ack"] == 0 and cli.next_timer_ms() == 3010
    cli.receive(srv.channel.seal(ACK, 0x0BAD, 2, 0), 1600)  # x acknowledged
    assert cli.unacked() == []


def test_the_service_hello_gives_the_device_its_reset_token():
    """§4-§5: the service HELLO is base || granted channels || reset token;
    the device keeps the token, and only a RESET carrying it ends the
    confirmed session."""
    from atls.protocol import ERROR, RESET

    token = bytes(range(0x30, 0x40))
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), 0x0BAD)
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 300, 1)
    pump(cli, srv, 1)
    cli.send_flight(b"\x18" * 50, 2)
    pump(cli, srv, 2)
    srv.start_channel(KB, 0x1305, 7, hello=b"\x04" + token)
    cli.start_channel(KB, 0x1305)
    pump(cli, srv, 3)
    assert cli.reset_token == token and cli.peer_channels == 4 and cli.peer_base == 7
    assert cli.confirmed
    for i in (0, 7, 15):  # every byte counts
        wrong = bytearray(token)
        wrong[i] ^= 1
        cli.receive(wire.encode(ERROR, 0x0BAD, bytes((RESET,)) + bytes(wrong)), 10)
    assert cli.state == "open" and cli.drops["unauthenticated"] == 3
    cli.receive(wire.encode(ERROR, 0x0BAD, bytes((RESET,)) + token), 10)
    assert cli.state == "failed"


def test_an_ack_with_progress_pulls_the_remaining_retransmissions_in():
    """§4: an ACK that acknowledges something restarts the backoff: what is
    still in flight is due again rto_ms after it, not at its backed-off time."""
    cli, srv = connect(rto_ms=1000)
    cli.send(b"a", 10)
    cli.send(b"b", 10)
    assert len(cli.datagrams(10)) == 2  # both lost
    assert len(cli.datagrams(1010)) == 2  # lost again; due at 3010
    assert cli.next_timer_ms() == 3010
    cli.receive(srv.channel.seal(ACK, 0x0BAD, 2, 0), 1500)  # a acknowledged
    assert cli.unacked() == [b"b"] and cli.next_timer_ms() == 2500


def test_only_seq_0_on_the_control_channel_is_a_hello():
    cli, srv = connect()
    cli.send(b"12345678-not-a-hello", 10, channel=1)
    cli.send(b"12345678", 10, channel=1)
    pump(cli, srv, 10)
    assert srv.events() == [
        ("message", b"12345678-not-a-hello", 1, 0),
        ("message", b"12345678", 1, 1),
    ]


def test_a_busy_hint_backs_the_first_flight_off():
    """§5: an ERROR before the service chose a session (sid 0) is a hint:
    the device doubles its flight's retransmission timeout, nothing ends."""
    from atls.protocol import BUSY, ERROR

    cli = Link("client", LinkConfig(mtu=64, rto_ms=1000))
    cli.send_flight(bytes(100), 0)
    cli.datagrams(0)
    assert cli.next_timer_ms() == 1000
    cli.receive(wire.encode(ERROR, 0, bytes((BUSY,))), 100)
    assert cli.counters["hints"] == 1 and cli.state == "handshake"
    assert cli.next_timer_ms() == 2100


def test_a_device_adopts_a_session_id_only_from_handshake_packets():
    """§1: before it knows its session id, the device takes one from HS,
    HS_END or HS_ACK only; a sealed packet with another id is unknown_session."""
    from atls.protocol import BUSY, ERROR

    cli = Link("client", LinkConfig(mtu=64))
    cli.send_flight(bytes(100), 0)
    cli.datagrams(0)
    cli.receive(wire.encode(DATA, 0x77, bytes(20)), 10)
    assert cli.drops["unknown_session"] == 1 and cli.drops["no_channel"] == 0
    cli.receive(wire.encode(ERROR, 0x77, bytes((BUSY,))), 20)
    assert cli.drops["unknown_session"] == 1


def test_our_flight_acknowledges_the_peers_implicitly():
    """§2: a flight sent before the HS_ACK went out replaces it."""
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), 0x0BAD)
    cli.send_flight(b"\x16" * 150, 0)
    for d in cli.datagrams(0):
        srv.receive(d, 0)
    srv.send_flight(b"\x17" * 100, 1)  # before datagrams(): no HS_ACK of flight 0
    assert [d[0] & 7 for d in srv.datagrams(0)] == [wire.HS, wire.HS_END]


def test_the_devices_flight_acknowledges_the_services_implicitly():
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), 0x0BAD)
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 100, 1)
    for d in srv.datagrams(1):
        cli.receive(d, 1)
    assert [e[0] for e in cli.events()][-1] == "flight"
    cli.send_flight(b"\x18" * 50, 2)  # before datagrams(): no HS_ACK of flight 1
    assert [d[0] & 7 for d in cli.datagrams(1)] == [wire.HS_END]
