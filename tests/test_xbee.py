"""XBee 3 Zigbee API frame codec (atls.xbee), under CPython and MicroPython.

Reference: Digi's own Python library (digi-xbee, `digi.xbee.packets.common`):
for random field values of every frame type we build, in API mode 1 and 2
(AP=2 escaping), our bytes must equal `packet.output(escaped)`, our decoder
and parser must recover the fields from Digi's bytes, and Digi's
`build_frame` must accept ours (after Digi's own `unescape_data`).
Plus the published Transmit Request example (shared/vectors/README.md note D,
XBee 3 802.15.4 user guide): 7E 00 16 10 01 00 13 A2 00 40 0A 01 27 FF FE 00 00
"TxData0A" 13, and its AP=2 form.

Decoder robustness: garbage between frames, bad checksum, bad escape,
truncated frame, oversized and empty length, unknown frame type, payloads
holding 0x7E in AP=1, frames at max_len; each case also fed byte by byte and
cut at every byte boundary (same frames, same counters).  Hypothesis: parse
raises only DecodeError, feed never raises, output and counters do not depend
on chunking, good frames survive random garbage.  The MicroPython run streams
the same cases and Digi-built frames through atls.xbee (.mpy) in a 32 KiB heap.
"""

import random

import pytest
from digi.xbee.models.address import XBee16BitAddress, XBee64BitAddress
from digi.xbee.models.mode import OperatingMode
from digi.xbee.models.status import DiscoveryStatus, ModemStatus, TransmitStatus
from digi.xbee.packets.base import XBeePacket
from digi.xbee.packets.common import (
    ATCommPacket,
    ATCommResponsePacket,
    ModemStatusPacket,
    ReceivePacket,
    TransmitPacket,
    TransmitStatusPacket,
)
from digi.xbee.packets.factory import build_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atls import xbee as X
from atls.errors import DecodeError, UsageError

# shared/vectors/README.md note D (XBee 3 802.15.4 user guide, Transmit Request example)
NOTE_D = bytes.fromhex(
    "7E 00 16 10 01 00 13 A2 00 40 0A 01 27 FF FE 00 0054 78 44 61 74 61 30 41 13"
)
NOTE_D_AP2 = bytes.fromhex(
    "7E 00 16 10 01 00 7D 33 A2 00 40 0A 01 27 FF FE 00 0054 78 44 61 74 61 30 41 7D 33"
)
MODES = {False: OperatingMode.API_MODE, True: OperatingMode.ESCAPED_API_MODE}
COUNTER_KEYS = (
    "garbage_bytes",
    "bad_checksum",
    "bad_escape",
    "oversized",
    "empty",
    "truncated",
    "frames",
)


# ---- note D ----------------------------------------------------------------------------------
def test_note_d_transmit_request_ap1():
    fd = X.tx_request(1, bytes.fromhex("0013A200400A0127"), b"TxData0A")
    assert X.encode_frame(fd) == NOTE_D
    assert X.checksum(fd) == 0x13
    assert X.FrameDecoder().feed(NOTE_D) == [fd]
    assert X.parse(fd) == (
        "tx_request",
        1,
        bytes.fromhex("0013A200400A0127"),
        0xFFFE,
        0,
        0,
        b"TxData0A",
    )


def test_note_d_transmit_request_ap2_escapes_0x13():
    fd = X.tx_request(1, bytes.fromhex("0013A200400A0127"), b"TxData0A")
    assert X.encode_frame(fd, escaped=True) == NOTE_D_AP2
    assert X.FrameDecoder(escaped=True).feed(NOTE_D_AP2) == [fd]
    # Digi agrees on both forms
    pkt = build_frame(bytearray(NOTE_D), OperatingMode.API_MODE)
    assert bytes(pkt.output(True)) == NOTE_D_AP2
    assert bytes(pkt.rf_data) == b"TxData0A"


# ---- Digi differential -----------------------------------------------------------------------
def _a64(b):
    return XBee64BitAddress(bytearray(b))


