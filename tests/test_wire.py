"""docs/PROTOCOL.md §1 packet codec (atls.wire), under CPython and MicroPython.

Expected values come from `ref_decode`, an independent decoder written from
the §1 table in this file, not from atls.wire.  Covered: every first byte
(marker / version / type), truncation at every length of every type, length
limits (too_big), fragment rules (empty, index 255), the HS_ACK bitmap bit
order, encode/decode round trips, and random bytes (hypothesis): decode
raises nothing but wire.Drop.  The MicroPython run streams the same rows
through atls.wire (compiled by mpy-cross) in a 32 KiB heap.
"""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from atls import wire

# ---- an independent reference decoder, from the §1 table ---------------------

TAGS = (None, 8, 16)
# type: (name, fixed part after the 3-byte header, sealed?)
TABLE = {
    0: ("HS", 2, False),
    1: ("HS_END", 2, False),
    2: ("HS_ACK", 1, False),
    3: ("DATA", 1, True),  # version 2: the seq's low byte (§3)
    4: ("ACK", 8, True),
    5: ("CLOSE", 3, True),
    6: ("ERROR", 1, False),
    7: ("CDATA", 1, True),
}


def ref_decode(d, tag_len=None, max_len=None):
    """(type, sid, a, b, c) as atls.wire documents it, or the drop reason."""
    if not d:
        return "truncated"
    if d[0] >> 4 != 0xA:
        return "not_atls"
    if not d[0] & 0x08:
        return "version"  # version 1
    if max_len is not None and len(d) > max_len:
        return "too_big"
    t = d[0] & 7
    name, fixed, sealed = TABLE[t]
    tag = tag_len if (sealed and tag_len) else 0
    body = d[3:]
    # shortest: the fixed fields, plus one bitmap byte (HS_ACK) or the tag
    if len(body) < fixed + (1 if t == 2 else 0) + tag:
        return "truncated"
    if t == 2 and len(body) > 1 + 32:  # bitmap 1..32 bytes
        return "too_big"
    if t == 6:  # reason, or RESET (4) || 16-byte token (§6)
        want = 17 if body[0] == 4 else 1
        if len(body) != want:
            return "truncated" if len(body) < want else "too_big"
    if t in (4, 5) and tag_len and len(body) > fixed + tag_len:
        return "too_big"
    if t in (0, 1) and len(body) == 2:  # §2: a fragment is never empty
        return "bad_fragment"
    sid = int.from_bytes(d[1:3], "big")
    if t in (0, 1):
        if body[1] == 255:
            return "bad_fragment"
        return (t, sid, body[0], body[1], bytes(body[2:]))
    if t == 2:
        return (t, sid, body[0], None, bytes(body[1:]))
    if t == 6:
        return (t, sid, body[0], None, bytes(body[1:]) if len(body) > 1 else None)
    if t in (3, 7):
        return (t, sid, body[0], 0, bytes(body[1:]))
    seq = int.from_bytes(body[:2], "big")
    if t == 4:
        return (t, sid, seq, int.from_bytes(body[2:8], "big"), bytes(body[8:]))
    return (t, sid, seq, body[2], bytes(body[3:]))


def got(d, tag_len=None, max_len=None):
    try:
        p = wire.decode(d, tag_len, max_len)
    except wire.Drop as e:
        return e.reason
    return tuple(bytes(x) if isinstance(x, memoryview) else x for x in p)


def sample_packets():
    """One well-formed packet of every type (raw bytes, tag 8 where sealed)."""
    r = random.Random(1)
    rb = lambda n: bytes(r.getrandbits(8) for _ in range(n))  # noqa: E731
    return {
        "HS": bytes([0xA8, 0x12, 0x34, 2, 0]) + rb(59),
        "HS_END": bytes([0xA9, 0x12, 0x34, 2, 3]) + rb(23),
        "HS_ACK": bytes([0xAA, 0x12, 0x34, 1, 0xF0]),
        "DATA": bytes([0xAB, 0x12, 0x34, 7]) + rb(20 + 8),
        "ACK": bytes([0xAC, 0x12, 0x34, 0, 1, 0, 8, 0x80, 0, 0, 0]) + rb(8),
        "CLOSE": bytes([0xAD, 0x12, 0x34, 0, 0, 0]) + rb(8),
        "ERROR": bytes([0xAE, 0x12, 0x34, 1]),
        "RESET": bytes([0xAE, 0x12, 0x34, 4]) + rb(16),
        "CDATA": bytes([0xAF, 0x12, 0x34, 7]) + rb(1 + 20 + 8),
    }


