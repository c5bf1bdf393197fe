"""atls.link / atls.link_data rules that `make mutants` (tests/mutants/) found no
test pinning down (the second batch; test_mutant_kills_link.py has the first).
In process, virtual clock, the real wire codec and channel at both ends.
docs/PROTOCOL.md §2-§5."""

import pytest
from test_mutant_kills_link import KB, connect, pump

from atls import wire
from atls.errors import UsageError
from atls.link import Link, LinkConfig
from atls.protocol import BUSY, DATA, ERROR, HS_ACK, RESET

SID = 0x0BAD


def kinds(out):
    return [d[0] & 7 for d in out]


def handshake(cli, srv):
    """The three flights of connect(), every one acknowledged."""
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 300, 1)
    pump(cli, srv, 1)
    cli.send_flight(b"\x18" * 50, 2)
    pump(cli, srv, 2)


# -- handshake (§2) ------------------------------------------------------------
def test_a_flight_is_refused_out_of_turn_or_after_the_link_ended():
    """§2: the device sends flight 0; the service has no flight before it
    has the device's, and a closed link sends none."""
    srv = Link("server", LinkConfig(mtu=64), SID)
    with pytest.raises(UsageError):
        srv.send_flight(b"x", 0)
    assert not srv.flight_pending() and srv.datagrams(0) == []
    cli = Link("client", LinkConfig(mtu=64))
    cli.close()
    with pytest.raises(UsageError):
        cli.send_flight(b"x", 0)
    assert not cli.flight_pending()


def test_a_non_final_fragment_that_leaves_no_room_for_the_end_is_too_big():
    """§2: fragment i of length n (not the END) means a flight of more than
    (i + 1) * n bytes: at (i + 1) * n == max_flight it is already too big."""
    srv = Link("server", LinkConfig(mtu=64, max_flight=118), session_id=5)
    srv.receive(wire.encode_hs(0, 0, 1, bytes(59)), 0)
    assert srv.drops["too_big"] == 1
    srv.receive(wire.encode_hs(0, 0, 0, bytes(59)), 0)  # 59 + at least 1 more: fits
    assert srv.drops["too_big"] == 1 and srv.drops["bad_fragment"] == 0


def test_an_end_after_full_fragments_is_bounded_by_the_whole_flight():
    """§2: with the fragment size known, an END at index i of length n makes
    a flight of i * size + n bytes, refused above max_flight."""
    for n, too_big in ((42, 1), (41, 0)):
        srv = Link("server", LinkConfig(mtu=64, max_flight=100), session_id=5)
        srv.receive(wire.encode_hs(0, 0, 0, b"\x01" * 59), 0)
        srv.receive(wire.encode_hs(0, 0, 1, b"\x02" * n, True), 0)
        assert srv.drops["too_big"] == too_big, n
        flights = [e for e in srv.events() if e[0] == "flight"]
        assert flights == ([] if too_big else [("flight", b"\x01" * 59 + b"\x02" * n)])


def test_a_flight_of_two_full_fragments_arrives_whole_in_either_order():
    """§2: the END may be as long as the other fragments; a flight of exactly
    max_flight bytes is accepted whichever fragment comes first."""
    data = bytes(range(118))
    for order in ((0, 1), (1, 0)):
        cli = Link("client", LinkConfig(mtu=64, max_flight=118))
        srv = Link("server", LinkConfig(mtu=64, max_flight=118), SID)
        cli.send_flight(data, 0)
        out = cli.datagrams(0)
        assert kinds(out) == [wire.HS, wire.HS_END]
        for k in order:
            srv.receive(out[k], 0)
        assert srv.events() == [("flight", data)], order
        assert srv.drops["too_big"] == srv.drops["bad_fragment"] == 0


def test_a_one_byte_max_flight_is_a_valid_config():
    """LinkConfig: max_flight 1..255 fragments; 1 byte is the smallest."""
    cli = Link("client", LinkConfig(mtu=64, max_flight=1))
    cli.send_flight(b"x", 0)
    assert kinds(cli.datagrams(0)) == [wire.HS_END]