def _a16(v):
    return XBee16BitAddress(bytearray(v.to_bytes(2, "big")))


def _cmd(rng):
    return bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(2))


def _pick(enum, rng):
    return rng.choice(list(enum))


def random_case(kind, rng, max_payload=255):
    """(our frame data, the Digi packet, the expected parse tuple) for random fields."""

    def rb(n):
        return bytes(rng.randrange(256) for _ in range(n))

    def payload():
        n = rng.choice((0, 1, 8, 60, 66, 84, rng.randrange(max_payload + 1)))
        # bias towards the bytes AP=2 escapes
        return bytes(rng.choice((0x7E, 0x7D, 0x11, 0x13, rng.randrange(256))) for _ in range(n))

    fid = rng.randrange(256)
    if kind == "at_command":
        cmd, par = _cmd(rng), payload()[:20]
        return (
            X.at_command(fid, cmd, par),
            ATCommPacket(fid, cmd.decode(), bytearray(par) or None),
            ("at_command", fid, cmd, par),
        )
    if kind == "at_response":
        cmd, status, val = _cmd(rng), rng.randrange(5), payload()[:20]
        return (
            X.at_response(fid, cmd, status, val),
            ATCommResponsePacket(fid, cmd.decode(), status, bytearray(val) or None),
            ("at_response", fid, cmd, status, val),
        )
    if kind == "tx_request":
        d64, d16, radius, opts, p = (
            rb(8),
            rng.randrange(65536),
            rng.randrange(256),
            rng.randrange(256),
            payload(),
        )
        return (
            X.tx_request(fid, d64, p, d16, radius, opts),
            TransmitPacket(fid, _a64(d64), _a16(d16), radius, opts, bytearray(p) or None),
            ("tx_request", fid, d64, d16, radius, opts, p),
        )
    if kind == "tx_status":
        d16, retries = rng.randrange(65536), rng.randrange(256)
        ts, ds = _pick(TransmitStatus, rng), _pick(DiscoveryStatus, rng)
        return (
            X.tx_status(fid, d16, retries, ts.code, ds.code),
            TransmitStatusPacket(fid, _a16(d16), retries, ts, ds),
            ("tx_status", fid, d16, retries, ts.code, ds.code),
        )
    if kind == "rx":
        s64, s16, opts, p = rb(8), rng.randrange(65536), rng.randrange(256), payload()
        return (
            X.rx_packet(s64, s16, p, opts),
            ReceivePacket(_a64(s64), _a16(s16), opts, bytearray(p) or None),
            ("rx", s64, s16, opts, p),
        )
    ms = _pick(ModemStatus, rng)
    return X.modem_status(ms.code), ModemStatusPacket(ms), ("modem_status", ms.code)


KINDS = ("at_command", "at_response", "tx_request", "tx_status", "rx", "modem_status")
N_RANDOM = 150


