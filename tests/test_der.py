"""atls.der: the strict, bounded DER reader (X.690 §8, §10; RFC 5280 §4.1.2.5).

Vectors are hand-made from the rules they cite (X.690 clause beside each);
integers, lengths and times are also checked differentially against
independent encoders (`cryptography`'s DSS-signature DER encoder, calendar).
Every table runs under CPython and under the MicroPython unix port (32K heap,
firmware compiled with mpy-cross as deployed).
"""

import calendar
import os
import random
import subprocess
from pathlib import Path

import pytest
from conftest import TESTS
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from der_eval import der_op
from hypothesis import given, settings
from hypothesis import strategies as st
from mpycross import compiled

from atls import der
from atls.errors import DecodeError

E = "E"
LONG = "04 81 80" + " 00" * 128

# (op, hex input, expected der_op output); "E" = DecodeError.
VECTORS = [
    # X.690 §8.1.3.4 short form, §8.1.3.5 long form, §10.1 minimal DER lengths
    ("tlv", "02 01 05", "2,2,3"),
    ("tlv", "04 00", "4,2,2"),
    ("tlv", LONG, "4,3,131"),
    ("tlv", "04 82 01 00" + " 00" * 256, "4,4,260"),
    ("tlv", "04 81 7f" + " 00" * 127, E),  # long form for a short length
    ("tlv", "04 82 00 80" + " 00" * 128, E),  # leading zero length octet
    ("tlv", "04 80 00 00", E),  # indefinite length (§8.1.3.6) is not DER
    ("tlv", "04 85 00 00 00 00 01 00", E),  # more than 4 length octets
    ("tlv", "04 84 7f ff ff ff 00", E),  # length beyond the buffer
    ("tlv", "04 02 00", E),  # truncated value
    ("tlv", "04 81", E),  # truncated length
    ("tlv", "04", E),
    ("tlv", "", E),
    ("tlv", "1f 81 00 00", E),  # high tag number form (§8.1.2.4) unsupported
    ("tlv", "02 01 05 00", E),  # trailing byte after the value
    # X.690 §8.3: INTEGER, minimal two's complement (§8.3.2)
    ("int", "02 01 00", "0"),
    ("int", "02 01 7f", "127"),
    ("int", "02 02 00 80", "128"),
    ("int", "02 01 80", "-128"),
    ("int", "02 02 ff 7f", "-129"),
    ("int", "02 02 01 00", "256"),
    ("int", "02 00", E),
    ("int", "02 02 00 7f", E),
    ("int", "02 02 ff 80", E),
    ("int", "03 01 00", E),
    ("uint", "02 02 00 ff", "ff"),
    ("uint", "02 01 00", "00"),
    ("uint", "02 01 ff", E),  # negative
    ("uint", "02 02 00 01", E),
    # X.690 §8.19: OBJECT IDENTIFIER; §8.19.5 example {2 999 3} = 88 37 03
    ("oid", "06 03 88 37 03", "883703"),
    ("oid", "06 03 55 1d 13", "551d13"),  # 2.5.29.19 (RFC 5280 §4.2.1.9)
    ("oid", "06 00", E),
    ("oid", "06 02 80 01", E),  # 0x80 padding octet (§8.19.2)
    ("oid", "06 02 2a 81", E),  # last subidentifier not terminated
    ("oid", "06 04 2a 03 80 01", E),
    # X.690 §8.6 / §11.2: BIT STRING, zero padding bits
    ("bits", "03 01 00", "0,3,3"),
    ("bits", "03 02 07 80", "7,3,4"),
    ("bits", "03 02 00 ff", "0,3,4"),
    ("bits", "03 02 07 81", E),
    ("bits", "03 01 01", E),
    ("bits", "03 02 08 00", E),
    ("bits", "03 00", E),
    # X.690 §11.1: BOOLEAN is 00 or FF in DER
    ("bool", "01 01 ff", "1"),
    ("bool", "01 01 00", "0"),
    ("bool", "01 01 01", E),
    ("bool", "01 02 ff ff", E),
    ("bool", "01 00", E),
]


