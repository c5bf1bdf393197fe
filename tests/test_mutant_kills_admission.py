"""The service's admission in process (host_tools.service.admission): the
first-flight table, the ClientHello check, the anti-amplification budget and
the order of the intake's refusals; unit tests written for `make mutants`
(tests/mutants/), milliseconds each, on a virtual clock `now` (ms, at
realistic values: the service's clock counts from its start).  The first
flights are the firmware TLS client's ClientHellos.  Each test names the
rule it holds (the module doc, docs/SECURITY.md); the intake's queue, rate,
replay and scheduling rules are in test_mutant_kills_intake.py."""

from collections import Counter
from types import SimpleNamespace

from atls import wire
from atls.tls.client import ClientConfig, TLSClient
from host_tools.service.admission import (
    DEFAULT_LIMITS,
    Budget,
    FirstFlights,
    Intake,
    busiest_ip,
    client_hello_ok,
)

PSK = bytes(range(32))
T = 10_000_000  # a service that has run for a few hours (ms)


def client_hello(identity=b"dev-1", psk=PSK):
    """The TLS records of a fresh ClientHello (a new random each time)."""
    tls = TLSClient(ClientConfig(psk=psk, psk_identity=identity))
    tls.start()
    return tls.data_to_send()


def one_datagram(identity=b"dev-1", psk=PSK):
    """A first flight in one datagram (HS_END, index 0), as a device sends it."""
    return (wire.encode_hs(0, 0, 0, client_hello(identity, psk), True),)


def fragments(flight, sizes):
    """`flight` cut into fragments of `sizes` (the rest in the last, HS_END)."""
    out, pos = [], 0
    for i, n in enumerate(sizes):
        out.append(wire.encode_hs(0, 0, i, flight[pos : pos + n]))
        pos += n
    out.append(wire.encode_hs(0, 0, len(sizes), flight[pos:], True))
    return out


def records(body, sizes):
    """A handshake message re-framed in TLS records of `sizes` bytes (RFC
    8446 §5.1: a handshake message may span records)."""
    out, pos = b"", 0
    for n in sizes:
        out += b"\x16\x03\x01" + n.to_bytes(2, "big") + body[pos : pos + n]
        pos += n
    return out


# ---- client_hello_ok ---------------------------------------------------------


def test_client_hello_in_records_of_one_byte_and_of_16384_bytes_is_a_client_hello():
    """RFC 8446 §5.1: a handshake record holds 1 to 2^14 bytes, both ends
    included: a ClientHello whose first record is a single byte is one, and so
    is one whose record is exactly 16384 bytes (one byte more is not)."""
    body = client_hello()[5:]
    assert client_hello_ok(records(body, [1, len(body) - 1]))
    assert client_hello_ok(records(body, [len(body) - 2, 1, 1]))
    big = b"\x01" + (16384 - 4).to_bytes(3, "big") + b"\x03\x03" + bytes(16384 - 6)
    assert client_hello_ok(records(big, [16384]))
    assert client_hello_ok(records(big, [1, 16383]))
    bigger = b"\x01" + (16385 - 4).to_bytes(3, "big") + b"\x03\x03" + bytes(16385 - 6)
    assert not client_hello_ok(records(bigger, [16385]))
    assert client_hello_ok(records(bigger, [16384, 1]))


# ---- FirstFlights ------------------------------------------------------------


def drop_counter():
    drops = Counter()
    return drops, lambda reason: drops.update((reason,))


def test_first_flight_in_order_completes_only_with_its_end():
    """A first flight is complete when its HS_END and every index below it
    are in, not before: three fragments in order give nothing until the
    third, then the flight in index order (and the table is empty again)."""
    drops, drop = drop_counter()
    ff = FirstFlights(8, 4, 5000, 4096, drop)
    flight = client_hello()
    frags = fragments(flight, [60, 60])
    addr = ("198.51.100.1", 4000)
    assert ff.add(addr, frags[0], T) is None
    assert ff.add(addr, frags[1], T) is None
    assert not drops and len(ff.table) == 1
    assert ff.add(addr, frags[2], T) == frags
    assert not drops and not ff.table and not ff.per_ip


def test_first_flight_of_255_fragments_is_kept_256_are_too_many():
    """The link's fragment indexes run 0..254 (docs/PROTOCOL.md §2): a
    first flight in 255 fragments is whole; a 256th index is refused
    (too_big) rather than kept."""
    flight = client_hello(identity=b"d" * 120)  # over 255 bytes: one or more each
    assert len(flight) > 255
    frags = fragments(flight, [1] * 254)
    assert len(frags) == 255
    drops, drop = drop_counter()
    ff = FirstFlights(8, 4, 5000, 4096, drop)
    addr = ("198.51.100.1", 4000)
    got = [ff.add(addr, f, T) for f in frags]
    assert got[:-1] == [None] * 254 and got[-1] == frags and not drops
    ff.add(addr, frags[0], T)
    for f in frags[1:-1]:
        ff.add(addr, f, T)
    ff.add(addr, wire.encode_hs(0, 0, 255, b"x"), T)
    assert ff.add(addr, frags[-1], T) is None  # 256 fragments: 0..255
    assert drops == {"too_big": 1} and not ff.table