def digi_cases(seed=20240):
    rng = random.Random(seed)
    return [
        (kind, esc) + random_case(kind, rng)
        for kind in KINDS
        for esc in (False, True)
        for _ in range(N_RANDOM)
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("escaped", [False, True], ids=["AP1", "AP2"])
def test_encode_equals_digi_output(kind, escaped):
    rng = random.Random(hash((kind, escaped)) & 0xFFFF)
    for _ in range(N_RANDOM):
        fd, pkt, _ = random_case(kind, rng)
        assert X.encode_frame(fd, escaped) == bytes(pkt.output(escaped))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("escaped", [False, True], ids=["AP1", "AP2"])
def test_decode_and_parse_digi_frames(kind, escaped):
    rng = random.Random(1000 + (hash((kind, escaped)) & 0xFFFF))
    stream, expected = b"", []
    for _ in range(N_RANDOM):
        fd, pkt, fields = random_case(kind, rng)
        stream += bytes(pkt.output(escaped))
        expected.append(fields)
    got = [X.parse(f) for f in X.FrameDecoder(escaped).feed(stream)]
    assert got == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("escaped", [False, True], ids=["AP1", "AP2"])
def test_digi_parses_our_frames(kind, escaped):
    rng = random.Random(2000 + (hash((kind, escaped)) & 0xFFFF))
    for _ in range(N_RANDOM):
        fd, pkt, _ = random_case(kind, rng)
        raw = X.encode_frame(fd, escaped)
        if escaped:
            raw = bytes(XBeePacket.unescape_data(bytearray(raw)))
        theirs = build_frame(bytearray(raw), MODES[escaped])
        assert type(theirs) is type(pkt)
        assert bytes(theirs.output(escaped)) == bytes(pkt.output(escaped))


# ---- builders and parse ----------------------------------------------------------------------
def test_parse_unknown_type_and_short_frames():
    assert X.parse(b"\x95\x01\x02") == ("unknown", 0x95, b"\x95\x01\x02")
    minimum = {
        X.RX_PACKET: 12,
        X.TX_STATUS: 7,
        X.AT_RESPONSE: 5,
        X.MODEM_STATUS: 2,
        X.TX_REQUEST: 14,
        X.AT_COMMAND: 4,
    }
    for t, n in minimum.items():
        assert X.parse(bytes((t,)) + bytes(n - 1))[0] != "unknown"
        for k in range(n - 1):  # every shorter length
            with pytest.raises(DecodeError):
                X.parse(bytes((t,)) + bytes(k))
    for t in (X.TX_STATUS, X.MODEM_STATUS):  # fixed size: trailing bytes are malformed
        with pytest.raises(DecodeError):
            X.parse(bytes((t,)) + bytes(minimum[t]))
    with pytest.raises(DecodeError):
        X.parse(b"")


def test_builder_usage_errors():
    with pytest.raises(UsageError):
        X.tx_request(256, X.COORDINATOR64, b"")
    with pytest.raises(UsageError):
        X.tx_request(1, b"\x00" * 7, b"")
    with pytest.raises(UsageError):
        X.at_command(1, b"NPX")
    with pytest.raises(UsageError):
        X.encode_frame(b"")
    with pytest.raises(UsageError):
        X.FrameDecoder(max_len=0)
    assert X.at_command(1, "NP") == X.at_command(1, b"NP") == b"\x08\x01NP"


def test_constants_match_digi():
    assert X.PAYLOAD_TOO_LARGE == TransmitStatus.PAYLOAD_TOO_LARGE.code == 0x74
    assert X.NETWORK_ACK_FAILURE == TransmitStatus.NETWORK_ACK_FAILURE.code == 0x21
    assert X.MAC_ACK_FAILURE == TransmitStatus.NO_ACK.code == 0x01
    assert X.CCA_FAILURE == TransmitStatus.CCA_FAILURE.code
    assert X.INDIRECT_PURGED == TransmitStatus.PURGED.code
    assert X.INVALID_ENDPOINT == TransmitStatus.INVALID_DESTINATION.code
    assert X.SELF_ADDRESSED == TransmitStatus.SELF_ADDRESSED.code
    assert X.ROUTE_NOT_FOUND == TransmitStatus.ROUTE_NOT_FOUND.code
    assert X.BROADCAST_RELAY_FAILURE == TransmitStatus.BROADCAST_FAILED.code
    assert X.RESOURCE_ERROR == TransmitStatus.RESOURCE_ERROR.code
    assert X.WATCHDOG_RESET == ModemStatus.WATCHDOG_TIMER_RESET.code
    assert X.SECURITY_KEY_UPDATED == ModemStatus.NETWORK_SECURITY_KEY_UPDATED.code
    assert X.ADDRESS_NOT_FOUND == TransmitStatus.ADDRESS_NOT_FOUND.code
    assert X.NOT_JOINED == TransmitStatus.NOT_JOINED_NETWORK.code
    assert X.DELIVERY_SUCCESS == TransmitStatus.SUCCESS.code
    assert X.JOINED == ModemStatus.JOINED_NETWORK.code == 0x02
    assert X.DISASSOCIATED == ModemStatus.DISASSOCIATED.code == 0x03
    assert X.COORDINATOR_STARTED == ModemStatus.COORDINATOR_STARTED.code == 0x06
    assert X.HARDWARE_RESET == ModemStatus.HARDWARE_RESET.code


# ---- decoder robustness ----------------------------------------------------------------------
G1 = X.tx_request(1, bytes.fromhex("0013A200400A0127"), b"TxData0A")
G2 = X.rx_packet(bytes.fromhex("0013A20041000001"), 0x7D11, b"\x7e\x7d\x11\x13 specials", 0x01)
G3 = X.at_response(0x7E, b"NP", 0, b"\x00\x54")


def frame(fd, esc):
    return X.encode_frame(fd, esc)


def bad_checksum_frame(fd, esc):
    n = len(fd)
    body = bytes((n >> 8, n & 0xFF)) + fd + bytes((X.checksum(fd) ^ 0x55,))
    return b"\x7e" + (X.escape(body) if esc else body)


def counters(**kw):
    return tuple(kw.get(k, 0) for k in COUNTER_KEYS)


def corrupt_cases(max_len=X.MAX_FRAME):
    """(name, escaped, stream, expected frames, expected counters, max_len) —
    expected values follow from how each stream was built."""
    out = []
    for esc in (False, True):
        f1, f2, f3 = frame(G1, esc), frame(G2, esc), frame(G3, esc)
        out.append(("clean", esc, f1 + f2 + f3, [G1, G2, G3], counters(frames=3)))
        out.append(
            (
                "garbage_between",
                esc,
                b"\x00\x01garbage" + f1 + b"xyz" + f2 + b"\xff",
                [G1, G2],
                counters(garbage_bytes=13, frames=2),
            )
        )
        bad = bad_checksum_frame(G1, esc)
        # AP=1 rescans the dropped frame from its 2nd byte (no 0x7E in G1's bytes)
        out.append(
            (
                "bad_checksum",
                esc,
                bad + f2,
                [G2],
                counters(bad_checksum=1, garbage_bytes=len(bad) - 1, frames=1),
            )
        )
        cut = f1[:10]
        out.append(
            (
                "truncated",
                esc,
                cut + f2 + f3,
                [G2, G3],
                counters(truncated=1, garbage_bytes=9, frames=2),
            )
        )
        big = b"\x7e\x0f\xffabc"
        out.append(
            ("oversized", esc, big + f2, [G2], counters(oversized=1, garbage_bytes=5, frames=1))
        )
        out.append(
            (
                "empty",
                esc,
                b"\x7e\x00\x00\xff" + f3,
                [G3],
                counters(empty=1, garbage_bytes=3, frames=1),
            )
        )
        unk = X.encode_frame(b"\x99\x01\x02", esc)
        out.append(("unknown_type", esc, unk + f1, [b"\x99\x01\x02", G1], counters(frames=2)))
        top = X.rx_packet(b"\x01" * 8, 1, b"\x7e" * (max_len - 12))
        over = X.rx_packet(b"\x01" * 8, 1, b"\x7d" * (max_len - 11))
        ovf = frame(over, esc)
        out.append(
            (
                "max_len",
                esc,
                frame(top, esc) + ovf + f3,
                [top, G3],
                counters(frames=2, oversized=1, garbage_bytes=len(ovf) - 1),
            )
        )
        out.append(("garbage_only", esc, b"\x00" * 40, [], counters(garbage_bytes=40)))
    # AP=2 only: 0x7D before a byte that is not an escaped special
    f1e, f2e = frame(G1, True), frame(G2, True)
    badesc = f1e[:8] + b"\x7d\x41" + f1e[8:]
    out.append(
        (
            "bad_escape",
            True,
            badesc + f2e,
            [G2],
            counters(bad_escape=1, garbage_bytes=len(badesc) - 1, frames=1),
        )
    )
    out.append(
        (
            "escape_before_start",
            True,
            f1e[:8] + b"\x7d" + f2e,
            [G2],
            counters(truncated=1, garbage_bytes=8, frames=1),
        )
    )
    # AP=1 only: raw 0x7E and 0x7D inside a frame are data
    raw7e = X.rx_packet(b"\x7e" * 8, 0x7E7E, b"~~}}")
    out.append(
        (
            "ap1_7e_in_data",
            False,
            frame(raw7e, False) + frame(G1, False),
            [raw7e, G1],
            counters(frames=2),
        )
    )
    return [c + (max_len,) for c in out]


CASES = corrupt_cases()


def run_decoder(stream, esc, cuts, max_len=X.MAX_FRAME):
    d = X.FrameDecoder(esc, max_len)
    got, prev = [], 0
    for c in list(cuts) + [len(stream)]:
        got += d.feed(stream[prev:c])
        prev = c
    return got, tuple(d.counters[k] for k in COUNTER_KEYS)


@pytest.mark.parametrize(
    "name,esc,stream,frames,expect,max_len",
    CASES,
    ids=["%s-AP%d" % (c[0], 2 if c[1] else 1) for c in CASES],
)
def test_corrupt_input_dropped_counted_next_frame_kept(name, esc, stream, frames, expect, max_len):
    assert run_decoder(stream, esc, [], max_len) == (frames, expect)
    assert run_decoder(stream, esc, range(1, len(stream)), max_len) == (frames, expect)
    for k in range(1, len(stream)):  # one cut at every byte boundary
        assert run_decoder(stream, esc, [k], max_len) == (frames, expect), k


# ---- hypothesis ------------------------------------------------------------------------------
special = st.sampled_from([0x7E, 0x7D, 0x11, 0x13, 0x00, 0x01, 0xFF, 0x5E, 0x5D, 0x33])
noisy = st.lists(st.one_of(special, st.integers(0, 255)), max_size=400).map(bytes)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_parse_raises_only_decode_error(data):
    try:
        r = X.parse(data)
    except DecodeError:
        return
    assert isinstance(r, tuple) and r[0] in (
        "rx",
        "tx_status",
        "at_response",
        "modem_status",
        "tx_request",
        "at_command",
        "unknown",
    )


def _frames_stream(draw_frames, esc):
    return b"".join(frame(f, esc) for f in draw_frames)


fields = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noisy, st.booleans(), st.lists(st.integers(0, 400), max_size=8), fields, st.integers(1, 3))
def test_feed_never_raises_and_ignores_chunking(noise, esc, cuts, picks, where):
    frames = [random_case(k, random.Random(s), 90)[0] for k, s in picks]
    good = _frames_stream(frames, esc)
    stream = {1: noise + good, 2: good + noise, 3: noise[:50] + good + noise[50:]}[where]
    cuts = sorted(c for c in set(cuts) if 0 < c < len(stream))
    whole = run_decoder(stream, esc, [])
    assert run_decoder(stream, esc, cuts) == whole
    d = X.FrameDecoder(esc)
    for c in cuts:
        d.feed(stream[:c])
        assert d.pending() <= 2 * X.MAX_FRAME + 8
    for f in whole[0]:
        try:
            X.parse(f)
        except DecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\x7e", b"")), min_size=2, max_size=6),
    st.booleans(),
    fields,
    st.lists(st.integers(0, 600), max_size=6),
)
def test_good_frames_survive_garbage_without_start_bytes(garbage, esc, picks, cuts):
    frames = [random_case(k, random.Random(s), 90)[0] for k, s in picks]
    stream = b""
    for i, f in enumerate(frames):
        stream += garbage[i % len(garbage)] + frame(f, esc)
    stream += garbage[-1]
    cuts = sorted(c for c in set(cuts) if 0 < c < len(stream))
    got, cnt = run_decoder(stream, esc, cuts)
    assert got == frames
    assert cnt[COUNTER_KEYS.index("frames")] == len(frames)


