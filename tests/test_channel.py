"""docs/PROTOCOL.md §3-§4: the export-key channel (atls.channel).

Every sealed packet is checked against an independent computation in this
file: the key block split by slicing per §3, nonce = iv XOR (space << 56 |
seq), AAD = the header fields, and the `cryptography` package's AESCCM /
AESGCM.  Also: both directions, nonce uniqueness across the three spaces and
both directions, the replay window edges (64 behind, 65 behind, far ahead),
per-message overhead (12 bytes with CCM_8, 20 with CCM/GCM), single flipped
bits anywhere, counter exhaustion.  CPython runs the pure AEADs
(ATLS_PURE_CRYPTO path) and the native facade; MicroPython (mpy-cross
compiled firmware, 32-35 KiB heap) checks the same rows.
"""

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from atls import channel, wire
from atls.crypto import backend
from atls.errors import AuthError, UsageError

SUITES = {0x1301: ("gcm", 16), 0x1304: ("ccm", 16), 0x1305: ("ccm8", 8)}


# ---- independent reference (§3) ----------------------------------------------


def ref_keys(kb, role):
    """(write_key, write_iv, read_key, read_iv) of `role`, sliced per §3."""
    cwk, swk, civ, siv = kb[0:16], kb[16:32], kb[32:44], kb[44:56]
    return (cwk, civ, swk, siv) if role == "client" else (swk, siv, cwk, civ)


def ref_aead(suite, key):
    name, tag = SUITES[suite]
    return AESGCM(key) if name == "gcm" else AESCCM(key, tag)


def ref_nonce(iv, space, seq):
    return (int.from_bytes(iv, "big") ^ ((space << 56) | seq)).to_bytes(12, "big")


def ref_header(t, sid):
    return bytes([0xA8 | t, sid >> 8, sid & 0xFF])  # version 2


def ref_seal(kb, suite, role, t, sid, seq, fields, pt):
    """A packet sealed by `role`: header || fields || AEAD(pt)."""
    key, iv, _, _ = ref_keys(kb, role)
    aad = ref_header(t, sid) + fields
    space = 0 if t == 7 else t - 3  # CDATA: the DATA seq space
    return aad + ref_aead(suite, key).encrypt(ref_nonce(iv, space, seq), pt, aad)


def full(p, seq):
    """A decoded DATA packet with its full seq (the link expands the low byte)."""
    return (p[0], p[1], seq, p[3], p[4])


@pytest.fixture(params=["pure", "native"])
def impl(request, monkeypatch):
    """channel over the pure AEADs, or over the CPython facade (cryptography)."""
    if request.param == "pure":
        monkeypatch.setattr(backend, "FAST", False)
    elif not backend.FAST:
        pytest.skip("no native backend (ATLS_PURE_CRYPTO=1)")
    return request.param


def kb_random(r):
    return bytes(r.getrandbits(8) for _ in range(56))


# ---- CPython --------------------------------------------------------------------


def test_s3_key_block_split():
    kb = bytes(range(56))
    assert channel.split_key_block(kb) == (kb[:16], kb[16:32], kb[32:44], kb[44:])
    assert channel.KEY_BLOCK_LEN == 56 == 2 * (16 + 12)
    assert channel.EXPORTER_LABEL == b"application-layer-tls"
    for bad in (bytes(55), bytes(57)):
        with pytest.raises(UsageError):
            channel.split_key_block(bad)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_s3_seal_matches_reference_both_directions(impl, suite):
    r = random.Random(suite)
    for _trial in range(12):
        kb = kb_random(r)
        sid = r.randrange(1, 65536)
        for role, peer in (("client", "server"), ("server", "client")):
            a = channel.Channel(kb, suite, role)
            b = channel.Channel(kb, suite, peer)
            seq = r.randrange(0, 65535)
            pt = bytes(r.getrandbits(8) for _ in range(r.randrange(0, 60)))
            pkt = a.seal(wire.DATA, sid, seq, 0, pt)
            assert pkt == ref_seal(kb, suite, role, 3, sid, seq, bytes([seq & 0xFF]), pt)
            assert b.open(full(wire.decode(pkt, b.tag_len), seq)) == pt
            assert a.open(full(wire.decode(pkt), seq), own=True) == pt  # unacked(): own
            cd = a.seal(wire.CDATA, sid, seq, 0, b"\x02" + pt)  # channel 2 (§4)
            assert cd == ref_seal(kb, suite, role, 7, sid, seq, bytes([seq & 0xFF]), b"\x02" + pt)
            assert b.open(full(wire.decode(cd, b.tag_len), seq)) == b"\x02" + pt
            # ACK: ack_seq counts ACKs sent; sealed with an empty plaintext (§4)
            for k in range(3):
                nxt, bm = r.randrange(65536), r.getrandbits(32)
                ack = a.seal(wire.ACK, sid, nxt, bm)
                fields = k.to_bytes(2, "big") + nxt.to_bytes(2, "big") + bm.to_bytes(4, "big")
                assert ack == ref_seal(kb, suite, role, 4, sid, k, fields, b"")
                assert b.open(wire.decode(ack, b.tag_len)) == b""
            reason = r.randrange(3)
            close = a.seal(wire.CLOSE, sid, reason)
            assert close == ref_seal(kb, suite, role, 5, sid, 0, bytes([0, 0, reason]), b"")
            assert b.open(wire.decode(close, b.tag_len)) == b""
            # a side cannot open its own direction as if it were the peer's
            with pytest.raises(AuthError):
                a.open(full(wire.decode(pkt, a.tag_len), seq))