def test_one_datagram_client_hello_replaces_a_waiting_fragment_of_the_same_address():
    """A device whose earlier flight left a fragment in the table (it
    rebooted, or changed its MTU) and now sends its ClientHello in one
    datagram (HS_END at index 0) gets it through at once, and the entry is
    gone."""
    drops, drop = drop_counter()
    ff = FirstFlights(8, 4, 5000, 4096, drop)
    addr = ("198.51.100.1", 4000)
    old = fragments(client_hello(), [60, 60])
    assert ff.add(addr, old[1], T) is None  # index 1 of an old flight waits
    assert len(ff.table) == 1
    new = one_datagram()
    assert ff.add(addr, new[0], T + 10) == [new[0]]
    assert not ff.table and not ff.per_ip and not drops


def test_restarts_tells_a_new_first_flight_from_a_retransmission():
    """An address with a half-open session (its ClientHello began with
    `frag0`) starts again only with a new first flight: fragment 0 with the
    same bytes is a retransmission, with other bytes a new ClientHello;
    another fragment is new only while a new flight from that address is
    being put together in the table."""
    drops, drop = drop_counter()
    ff = FirstFlights(8, 4, 5000, 4096, drop)
    addr = ("198.51.100.1", 4000)
    old = fragments(client_hello(), [60, 60])
    frag0 = bytes(old[0][5:])
    assert ff.restarts(addr, old[0], frag0) is False
    assert ff.restarts(addr, old[1], frag0) is False and ff.restarts(addr, old[2], frag0) is False
    new = fragments(client_hello(), [60, 60])
    assert ff.restarts(addr, new[0], frag0) is True
    assert ff.restarts(addr, new[1], frag0) is False  # nothing of a new flight here yet
    assert ff.add(addr, new[0], T) is None
    assert ff.restarts(addr, new[1], frag0) is True
    assert ff.restarts(("198.51.100.1", 4001), new[1], frag0) is False  # another address
    assert not drops


# ---- Budget, busiest_ip ------------------------------------------------------


def test_withheld_hs_ack_does_not_stop_the_flight_behind_it():
    """Unvalidated, the service's HS_ACK is withheld (it would stop the
    device's retransmissions, which raise the budget), but the fragments
    after it still go within 3x: an HS_ACK queued before a fragment does not
    hold that fragment back."""
    ack = wire.encode(wire.HS_ACK, 5, bytes((0,)) + wire.make_bitmap([0], 1))
    frags = [wire.encode_hs(5, 1, i, bytes(40), i == 1) for i in range(2)]
    b = Budget(3)
    b.received(100)
    sent = []
    b.send([ack, frags[0], frags[1]], sent.append)
    assert sent == [frags[1], frags[0]]  # HS_END first, then the rest
    assert ack not in sent and not b.held
    assert b.bytes_out == sum(len(f) for f in frags) <= 3 * 100


def test_busiest_ip_is_the_one_holding_most_half_open_sessions():
    """When the global half-open cap is reached, the IP with the most
    half-open sessions among the `look` oldest loses one (a flood evicts
    itself); nothing half-open: None."""
    half_open = {
        1: SimpleNamespace(addr=("192.0.2.1", 1)),
        2: SimpleNamespace(addr=("198.51.100.9", 1)),
        3: SimpleNamespace(addr=("198.51.100.9", 2)),
    }
    per_ip = {"192.0.2.1": [3, 1], "198.51.100.9": [2, 2]}
    assert busiest_ip(half_open, per_ip) == "198.51.100.9"
    assert busiest_ip(half_open, per_ip, look=1) == "192.0.2.1"
    assert busiest_ip({}, {}) is None


# ---- Intake: refuses() before any parsing -------------------------------------


def intake(psks=None, **limits):
    drops, drop = drop_counter()
    return Intake(dict(DEFAULT_LIMITS, **limits), drop, psks), drops


def fill(ik, ip, n, now=T):
    """n first flights from n addresses of `ip`, queued."""
    for port in range(n):
        assert ik.put((ip, 1000 + port), one_datagram(), now)


def test_an_empty_intake_refuses_no_first_flight():
    """refuses() says True only for a full IP queue or a replay: a fresh
    first flight (>= 48 bytes, fragment 0) to an empty intake, or to an IP
    with room, is not refused, with or without PSKs."""
    for psks in (None, {b"dev-1": PSK}):
        ik, drops = intake(psks, intake_per_ip=2)
        d = one_datagram()[0]
        assert not ik.refuses(("192.0.2.1", 1), d, T)
        ik.put(("192.0.2.1", 1), (d,), T)
        assert not ik.refuses(("192.0.2.1", 2), one_datagram()[0], T)
        assert not drops