def test_repeated_fragments_are_answered_at_most_once_per_quarter_rto():
    """§2: an HS_ACK that only repeats state waits rto_ms/4 after the last
    repeated one (replayed fragments cannot make the link flood), and the
    wait is a timer the caller sleeps on (flight 0: the service's)."""
    srv = Link("server", LinkConfig(mtu=64, rto_ms=1000), session_id=5)
    frag = wire.encode_hs(0, 0, 0, bytes(59))
    srv.receive(frag, 0)
    assert srv.datagrams(0) == [] and srv.next_timer_ms() is None
    srv.receive(frag, 600)  # a repeat: answered at once
    assert kinds(srv.datagrams(600)) == [HS_ACK]
    srv.receive(frag, 650)  # again: not before 600 + 250
    assert srv.datagrams(650) == [] and srv.next_timer_ms() == 850
    assert srv.datagrams(849) == []
    assert kinds(srv.datagrams(850)) == [HS_ACK]
    assert srv.next_timer_ms() is None


# -- timers after the end (§5) -------------------------------------------------
def test_a_failed_or_closed_link_fires_no_more_deadlines():
    """§5: failed and closed are final: the peer timeout of a message still
    in flight, or the CLOSE deadline, reports nothing a second time."""
    cli, srv = connect()
    srv.send(b"x", 10)
    assert kinds(srv.datagrams(10)) == [DATA]  # lost
    srv.abort(BUSY)
    assert srv.events() == [("error", "busy")]
    assert kinds(srv.datagrams(20)) == [ERROR]
    assert srv.datagrams(10 + 60000 + 1) == [] and srv.events() == []
    assert srv.state == "failed"
    a, b = connect()
    a.close()
    pump(a, b, 10)
    assert a.state == b.state == "closed"
    a.events()
    b.events()
    for link in (a, b):
        assert link.datagrams(10 + 30000 + 1) == [] and link.events() == []


def test_the_handshake_deadline_holds_until_our_last_flight_is_acknowledged():
    """§2: a side that starts its channel with its last flight unacknowledged
    still fails at the handshake deadline; one whose flights are all
    acknowledged waits on its messages (peer timeout) instead."""
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), SID)
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 300, 1)
    pump(cli, srv, 1)
    cli.send_flight(b"\x18" * 50, 2)  # lost, never acknowledged
    cli.start_channel(KB, 0x1305)
    cli.datagrams(2)
    assert cli.flight_pending()
    assert cli.datagrams(29999) and cli.state == "open"
    cli.datagrams(30000)  # flight 0 was sent at 0
    assert cli.state == "failed" and ("error", "handshake_timeout") in cli.events()

    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), SID)
    handshake(cli, srv)
    srv.start_channel(KB, 0x1305)  # its HELLO never answered
    assert not srv.flight_pending()
    srv.datagrams(3)
    srv.datagrams(40000)
    assert srv.state == "open"
    srv.datagrams(3 + 60000)
    assert srv.state == "failed" and srv.events()[-1] == ("error", "peer_timeout")


# -- messages (§3-§4) ----------------------------------------------------------
def test_a_message_may_use_the_last_channel_number_and_no_other():
    """§4: a channel is one byte: 255 is the last, 256 and -1 are refused."""
    cli, srv = connect()
    for bad in (256, -1):
        with pytest.raises(UsageError):
            cli.send(b"x", 10, channel=bad)
    cli.send(b"x", 10, channel=255)
    pump(cli, srv, 10)
    assert srv.events() == [("message", b"x", 255, 0)]


def test_a_message_on_a_channel_has_one_byte_less_room():
    """§4: CDATA carries the channel number inside the sealed plaintext, so
    a message on channel > 0 may be mtu - overhead - 1 bytes, not more."""
    cli, srv = connect()
    room = 64 - cli.channel.overhead
    with pytest.raises(UsageError):
        cli.send(bytes(room), 10, channel=2)
    cli.send(bytes(room - 1), 10, channel=2)
    cli.send(bytes(room), 10)
    out = cli.datagrams(10)
    assert [len(d) for d in out] == [64, 64]
    for d in out:
        srv.receive(d, 10)
    assert [(e[0], len(e[1]), e[2]) for e in srv.events()] == [
        ("message", room - 1, 2),
        ("message", room, 0),
    ]