def all_rows():
    """(datagram, tag_len, max_len, expected) over the interesting inputs."""
    rows = []
    for b0 in range(256):  # every first byte, with a long enough tail
        d = bytes([b0, 0, 5, 1, 2]) + bytes(range(30))
        for tag in TAGS:
            rows.append((d, tag, None, ref_decode(d, tag)))
    for pkt in sample_packets().values():
        for n in range(len(pkt) + 1):  # truncated at every length
            for tag in TAGS:
                rows.append((pkt[:n], tag, None, ref_decode(pkt[:n], tag)))
        for extra in (1, 40):  # longer than allowed
            d = pkt + bytes(extra)
            for tag in TAGS:
                rows.append((d, tag, None, ref_decode(d, tag)))
        rows.append((pkt, 8, len(pkt) - 1, "too_big"))
        rows.append((pkt, 8, len(pkt), ref_decode(pkt, 8)))
    r = random.Random(7)
    for _ in range(400):  # random packets with a valid marker
        d = bytes([0xA0 | r.randrange(16)]) + bytes(
            r.getrandbits(8) for _ in range(r.randrange(60))
        )
        tag = r.choice(TAGS)
        rows.append((d, tag, None, ref_decode(d, tag)))
    return rows


ROWS = all_rows()


# ---- CPython ------------------------------------------------------------------


def test_s1_constants():
    assert (
        wire.HS,
        wire.HS_END,
        wire.HS_ACK,
        wire.DATA,
        wire.ACK,
        wire.CLOSE,
        wire.ERROR,
    ) == tuple(range(7))
    assert wire.MARKER == 0xA0
    assert wire.MAX_SEQ == 65534 and wire.MAX_COUNTER == 65535
    from atls import protocol

    assert protocol.ERROR_NAMES == {
        1: "unknown_session",
        2: "handshake_failed",
        3: "busy",
        4: "reset",
    }


def test_s1_reference_rows_cpython():
    bad = [(d.hex(), t, m, want, got(d, t, m)) for d, t, m, want in ROWS if got(d, t, m) != want]
    assert not bad, bad[:5]
    assert len(ROWS) > 1500


def test_s1_first_byte_classification():
    for b0 in range(256):
        r = got(bytes([b0, 0, 1, 7]) + bytes(0 if b0 & 7 == 6 else 20))
        if b0 >> 4 != 0xA:
            assert r == "not_atls", hex(b0)
        elif not b0 & 8:
            assert r == "version", hex(b0)  # version 1
        else:
            assert isinstance(r, tuple) and r[0] == b0 & 7 and r[1] == 1


def test_s1_truncation_every_length_every_type():
    for name, pkt in sample_packets().items():
        minimum = {
            "HS": 6,
            "HS_END": 6,
            "HS_ACK": 5,
            "DATA": 12,
            "ACK": 19,
            "CLOSE": 14,
            "ERROR": 4,
            "RESET": 20,
            "CDATA": 12,
        }[name]
        for n in range(len(pkt)):
            r = got(pkt[:n], 8)
            if n < minimum:
                expect = "bad_fragment" if (n == 5 and name in ("HS", "HS_END")) else "truncated"
                assert r == expect, (name, n, r)
            else:
                assert isinstance(r, tuple), (name, n)
        assert isinstance(got(pkt, 8), tuple)


def test_s1_too_big_limits():
    p = sample_packets()
    assert got(p["ERROR"] + b"\x00") == "too_big"
    assert got(p["RESET"] + b"\x00") == "too_big"
    assert got(bytes([0xAA, 0, 1, 0]) + bytes(32)) == (2, 1, 0, None, bytes(32))
    assert got(bytes([0xAA, 0, 1, 0]) + bytes(33)) == "too_big"
    assert got(p["ACK"] + b"\x00", 8) == "too_big"
    assert got(p["ACK"] + b"\x00") != "too_big"  # without a channel: length unknown
    assert got(p["CLOSE"] + b"\x00", 8) == "too_big"
    assert got(p["DATA"] + bytes(100), 8)[0] == wire.DATA  # longer DATA = longer message
    assert got(p["HS"], None, 63) == "too_big"