def _t(tag, s):
    b = s.encode()
    return "%02x %02x " % (tag, len(b)) + b.hex()


# RFC 5280 §4.1.2.5: UTCTime (YY >= 50 -> 19YY) and GeneralizedTime, Z only.
def _time_vectors():
    good = [
        ("UTC", "700101000000Z", 0),
        ("UTC", "491231235959Z", calendar.timegm((2049, 12, 31, 23, 59, 59))),
        ("UTC", "500101000000Z", calendar.timegm((1950, 1, 1, 0, 0, 0))),
        ("UTC", "000229120000Z", calendar.timegm((2000, 2, 29, 12, 0, 0))),
        ("UTC", "240229000000Z", calendar.timegm((2024, 2, 29, 0, 0, 0))),
        ("GEN", "20500101000000Z", calendar.timegm((2050, 1, 1, 0, 0, 0))),
        ("GEN", "99991231235959Z", calendar.timegm((9999, 12, 31, 23, 59, 59))),
        ("GEN", "19691231235959Z", -1),
    ]
    bad = [
        "230229000000Z",
        "240230000000Z",
        "241301000000Z",
        "240001000000Z",
        "240100000000Z",
        "240101240000Z",
        "240101006000Z",
        "240101000060Z",
        "2401010000Z",
        "240101000000",
        "240101000000+0100",
        "2401010000 0Z",
        "24010100000aZ",
        "240431000000Z",
    ]
    bad_gen = ["21000229000000Z", "20240101000000.5Z", "2024010100000Z", "20240101000000z"]
    out = []
    for kind, s, secs in good:
        out.append(("time", _t(0x17 if kind == "UTC" else 0x18, s), str(secs)))
    out += [("time", _t(0x17, s), E) for s in bad]
    out += [("time", _t(0x18, s), E) for s in bad_gen]
    out.append(("time", _t(0x18, "240101000000Z"), E))  # UTCTime body, GeneralizedTime tag
    out.append(("time", _t(0x04, "240101000000Z"), E))
    return out


def _random_time_vectors(n, seed=5280):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        secs = rnd.randrange(
            calendar.timegm((1950, 1, 1, 0, 0, 0)), calendar.timegm((9999, 12, 31, 23, 59, 59))
        )
        tm = __import__("time").gmtime(secs)
        if tm.tm_year < 2050 and rnd.random() < 0.7:
            s = "%02d%02d%02d%02d%02d%02dZ" % (tm.tm_year % 100, *tm[1:6])
            out.append(("time", _t(0x17, s), str(secs)))
        else:
            s = "%04d%02d%02d%02d%02d%02dZ" % tm[:6]
            out.append(("time", _t(0x18, s), str(secs)))
    return out


def _int_vectors(n, seed=690):
    """INTEGERs as encoded by `cryptography` (encode_dss_signature emits
    SEQUENCE { INTEGER r, INTEGER s }); we read r back."""
    rnd = random.Random(seed)
    out = []
    for k in [0, 1, 7, 8, 9, 15, 16, 17, 255, 256, 1000, 1016, 1024, 2048, 4096] + [
        rnd.randrange(1, 4100) for _ in range(n)
    ]:
        v = rnd.getrandbits(k) if k else 0
        enc = encode_dss_signature(v, 1)
        body = der.Reader(enc).enter(0x30)
        s0 = body.pos
        body.read_tlv(0x02)
        out.append(("int", enc[s0 : body.pos].hex(), str(v)))
    return out


ALL = (
    [(op, bytes.fromhex(h.replace(" ", "")), want) for op, h, want in VECTORS]
    + [(op, bytes.fromhex(h.replace(" ", "")), want) for op, h, want in _time_vectors()]
    + [(op, bytes.fromhex(h), want) for op, h, want in _random_time_vectors(200)]
    + [(op, bytes.fromhex(h), want) for op, h, want in _int_vectors(60)]
)