def test_an_ack_with_progress_does_not_delay_messages_due_earlier():
    """§4: progress restarts the backoff: whatever is in flight is due no
    later than rto_ms after the ACK; a message due before that keeps its time."""
    cli, srv = connect(rto_ms=1000)
    cli.send(b"a", 10)
    (a,) = cli.datagrams(10)
    cli.send(b"b", 900)
    assert len(cli.datagrams(900)) == 1  # b lost, due at 1900
    srv.receive(a, 950)
    for d in srv.datagrams(950):
        cli.receive(d, 1000)  # a acknowledged at 1000
    assert cli.unacked() == [b"b"] and cli.next_timer_ms() == 1900


def test_a_message_32_seqs_ahead_is_held_one_more_is_not():
    """§4: the receiver holds early messages that its ACK bitmap can name
    (up to next + 32); beyond that they are reorder_full, not acknowledged."""
    cli, srv = connect()  # srv's next expected seq: 1
    seal = cli.channel.seal
    srv.receive(seal(DATA, SID, 33, 0, b"33"), 10)
    assert srv.drops["reorder_full"] == 0
    srv.receive(seal(DATA, SID, 34, 0, b"34"), 10)
    assert srv.drops["reorder_full"] == 1
    for s in range(1, 33):
        srv.receive(seal(DATA, SID, s, 0, b"%d" % s), 20)
    got = [e[1] for e in srv.events() if e[0] == "message"]
    assert got == [b"%d" % s for s in range(1, 34)]


def test_a_held_ack_still_names_the_early_messages():
    """§4 (service hold mode): with everything delivered released (ack_to ==
    next), the ACK carries the bitmap of held messages, so the sender
    re-sends only the gap."""
    cli, srv = connect(rto_ms=1000)
    srv.ack_to = 1  # the HELLO (seq 0) delivered and safe
    cli.send(b"a", 10)
    cli.send(b"b", 10)
    a, b = cli.datagrams(10)
    srv.receive(b, 10)  # a lost: b is held
    for d in srv.datagrams(10):
        cli.receive(d, 10)
    assert cli.datagrams(1010) == [a]


def test_closing_still_sends_the_queued_messages():
    """§5: the closing side finishes what it queued (window by window)
    before its CLOSE."""
    cli, srv = connect(window=1)
    for m in (b"a", b"b", b"c"):
        cli.send(m, 10)
    cli.close()
    pump(cli, srv, 10)
    assert [e[1] for e in srv.events() if e[0] == "message"] == [b"a", b"b", b"c"]
    assert cli.state == srv.state == "closed"


# -- ERROR and RESET (§5) --------------------------------------------------------
TOKEN = bytes(range(0x30, 0x40))


def test_before_the_channel_any_error_for_our_session_ends_the_handshake():
    """§5: before the service sent an authenticated packet the device takes
    an ERROR for its session id at face value."""
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), SID)
    cli.send_flight(b"\x16" * 150, 0)
    pump(cli, srv, 0)
    srv.send_flight(b"\x17" * 300, 1)
    pump(cli, srv, 1)
    assert cli.session_id == SID and not cli.confirmed
    cli.receive(wire.encode(ERROR, SID, bytes((BUSY,))), 5)
    assert cli.state == "failed" and cli.drops["unauthenticated"] == 0


def test_once_confirmed_only_a_reset_with_the_token_ends_the_session():
    """§5: an established session ignores every other ERROR (counted as
    unauthenticated); a RESET with its token ends it."""
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), SID)
    handshake(cli, srv)
    srv.start_channel(KB, 0x1305, 0, hello=b"\x00" + TOKEN)
    cli.start_channel(KB, 0x1305)
    pump(cli, srv, 3)
    assert cli.confirmed and cli.reset_token == TOKEN
    cli.receive(wire.encode(ERROR, SID, bytes((BUSY,))), 10)
    assert cli.state == "open" and cli.drops["unauthenticated"] == 1
    cli.receive(wire.encode(ERROR, SID, bytes((RESET,)) + TOKEN), 10)
    assert cli.state == "failed"