@pytest.mark.parametrize("suite,overhead", [(0x1305, 12), (0x1304, 20), (0x1301, 20)])
def test_s3_per_message_overhead(impl, suite, overhead):
    ch = channel.Channel(bytes(56), suite, "client")
    assert ch.overhead == overhead
    for n in (0, 1, 16, 51):
        assert len(ch.seal(wire.DATA, 1, n, 0, bytes(n))) == n + overhead
    tag = SUITES[suite][1]
    assert len(ch.seal(wire.ACK, 1, 0, 0)) == 11 + tag
    assert len(ch.seal(wire.CLOSE, 1, 0)) == 6 + tag


def test_s3_nonce_uniqueness_across_spaces_and_directions():
    """Every (direction, space, seq) maps to a distinct nonce; the channel
    really uses them (checked by decrypting with the reference nonce)."""
    r = random.Random(5)
    kb = kb_random(r)
    nonces = set()
    for role in ("client", "server"):
        _, iv, _, _ = ref_keys(kb, role)
        for space in range(3):
            for seq in list(range(300)) + [65534, 65535]:
                nonces.add(ref_nonce(iv, space, seq))
    assert len(nonces) == 2 * 3 * 302
    a = channel.Channel(kb, 0x1305, "client")
    key, iv, _, _ = ref_keys(kb, "client")
    ref = AESCCM(key, 8)
    # DATA seq 5, ACK #5 and CLOSE #5 use three different nonces
    for _ in range(5):
        a.seal(wire.ACK, 9, 0, 0)
    ack5 = a.seal(wire.ACK, 9, 0, 0)
    data5 = a.seal(wire.DATA, 9, 5, 0, b"")
    assert ack5[3:5] == b"\x00\x05"
    assert ref.decrypt(ref_nonce(iv, 1, 5), ack5[11:], ack5[:11]) == b""
    assert ref.decrypt(ref_nonce(iv, 0, 5), data5[4:], data5[:4]) == b""
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):
        ref.decrypt(ref_nonce(iv, 0, 5), ack5[11:], ack5[:11])


def test_s3_replay_window_edges():
    ch = channel.Channel(bytes(56), 0x1305, "server")
    assert ch.fresh(0) and ch.fresh(65534)
    ch.accept(100)
    assert not ch.fresh(100)
    assert ch.fresh(100 - 64)  # exactly 64 behind: inside the window, unseen
    assert not ch.fresh(100 - 65)  # 65 behind: too old, a replay
    assert ch.fresh(101) and ch.fresh(60000)  # ahead, even far ahead
    ch.accept(36)
    assert not ch.fresh(36)
    ch.accept(99)
    assert not ch.fresh(99) and ch.fresh(98)
    ch.accept(164)  # slide by 64: 100 is now exactly 64 behind and remembered
    assert not ch.fresh(100) and ch.fresh(101) and not ch.fresh(99)  # 99: 65 behind
    ch.accept(60000)  # far ahead: everything before falls out of the window
    assert not ch.fresh(164) and not ch.fresh(59935) and ch.fresh(59936) and ch.fresh(59999)
    wide = channel.Channel(bytes(56), 0x1305, "server", window=128)
    wide.accept(200)
    assert wide.fresh(72) and not wide.fresh(71)
    with pytest.raises(UsageError):
        channel.Channel(bytes(56), 0x1305, "server", window=63)