@pytest.mark.parametrize("op,data,want", ALL, ids=["%s-%d" % (v[0], i) for i, v in enumerate(ALL)])
def test_x690_vectors_cpython(op, data, want):
    assert der_op(op, data) == want


def test_reader_window_and_enter():
    """X.690 §8.9: a SEQUENCE's value is read through a sub-Reader that must
    be consumed exactly."""
    buf = bytes.fromhex("30 06 02 01 05 04 01 aa ff".replace(" ", ""))
    r = der.Reader(buf, 0, 8)
    s = r.enter(0x30)
    assert r.eof() and not s.eof()
    assert der.read_int(s) == 5
    assert s.peek() == 0x04
    assert s.read_raw(0x04) == (5, 8)
    s.expect_end()
    assert s.peek() is None
    with pytest.raises(DecodeError):
        der.Reader(buf, 0, 8).enter(0x31)  # wrong tag
    with pytest.raises(DecodeError):
        der.Reader(buf, 5, 3)
    with pytest.raises(DecodeError):
        der.Reader(buf, 0, 99)
    sub = der.Reader(buf, 2, 5)  # window ends inside nothing: 02 01 05
    assert der.read_int(sub) == 5
    with pytest.raises(DecodeError):  # the window bounds lengths, not the buffer
        der.Reader(buf, 0, 7).enter(0x30)


def test_days_from_civil_matches_calendar():
    rnd = random.Random(1)
    for _ in range(2000):
        y, m = rnd.randrange(1, 10000), rnd.randrange(1, 13)
        d = rnd.randrange(1, calendar.monthrange(y, m)[1] + 1)
        assert der.days_from_civil(y, m, d) * 86400 == calendar.timegm((y, m, d, 0, 0, 0))