def test_a_full_ip_queue_refuses_new_addresses_before_parsing():
    """intake_per_ip flights queued from an IP (exactly the limit): a new
    address of that IP is refused (intake_full, counted once); the queued
    address itself (a retransmission) and another IP are not."""
    ik, drops = intake(intake_per_ip=2)
    fill(ik, "192.0.2.1", 1)
    assert not ik.refuses(("192.0.2.1", 2000), one_datagram()[0], T)  # 1 of 2
    fill(ik, "192.0.2.1", 2)  # port 1000 again (a retransmission), then 1001
    assert len(ik) == 2
    assert ik.refuses(("192.0.2.1", 2000), one_datagram()[0], T) is True
    assert drops == {"intake_full": 1}
    assert not ik.refuses(("192.0.2.1", 1000), one_datagram()[0], T)
    assert not ik.refuses(("203.0.113.5", 1000), one_datagram()[0], T)
    assert drops == {"intake_full": 1}


def test_a_full_queue_leaves_binder_checks_to_put_while_the_ip_has_them():
    """With PSKs, a full IP queue does not refuse in refuses() while the IP
    may still have a binder checked in put() (_proven); once its binder
    checks are spent, it does: binder_checks_per_ip_per_s=1 gives 2."""
    ik, drops = intake({b"dev-1": PSK}, intake_per_ip=1, binder_checks_per_ip_per_s=1)
    fill(ik, "192.0.2.1", 1)
    for port in (1, 2):
        assert not ik.refuses(("192.0.2.1", port), one_datagram()[0], T)
        assert ik.put(("192.0.2.1", port), one_datagram(), T)  # proven: checked, queued
    assert ik.refuses(("192.0.2.1", 3), one_datagram()[0], T)
    assert drops == {"intake_full": 1, "intake_evicted": 1}  # proven ones stay


def test_a_known_address_is_never_refused_for_its_ips_full_queue():
    """A device that authenticated from an address (validated) is not
    refused for its IP's full queue: behind a gateway its flights share the
    IP with the spoofed ones."""
    ik, drops = intake(intake_per_ip=2)
    fill(ik, "192.0.2.1", 2)
    dev = ("192.0.2.1", 5684)
    ik.validated(dev, T)
    assert not ik.refuses(dev, one_datagram()[0], T)
    assert not drops


def test_refuses_a_replayed_first_fragment_from_another_address():
    """A started ClientHello's first datagram from another address is a
    replay, refused before parsing (client_hello_replay); a datagram of 48
    bytes holds the whole random (link 5 + record 5 + handshake 4 + version
    2 + random 32) and is checked too.  The same bytes from the address that
    sent them (a retransmission) and a fragment other than index 0 (it holds
    no random) are not refused."""
    ik, drops = intake()
    a, b = ("192.0.2.1", 1), ("203.0.113.7", 9)
    flight = one_datagram()
    ik.put(a, flight, T)
    assert ik.take(T + 1) == (a, flight)
    d = flight[0]
    assert ik.refuses(b, d, T + 2) is True
    assert ik.refuses(b, d[:48], T + 2) is True
    assert drops == {"client_hello_replay": 2}
    assert ik.refuses(a, d, T + 2) is False
    assert ik.refuses(b, d[:47], T + 2) is False
    not_first = d[:4] + b"\x01" + d[5:]  # the same bytes at index 1
    assert ik.refuses(b, not_first, T + 2) is False
    assert drops == {"client_hello_replay": 2}


def test_only_a_first_flight_whose_binder_verifies_may_supersede_a_half_open_session():
    """Intake.valid: with PSKs, a new ClientHello ends its address's half-open
    session only if its binder verifies (a spoofed one, with a wrong key or an
    unknown identity, does not); a ClientHello whose binder cannot be checked
    here (no PSK offered: OpenSSL decides) may, and without PSKs any may."""
    ik, _ = intake({b"dev-1": PSK})
    assert ik.valid(one_datagram()) is True
    assert ik.valid(one_datagram(psk=PSK[::-1])) is False
    assert ik.valid(one_datagram(identity=b"dev-2")) is False
    cert = TLSClient(ClientConfig(ca_certs=[b"\x30\x00"], server_name="x"))
    cert.start()
    no_psk = (wire.encode_hs(0, 0, 0, cert.data_to_send(), True),)
    assert ik.valid(no_psk) is True
    ik, _ = intake()
    assert ik.valid(one_datagram(psk=PSK[::-1])) is True and ik.valid(no_psk) is True