def test_s3_replay_checked_before_crypto_and_not_marked_by_open():
    kb = bytes(range(56))
    a = channel.Channel(kb, 0x1305, "client")
    b = channel.Channel(kb, 0x1305, "server")
    pkt = wire.decode(a.seal(wire.DATA, 7, 3, 0, b"hi"), 8)
    assert b.open(pkt) == b"hi"
    assert b.open(pkt) == b"hi"  # open() does not mark: the link accepts
    b.accept(3)
    with pytest.raises(wire.Drop) as e:
        b.open(pkt)
    assert e.value.reason == "replay"
    # a replayed packet whose tag is broken is still just a replay
    raw = bytearray(a.seal(wire.DATA, 7, 3, 0, b"hi"))
    raw[-1] ^= 1
    with pytest.raises(wire.Drop):
        b.open(wire.decode(bytes(raw), 8))


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_s3_single_bit_flips_never_open(impl, suite):
    """A flipped bit anywhere: wire.Drop (header) or AuthError, never plaintext."""
    kb = bytes(range(100, 156))
    a = channel.Channel(kb, suite, "client")
    b = channel.Channel(kb, suite, "server")
    pkts = [
        a.seal(wire.DATA, 0x0102, 0, 0, b"sixteen byte msg"),
        a.seal(wire.ACK, 0x0102, 1, 0),
        a.seal(wire.CLOSE, 0x0102, 0),
    ]
    outcomes = {}
    for pkt in pkts:
        for bit in range(8 * len(pkt)):
            bad = bytearray(pkt)
            bad[bit >> 3] ^= 0x80 >> (bit & 7)
            try:
                p = wire.decode(bytes(bad), b.tag_len)
                if p[0] not in (wire.DATA, wire.ACK, wire.CLOSE):
                    raise wire.Drop("retyped")  # the link dispatches it elsewhere
                b.open(p)
                raise AssertionError("opened a tampered packet")
            except wire.Drop as e:
                key = e.reason
                assert bit < 24, bit  # only header bits are rejected without crypto
            except AuthError:
                key = "auth"
            outcomes[key] = outcomes.get(key, 0) + 1
    # header: 4 marker bits + version + 3 type bits + 16 sid bits per packet
    assert outcomes["not_atls"] == 3 * 4 and outcomes["version"] == 3
    total = sum(8 * len(p) for p in pkts)
    assert outcomes["auth"] >= total - 3 * 24
    for pkt in pkts:  # and the originals still open
        assert b.open(wire.decode(pkt, b.tag_len)) in (b"sixteen byte msg", b"")


def test_s3_counters_never_wrap_and_seq_bounds():
    ch = channel.Channel(bytes(56), 0x1305, "client")
    ch.ack_seq = 65535
    ch.seal(wire.ACK, 1, 0, 0)  # the last ACK nonce
    with pytest.raises(UsageError):
        ch.seal(wire.ACK, 1, 0, 0)
    ch.close_seq = 65536
    with pytest.raises(UsageError):
        ch.seal(wire.CLOSE, 1, 0)
    ch.seal(wire.DATA, 1, wire.MAX_SEQ, 0, b"")
    with pytest.raises(UsageError):
        ch.seal(wire.DATA, 1, wire.MAX_SEQ + 1, 0, b"")
    with pytest.raises(UsageError):
        ch.seal(wire.HS, 1, 0, 0, b"")
    with pytest.raises(UsageError):
        channel.Channel(bytes(56), 0x1303, "client")  # ChaCha20: not an ATLS-MCU suite
    with pytest.raises(UsageError):
        channel.Channel(bytes(56), 0x1305, "gateway")


def test_s3_channel_aead_is_aead_new_of_the_suite(impl):
    """The channel seals with atls.crypto.aead.new(suite, key): the pure
    class of the suite (ccm.CCM with its tag length, gcm.GCM) or, with the
    native backend, the same bytes (reference: `cryptography`)."""
    from atls.crypto import aead, ccm, gcm
    from atls.protocol import suite_tag_len

    for suite, (name, tag) in SUITES.items():
        assert channel.suite_tag_len(suite) == suite_tag_len(suite) == tag
        n, key, pt = bytes(12), bytes(range(16)), b"abc"
        a = aead.new(suite, key)
        pure = gcm.GCM(key) if name == "gcm" else ccm.CCM(key, tag)
        if impl == "pure":
            assert type(a) is type(pure)
        assert (
            a.seal(n, b"x", pt)
            == pure.seal(n, b"x", pt)
            == ref_aead(suite, key).encrypt(n, pt, b"x")
        )
        assert a.open(n, b"x", pure.seal(n, b"x", pt)) == pt
    with pytest.raises(ValueError):
        aead.new(0x1303, bytes(16))  # ChaCha20-Poly1305: not a device suite


