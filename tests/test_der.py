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
    der_op(op, data)  # returns a string; any exception other than DecodeError fails


@settings(max_examples=300, deadline=None)
@given(_trees(), st.integers(0, 10**6), st.integers(0, 255))
def test_mutated_der_only_decode_error(tree, pos, val):
    data = bytearray(tree[0])
    data[pos % len(data)] = val
    der_op("walk", bytes(data))
    der_op("walk", bytes(data[: pos % len(data)]))


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