# ---- MicroPython (32 KiB heap, firmware as .mpy) ---------------------------------------------
MPY_ROWS = r"""
import gc
from vecrun import rows, unhex, Tally
from atls import xbee as X
from atls.errors import DecodeError

KEYS = ("garbage_bytes", "bad_checksum", "bad_escape", "oversized", "empty", "truncated", "frames")

def run(stream, esc, step=0, cut=0):
    # whole (step 0, cut 0), in chunks of `step` bytes, or cut once at `cut`
    d = X.FrameDecoder(esc, MAX_LEN)
    mv = memoryview(stream)
    got = []
    if cut:
        got += d.feed(mv[:cut])
        got += d.feed(mv[cut:])
    elif step:
        for k in range(0, len(stream), step):
            got += d.feed(mv[k:k + step])
    else:
        got += d.feed(stream)
    return b":".join([bytes(f) for f in got]), ",".join([str(d.counters[k]) for k in KEYS])

def canon(t):
    out = []
    for x in t:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, int):
            out.append("%d" % x)
        else:
            out.append(bytes(x).hex() or "-")
    return "|".join(out)

t = Tally()
MAX_LEN = 300
for i, f in rows():
    gc.collect()
    if f[0] == "D":
        MAX_LEN = int(f[5])
        esc = f[1] == "1"
        stream = unhex(f[2])
        want = b":".join([unhex(x) for x in f[3].split(":")]) if f[3] != "-" else b""
        ok = run(stream, esc) == (want, f[4])
        ok = ok and run(stream, esc, 1) == (want, f[4])  # byte by byte
        for k in range(1, len(stream)):  # one cut at every byte boundary
            ok = ok and run(stream, esc, 0, k) == (want, f[4])
        t.check(i, ok, f[0])
    elif f[0] == "P":
        fr = X.FrameDecoder(f[1] == "1").feed(unhex(f[2]))
        t.check(i, len(fr) == 1 and canon(X.parse(fr[0])) == f[3], "parse")
        t.check(i, X.encode_frame(fr[0], f[1] == "1") == unhex(f[2]), "encode")
    else:
        try:
            X.parse(unhex(f[1]))
            t.check(i, False, "no error")
        except DecodeError:
            t.check(i, True)
t.report()
"""