def _enc(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + body


@st.composite
def _trees(draw, depth=0):
    """Random DER trees from an independent encoder: (bytes, TLV count)."""
    if depth < 3 and draw(st.booleans()):
        kids = draw(st.lists(_trees(depth=depth + 1), max_size=4))
        return _enc(
            draw(st.sampled_from([0x30, 0x31, 0xA0, 0xA3])), b"".join(k[0] for k in kids)
        ), 1 + sum(k[1] for k in kids)
    body = draw(st.binary(max_size=300))
    return _enc(draw(st.sampled_from([0x02, 0x04, 0x05, 0x06, 0x16, 0x80])), body), 1


@settings(max_examples=300, deadline=None)
@given(_trees())
def test_walk_counts_tlvs_of_generated_der(tree):
    data, count = tree
    assert der_op("walk", data) == str(count)


@settings(max_examples=1000, deadline=None)
@given(
    st.binary(max_size=64),
    st.sampled_from(["tlv", "int", "uint", "oid", "bits", "bool", "time", "walk"]),
)
def test_random_bytes_only_decode_error(data, op):
    _accepted_only_if_canonical(op, data)  # any exception other than DecodeError fails


@settings(max_examples=300, deadline=None)
@given(_trees(), st.integers(0, 10**6), st.integers(0, 255))
def test_mutated_der_only_decode_error(tree, pos, val):
    data = bytearray(tree[0])
    data[pos % len(data)] = val
    _accepted_only_if_canonical("walk", bytes(data))
    _accepted_only_if_canonical("walk", bytes(data[: pos % len(data)]))


# ---- acceptance property: what is accepted is the one DER encoding --------
# X.690 §10 (DER) leaves one encoding per value, so an input the reader
# accepts must come back byte for byte from the independent encoder _enc:
# a reader that accepts a variant (long-form or padded length, padded
# INTEGER or OID, a BOOLEAN other than 00/FF, non-zero unused bits) fails.


def _minimal_int(v):
    n = (v if v >= 0 else ~v).bit_length() // 8 + 1
    return v.to_bytes(n, "big", signed=True)


def _oid_body(body):
    out, v = b"", 0
    for b in body:  # decode base-128 subidentifiers, re-encode them minimally
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            sub = bytes([v & 0x7F])
            v >>= 7
            while v:
                sub = bytes([0x80 | (v & 0x7F)]) + sub
                v >>= 7
            out += sub
    return out


def _rebuild(r, depth=0):
    out = b""
    while not r.eof():
        tag, s, e = r.read_tlv()
        body = bytes(r.buf[s:e])
        if tag & 0x20 and depth < 16:  # as der_eval.walk descends
            body = _rebuild(der.Reader(r.buf, s, e), depth + 1)
        out += _enc(tag, body)
    return out


def _reencode(op, data, out):
    if op == "walk":
        return _rebuild(der.Reader(data))
    if op == "tlv":
        tag, s, e = (int(x) for x in out.split(","))
        return _enc(tag, data[s:e])
    if op == "int":
        return _enc(0x02, _minimal_int(int(out)))
    if op == "uint":
        m = bytes.fromhex(out)
        return _enc(0x02, (b"\x00" if m[0] & 0x80 else b"") + m)
    if op == "oid":
        return _enc(0x06, _oid_body(bytes.fromhex(out)))
    if op == "bits":
        u, s, e = (int(x) for x in out.split(","))
        last = data[e - 1] & ~((1 << u) - 1) if e > s else 0  # unused bits as zeros
        return _enc(0x03, bytes([u]) + data[s : e - 1] + (bytes([last]) if e > s else b""))
    if op == "bool":
        return _enc(0x01, b"\xff" if out == "1" else b"\x00")
    return data  # "time": the value's text form is checked by the vectors above


def _accepted_only_if_canonical(op, data):
    out = der_op(op, data)
    if out != E:
        assert _reencode(op, data, out) == data, (op, data.hex(), out)
    return out


def _count(data):
    return int(der_op("walk", data))


def _ber_variant(data, target, form):
    """data with the length of its target-th TLV (walk order) written in a
    BER form that DER forbids: "long" (0x81 for a short length), "padded"
    (a leading zero length octet); the enclosing lengths re-encoded."""
    seen = [0]

    def enc(tag, body):
        n = len(body)
        if seen[0] != target:
            return _enc(tag, body)
        b = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        if form == "padded":
            b = b"\x00" + b
        return bytes([tag, 0x80 | len(b)]) + b + body

    def go(r, depth=0):
        out = b""
        while not r.eof():
            tag, s, e = r.read_tlv()
            me = seen[0]
            seen[0] += 1
            body = bytes(r.buf[s:e])
            if tag & 0x20 and depth < 16:
                body = go(der.Reader(r.buf, s, e), depth + 1)
            keep, seen[0] = seen[0], me
            out += enc(tag, body)
            seen[0] = keep
        return out

    return go(der.Reader(data))


def test_every_byte_of_generated_der_mutated_accepts_only_canonical():
    """Byte by byte: every value (0..255) at every offset of DER trees made by
    the independent encoder, and every cut; whatever the reader accepts must
    be the canonical encoding of what it decoded (and the genuine trees are
    accepted, so the property is not vacuous)."""
    rnd = random.Random(690)
    trees = [
        _enc(0x30, _enc(0x02, b"\x00\x80") + _enc(0x04, bytes(130)) + _enc(0x06, b"\x2a\x86\x48")),
        _enc(0x31, _enc(0x01, b"\xff") + _enc(0x03, b"\x04\xf0") + _enc(0x05, b"")),
        _enc(0xA0, _enc(0x30, _enc(0x02, bytes([rnd.randrange(256)]) * 2)) + _enc(0x16, b"ab")),
    ]
    accepted = 0
    for tree in trees:
        assert _accepted_only_if_canonical("walk", tree) != E
        for i in range(len(tree)):
            _accepted_only_if_canonical("walk", tree[:i])
            m = bytearray(tree)
            for v in range(256):
                m[i] = v
                accepted += _accepted_only_if_canonical("walk", bytes(m)) != E
    assert accepted > 0  # mutated contents still parse: the property was exercised
    for tree in trees:  # every length of every TLV in the BER forms DER forbids (§10.1)
        for j in range(_count(tree)):
            for form in ("long", "padded"):
                _accepted_only_if_canonical("walk", _ber_variant(tree, j, form))
    for op, body, tag in [
        ("int", b"\x00\x80", 0x02),
        ("uint", b"\x00\xff", 0x02),
        ("oid", b"\x2a\x86\x48\x01", 0x06),
        ("bits", b"\x04\xf0", 0x03),
        ("bool", b"\xff", 0x01),
    ]:
        genuine = _enc(tag, body)
        assert _accepted_only_if_canonical(op, genuine) != E
        for i in range(len(genuine)):
            m = bytearray(genuine)
            for v in range(256):
                m[i] = v
                _accepted_only_if_canonical(op, bytes(m))


# ---- MicroPython ---------------------------------------------------------


@pytest.fixture(scope="module")
def mpyc(mpy, tmp_path_factory):
    """Firmware compiled by mpy-cross (tests/mpy/mpycross.py), as deployed."""
    out = tmp_path_factory.mktemp("mpyc")
    m = compiled(mpy, out, ["atls/der.py"])
    subprocess.run(
        [
            str(Path(mpy.binary).with_name("mpy-cross")),
            "-o",
            str(out / "der_eval.mpy"),
            str(TESTS / "mpy" / "der_eval.py"),
        ],
        check=True,
    )
    return m


ROW_SCRIPT = """
from vecrun import rows, unhex, Tally
from der_eval import der_op
t = Tally()
for i, f in rows():
    got = der_op(f[0], unhex(f[1]))
    t.check(i, got == f[2], got)
t.report()
"""


def test_x690_vectors_micropython(mpyc):
    summary = mpyc.run_rows(ROW_SCRIPT, ALL, heapsize="32K")
    assert summary == {"ok": len(ALL), "failed": []}


def test_fuzz_micropython_matches_cpython(mpyc):
    """Random and mutated DER: MicroPython gives the same answers as CPython
    and raises nothing but DecodeError."""
    rnd = random.Random(50)
    rows = []
    for i in range(300):
        data = (
            os.urandom(rnd.randrange(0, 40))
            if i % 3 == 0
            else bytes(
                _enc(0x30, _enc(0x02, b"\x01\x02") + _enc(0x04, os.urandom(rnd.randrange(0, 200))))
            )
        )
        if i % 3 == 2:
            m = bytearray(data)
            m[rnd.randrange(len(m))] = rnd.randrange(256)
            data = bytes(m[: rnd.randrange(len(m) + 1)])
        op = rnd.choice(["walk", "tlv", "int", "oid", "bits", "time"])
        rows.append((op, data, der_op(op, data)))
    summary = mpyc.run_rows(ROW_SCRIPT, rows, heapsize="32K")
    assert summary == {"ok": len(rows), "failed": []}


def test_uint_span_takes_max_len_octets_after_the_sign_octet():
    """read_uint_span(max_len=n): n magnitude octets, plus the 0x00 sign
    octet X.690 §8.3.2 requires when the top bit is set, fit; n + 1 do not."""
    r = der.Reader(bytes.fromhex("020300ffff"))
    assert der.read_uint_span(r, 2) == (3, 5)
    with pytest.raises(DecodeError):
        der.read_uint_span(der.Reader(bytes.fromhex("020400ffffff")), 2)
    with pytest.raises(DecodeError):
        der.read_uint_span(der.Reader(bytes.fromhex("0203010203")), 2)