def test_a_service_hello_too_short_for_channels_and_token_gives_no_token():
    """§4: the service HELLO is base || channels (1) || token (16); with 16
    bytes after the base there is no whole token, so none is kept and no
    RESET can end the session."""
    cli = Link("client", LinkConfig(mtu=64))
    srv = Link("server", LinkConfig(mtu=64), SID)
    handshake(cli, srv)
    srv.start_channel(KB, 0x1305, 0, hello=b"\x04" + TOKEN[:15])
    cli.start_channel(KB, 0x1305)
    pump(cli, srv, 3)
    assert cli.confirmed and cli.reset_token is None and cli.peer_channels == 0
    cli.receive(wire.encode(ERROR, SID, bytes((RESET,)) + TOKEN[:15] + b"\x00"), 10)
    assert cli.state == "open" and cli.drops["unauthenticated"] == 1


# -- a refused first flight (issue 14: stale or forged service flights) --------
def _first_flight_from(cli, hello, sid, data, now):
    """A service link with `sid` answers the client's ClientHello (`hello`,
    its datagrams) with flight 1 = `data`; the client gets all of it."""
    srv = Link("server", LinkConfig(mtu=64, rto_ms=1000), sid)
    for d in hello:
        srv.receive(d, now)
    srv.send_flight(data, now)
    for d in srv.datagrams(now):
        cli.receive(d, now)
    return srv


def test_a_refused_first_flight_is_forgotten_and_the_client_hello_goes_again_rto_later():
    """refuse_flight (the client's TLS found the service's first flight not
    made for its ClientHello): the flight is as if never received - no HS_ACK
    is due for it, the session id it taught is dropped from then on - and
    the same ClientHello goes again rto_ms after the refusal (not at once:
    the late flights of a flood would make it a storm), after which a genuine
    service's flight 1 is taken as the first."""
    cli = Link("client", LinkConfig(mtu=64, rto_ms=1000))
    cli.send_flight(b"\x16" * 150, 0)
    hello = cli.datagrams(0)
    assert kinds(hello) == [wire.HS, wire.HS, wire.HS_END]
    stale = _first_flight_from(cli, hello, 0x0111, b"\x17" * 100, 100)
    assert cli.events() == [("session_id", 0x0111), ("flight", b"\x17" * 100)]
    assert not cli.flight_pending()  # the service's flight acknowledged the ClientHello
    cli.refuse_flight(200)
    assert cli.session_id == 0 and cli.flight_pending()
    assert cli.next_timer_ms() == 1200  # the ClientHello again; no HS_ACK due
    assert cli.datagrams(200) == [] and cli.datagrams(1199) == []
    for d in stale.datagrams(1100):  # the refused service retransmits: unknown now
        cli.receive(d, 1100)
    assert cli.drops["unknown_session"] == 2 and cli.events() == []
    assert cli.datagrams(1200) == hello and cli.next_timer_ms() == 3200
    _first_flight_from(cli, hello, 0x0222, b"\x18" * 100, 1300)
    assert cli.events() == [("session_id", 0x0222), ("flight", b"\x18" * 100)]
    assert cli.session_id == 0x0222 and cli.counters["duplicates"] == 0


def test_only_a_first_flight_just_received_can_be_refused():
    """refuse_flight is for the service's flight 1 only: before the client
    sent its ClientHello, while it waits for an answer, after its flight 2,
    and on a service link it is a UsageError that changes nothing."""
    cli = Link("client", LinkConfig(mtu=64))
    with pytest.raises(UsageError):
        cli.refuse_flight(0)
    cli.send_flight(b"\x16" * 150, 0)
    cli.datagrams(0)
    with pytest.raises(UsageError):  # nothing received yet
        cli.refuse_flight(10)
    assert cli.session_id == 0 and cli.next_timer_ms() == 1000
    cli, srv = Link("client", LinkConfig(mtu=64)), Link("server", LinkConfig(mtu=64), SID)
    handshake(cli, srv)
    for link in (cli, srv):
        with pytest.raises(UsageError):
            link.refuse_flight(10)
        assert link.session_id == SID and not link.flight_pending()