# ---- MicroPython -----------------------------------------------------------------

# `mpyc` (firmware compiled by mpy-cross, as deployed) comes from conftest.py


# row: suite role type sid a b pt kb expected-packet
MPY_SEAL = """
from vecrun import rows, unhex, Tally
from atls import wire
from atls.channel import Channel
from atls.errors import AuthError
import gc
t = Tally()
for i, f in rows():
    me = peer = None
    gc.collect()
    suite, t_, sid, a, b = int(f[1]), int(f[3]), int(f[4]), int(f[5]), int(f[6])
    kb, pt, want = unhex(f[8]), unhex(f[7]), unhex(f[9])
    me = Channel(kb, suite, f[2])
    peer = Channel(kb, suite, "server" if f[2] == "client" else "client")
    me.ack_seq = me.close_seq = int(f[10])
    pkt = me.seal(t_, sid, a, b, pt)
    p = wire.decode(pkt, peer.tag_len)
    if t_ == 3:
        p = (p[0], p[1], a, p[3], p[4])  # the full seq (the link expands it)
    ok = pkt == want and peer.open(p) == pt
    # every single-bit flip: a Drop or AuthError, never plaintext
    flips = 0
    bad = bytearray(pkt)
    for bit in range(8 * len(pkt)):
        bad[bit >> 3] ^= 0x80 >> (bit & 7)
        try:
            p = wire.decode(bad, peer.tag_len)
            if 3 <= p[0] <= 5:
                peer.open(p)
            else:
                flips += 1  # retyped by a header bit: the link dispatches it elsewhere
        except (wire.Drop, AuthError):
            flips += 1
        bad[bit >> 3] ^= 0x80 >> (bit & 7)
        gc.collect()  # each CCM MAC allocates a 320-byte cryptolib object
    t.check(i, ok and flips == 8 * len(pkt), "row %d" % i)
t.report()
"""


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_s3_seal_open_flip_rows_micropython(mpyc, suite):
    """One suite per run.  CCM suites in 35 KiB (measured minimum 34 KiB;
    32 before the channel imported atls.protocol and atls.crypto.aead);
    AES-GCM needs 64 KiB: one pure GCM object (atls.crypto.gcm, with its GHASH
    tables) takes ~6 KiB on the 64-bit unix port and a channel holds two
    (write and read key)."""
    r = random.Random(suite)
    rows = []
    for n in range(12):
        role = ("client", "server")[n % 2]
        kb = kb_random(r)
        sid = r.randrange(1, 65536)
        counter = r.randrange(65536)
        t = 3 + n % 3
        if t == 3:
            a, b = r.randrange(65535), 0
            pt = bytes(r.getrandbits(8) for _ in range(r.randrange(52)))
            want = ref_seal(kb, suite, role, 3, sid, a, bytes([a & 0xFF]), pt)
        elif t == 4:
            a, b, pt = r.randrange(65536), r.getrandbits(32), b""
            fields = counter.to_bytes(2, "big") + a.to_bytes(2, "big") + b.to_bytes(4, "big")
            want = ref_seal(kb, suite, role, 4, sid, counter, fields, b"")
        else:
            a, b, pt = r.randrange(3), 0, b""
            want = ref_seal(
                kb, suite, role, 5, sid, counter, counter.to_bytes(2, "big") + bytes([a]), b""
            )
        rows.append(["x", suite, role, t, sid, a, b, pt, kb, want, counter])
    summary = mpyc.run_rows(MPY_SEAL, rows, heapsize="64K" if suite == 0x1301 else "35K")
    assert summary == {"ok": len(rows), "failed": []}


MPY_WINDOW = """
from atls.channel import Channel
ch = Channel(bytes(56), 0x1305, "server")
out = [ch.fresh(0)]
ch.accept(100)
out += [ch.fresh(100), ch.fresh(36), ch.fresh(35), ch.fresh(60000)]
ch.accept(164)
out += [ch.fresh(100), ch.fresh(101), ch.fresh(99)]
ch.accept(60000)
out += [ch.fresh(59935), ch.fresh(59936)]
print(out)
"""


def test_s3_replay_window_edges_micropython(mpyc):
    res = mpyc.check(MPY_WINDOW, heapsize="32K")
    assert res.stdout.strip() == str(
        [True, False, True, False, True, False, True, False, False, True]
    )