def _canon(t):
    return "|".join(
        x if isinstance(x, str) else ("%d" % x if isinstance(x, int) else bytes(x).hex() or "-")
        for x in t
    )


def mpy_rows():
    rows = []
    # max_len 64 keeps the longest row small enough for the 32 KiB heap
    for _name, esc, stream, frames, expect, max_len in corrupt_cases(64):
        # ":" joins frames (each written as hex); counters as a comma list
        rows.append(
            [
                "D",
                int(esc),
                stream,
                ":".join(f.hex() for f in frames) or "-",
                ",".join(str(v) for v in expect),
                max_len,
            ]
        )
    for _kind, esc, _fd, pkt, fields in digi_cases()[::3]:
        rows.append(["P", int(esc), bytes(pkt.output(esc)), _canon(fields)])
    for t in (X.RX_PACKET, X.TX_STATUS, X.AT_RESPONSE, X.MODEM_STATUS, X.TX_REQUEST, X.AT_COMMAND):
        rows.append(["E", bytes((t,))])  # too short for its type
    rows.append(["E", bytes((X.TX_STATUS,)) + bytes(7)])  # fixed size + a trailing byte
    rows.append(["E", bytes((X.MODEM_STATUS,)) + bytes(2)])
    return rows


def test_decoder_and_parse_under_micropython(mpyc):
    rows = mpy_rows()
    summary = mpyc.run_rows(MPY_ROWS, rows, heapsize="32K")
    n_parse = sum(1 for r in rows if r[0] == "P")
    assert summary == {"ok": len(rows) + n_parse, "failed": []}