def test_s2_fragment_rules():
    assert got(bytes([0xA8, 0, 1, 0, 0])) == "bad_fragment"  # empty
    assert got(bytes([0xA9, 0, 1, 0, 255, 1])) == "bad_fragment"  # index 255
    assert got(bytes([0xA9, 0, 1, 0, 254, 1])) == (1, 1, 0, 254, b"\x01")


def test_s1_encoders_roundtrip():
    assert wire.encode_hs(0x1234, 2, 5, b"abc") == bytes.fromhex("a8123402 05") + b"abc"
    assert wire.encode_hs(0x1234, 2, 5, b"abc", last=True)[0] == 0xA9
    assert wire.encode(wire.ERROR, 0xBEEF, b"\x02") == bytes.fromhex("aebeef02")
    for _name, pkt in sample_packets().items():
        t, sid = pkt[0] & 7, int.from_bytes(pkt[1:3], "big")
        assert wire.encode(t, sid, pkt[3:]) == pkt


def test_s3_expand_seq_nearest_to_next():
    # RFC 9000 §A.3 with an 8-bit window: the full seq nearest to `next`
    assert wire.expand_seq(5, 0) == 5
    assert wire.expand_seq(0x01, 0x0FF) == 0x101
    assert wire.expand_seq(0xFF, 0x101) == 0x0FF
    assert wire.expand_seq(0x80, 0x100) == 0x180  # (a tie goes up: reorder is forward)
    assert wire.expand_seq(0x7F, 0x100) == 0x17F
    assert wire.expand_seq(0x90, 0x100) == 0x090
    assert wire.expand_seq(0xFE, wire.MAX_SEQ) == wire.MAX_SEQ
    for nxt in range(0, 65535, 97):  # every seq within +-127 of next comes back
        for s in range(max(0, nxt - 127), min(wire.MAX_SEQ, nxt + 127) + 1, 13):
            assert wire.expand_seq(s & 0xFF, nxt) == s


def test_s2_hs_ack_bitmap_bit_order():
    assert wire.make_bitmap([0], 1) == b"\x80"
    assert wire.make_bitmap([7], 8) == b"\x01"
    assert wire.make_bitmap([8], 9) == b"\x00\x80"
    assert wire.make_bitmap(range(12), 12) == b"\xff\xf0"
    assert wire.make_bitmap([], 255) == bytes(32)
    assert wire.make_bitmap(range(255), 255) == b"\xff" * 31 + b"\xfe"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(TAGS), st.one_of(st.none(), st.integers(0, 90)))
def test_s1_random_bytes_only_drop(data, tag, max_len):
    r = got(data, tag, max_len)
    assert r == ref_decode(data, tag, max_len)
    if isinstance(r, tuple):  # decoding is exact: re-encoding gives the bytes back
        assert wire.encode(data[0] & 7, r[1], data[3:]) == data


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 7), st.integers(0, 0xFFFF), st.binary(min_size=0, max_size=60))
def test_s1_encode_decode_inverse(t, sid, body):
    d = wire.encode(t, sid, body)
    assert got(d, 8) == ref_decode(d, 8)


# ---- MicroPython -------------------------------------------------------------

# `mpyc` (firmware compiled by mpy-cross, as deployed) comes from conftest.py


MPY_ROWS = """
from vecrun import rows, unhex, Tally
from atls import wire
t = Tally()
for i, f in rows():
    d = unhex(f[0])
    tag = None if f[1] == "N" else int(f[1])
    mx = None if f[2] == "N" else int(f[2])
    try:
        p = wire.decode(d, tag, mx)
        parts = []
        for x in p:
            if isinstance(x, memoryview):
                x = bytes(x)
            parts.append((x.hex() or "-") if isinstance(x, bytes) else str(x))
        r = ",".join(parts)
    except wire.Drop as e:
        r = e.reason
    t.check(i, r == f[3], r)
t.report()
"""


def _fmt(want):
    if isinstance(want, str):
        return want
    return ",".join((x.hex() or "-") if isinstance(x, bytes) else str(x) for x in want)


def test_s1_reference_rows_micropython(mpyc):
    rows = [
        (d, "N" if t is None else t, "N" if m is None else m, _fmt(want)) for d, t, m, want in ROWS
    ]
    summary = mpyc.run_rows(MPY_ROWS, rows, heapsize="32K")
    assert summary == {"ok": len(rows), "failed": []}
