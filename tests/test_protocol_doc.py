"""docs/PROTOCOL.md §7 worked examples: each `atls-example` block is parsed
and checked both ways against atls.wire / atls.channel (fields -> packet,
packet -> fields), and the sealed ones against an independent AES-CCM from
the `cryptography` package with the key, IV and nonce derived here from the
block's key block (§3).  The same blocks are then checked under MicroPython.
"""

import hashlib
import hmac
import re

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from atls import wire
from atls.channel import Channel

DOC = ROOT / "docs" / "PROTOCOL.md"
TYPES = {"HS": 0, "HS_END": 1, "HS_ACK": 2, "DATA": 3, "ACK": 4, "CLOSE": 5, "ERROR": 6, "CDATA": 7}
HEX_KEYS = {"fragment", "packet", "key_block", "plaintext", "nonce", "aad", "reset_key", "token"}


def parse_examples(text):
    section = text.split("## 7. Worked examples", 1)[1]
    blocks = re.findall(r"```atls-example\n(.*?)```", section, re.S)
    out = []
    for block in blocks:
        fields = {}
        key = None
        for line in block.splitlines():
            if not line.strip():
                continue
            if line[0].isspace():
                fields[key] += " " + line.strip()  # continuation
                continue
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
        ex = {}
        for k, v in fields.items():
            if k == "type" or k == "sender":
                ex[k] = v
            elif k in HEX_KEYS or (k == "bitmap" and fields["type"] == "HS_ACK"):
                ex[k] = bytes.fromhex(v.replace(" ", ""))
            else:
                ex[k] = int(v, 0)
        out.append(ex)
    return out


EXAMPLES = parse_examples(DOC.read_text())


def test_s7_all_packet_types_have_an_example():
    assert sorted({e["type"] for e in EXAMPLES}) == sorted(TYPES)
    assert len(EXAMPLES) == 10


def _fields(ex):
    """The (type, sid, a, b, c) tuple atls.wire.decode should give."""
    t = TYPES[ex["type"]]
    sid = ex["session_id"]
    if t <= 1:
        return (t, sid, ex["flight"], ex["index"], ex["fragment"])
    if t == 2:
        return (t, sid, ex["flight"], None, ex["bitmap"])
    if t == 6:
        return (t, sid, ex["reason"], None, ex.get("token"))
    return None


@pytest.mark.parametrize(
    "ex", [e for e in EXAMPLES if TYPES[e["type"]] in (0, 1, 2, 6)], ids=lambda e: e["type"]
)
def test_s7_unsealed_examples_both_ways(ex):
    t, sid = TYPES[ex["type"]], ex["session_id"]
    if t <= 1:
        enc = wire.encode_hs(sid, ex["flight"], ex["index"], ex["fragment"], t == 1)
    elif t == 2:
        enc = wire.encode(t, sid, bytes([ex["flight"]]) + ex["bitmap"])
    else:
        enc = wire.encode(t, sid, bytes([ex["reason"]]) + ex.get("token", b""))
    assert enc == ex["packet"]
    if "reset_key" in ex:  # §5: token = HMAC-SHA256(reset_key, "atls reset" || sid)[0:16]
        mac = hmac.new(ex["reset_key"], b"atls reset" + sid.to_bytes(2, "big"), hashlib.sha256)
        assert mac.digest()[:16] == ex["token"]
        from host_tools.service.dedupe import PeerTable

        table = PeerTable()
        table.reset_key = ex["reset_key"]
        assert table.token(sid) == ex["token"]
    got = tuple(bytes(x) if isinstance(x, memoryview) else x for x in wire.decode(ex["packet"]))
    assert got == _fields(ex)


def _ref_keys(kb, sender):
    cwk, swk, civ, siv = kb[:16], kb[16:32], kb[32:44], kb[44:56]
    return (cwk, civ) if sender == "client" else (swk, siv)


@pytest.mark.parametrize(
    "ex", [e for e in EXAMPLES if TYPES[e["type"]] in (3, 4, 5, 7)], ids=lambda e: e["type"]
)
def test_s7_sealed_examples_both_ways(ex):
    t, sid, kb, suite = TYPES[ex["type"]], ex["session_id"], ex["key_block"], ex["suite"]
    sender = ex["sender"]
    receiver = "server" if sender == "client" else "client"
    pkt = ex["packet"]
    tx = Channel(kb, suite, sender)
    rx = Channel(kb, suite, receiver)
    if t == 3 or t == 7:  # §3: the seq's low byte on the wire, the full seq in the nonce
        seq, pt, fields = ex["seq"], ex["plaintext"], bytes([ex["seq"] & 0xFF])
        assert tx.seal(t, sid, seq, 0, pt) == pkt
        if t == 7:
            assert pt[0] == ex["channel"]
        assert wire.expand_seq(pkt[3], ex.get("next", seq)) == seq
    elif t == 4:
        seq, pt = ex["ack_seq"], b""
        tx.ack_seq = seq
        assert tx.seal(t, sid, ex["next"], ex["bitmap"]) == pkt
        fields = (
            seq.to_bytes(2, "big") + ex["next"].to_bytes(2, "big") + ex["bitmap"].to_bytes(4, "big")
        )
    else:
        seq, pt = ex["close_seq"], b""
        tx.close_seq = seq
        assert tx.seal(t, sid, ex["reason"]) == pkt
        fields = seq.to_bytes(2, "big") + bytes([ex["reason"]])
    # decode and open
    p = wire.decode(pkt, rx.tag_len)
    if t == 3 or t == 7:
        assert p[:3] == (t, sid, seq & 0xFF)
        p = (t, sid, seq, p[3], p[4])
    else:
        assert p[:3] == (t, sid, seq)
    assert rx.open(p) == pt
    # independent: key and IV sliced here, nonce = iv XOR (space << 56 | seq)
    key, iv = _ref_keys(kb, sender)
    space = 0 if t == 7 else t - 3
    nonce = (int.from_bytes(iv, "big") ^ ((space << 56) | seq)).to_bytes(12, "big")
    assert nonce == ex["nonce"]
    aad = bytes([0xA8 | t, sid >> 8, sid & 0xFF]) + fields  # version 2
    assert aad == pkt[: len(aad)]
    if "aad" in ex:
        assert ex["aad"] == aad
    aead = (
        AESCCM(key, 8) if suite == 0x1305 else AESCCM(key, 16) if suite == 0x1304 else AESGCM(key)
    )
    assert aead.encrypt(nonce, pt, aad) == pkt[len(aad) :]
    if t == 3:
        assert len(pkt) == len(pt) + 12  # §3: 12 bytes of overhead with CCM_8


def test_s7_examples_are_consistent_with_each_other():
    """7.1/7.2 are fragments of one 200-byte flight at MTU 64; 7.3 acks them."""
    by_type = {}
    for e in EXAMPLES:
        by_type.setdefault(e["type"], []).append(e)
    first, last = by_type["HS"][0], by_type["HS_END"][0]
    assert len(first["packet"]) == 64 and len(first["fragment"]) == 59
    assert last["index"] * 59 + len(last["fragment"]) == 200
    assert [a["bitmap"] for a in by_type["HS_ACK"]] == [
        wire.make_bitmap([0, 3], 4),
        wire.make_bitmap(range(4), 4),
    ]


# ---- MicroPython -----------------------------------------------------------------

# `mpyc` (firmware compiled by mpy-cross, as deployed) comes from conftest.py


# row: type sid a b suite sender key_block plaintext packet counter
MPY_DOC = """
from vecrun import rows, unhex, Tally
from atls import wire
from atls.channel import Channel
t = Tally()
for i, f in rows():
    ty, sid, a, b = int(f[0]), int(f[1]), int(f[2]), int(f[3])
    pkt = unhex(f[8])
    if ty <= 1:
        ok = wire.encode_hs(sid, a, b, unhex(f[7]), ty == 1) == pkt
        p = wire.decode(pkt)
        ok = ok and p[2] == a and p[3] == b and bytes(p[4]) == unhex(f[7])
    elif ty == 2 or ty == 6:
        body = bytes([a]) + unhex(f[7])
        ok = wire.encode(ty, sid, body) == pkt and wire.decode(pkt)[2] == a
    else:
        kb, suite, sender = unhex(f[6]), int(f[4]), f[5]
        tx = Channel(kb, suite, sender)
        rx = Channel(kb, suite, "server" if sender == "client" else "client")
        tx.ack_seq = tx.close_seq = int(f[9])
        ok = tx.seal(ty, sid, a, b, unhex(f[7])) == pkt
        p = wire.decode(pkt, rx.tag_len)
        if ty == 3 or ty == 7:
            p = (p[0], p[1], a, p[3], p[4])  # the full seq
        ok = ok and rx.open(p) == unhex(f[7])
    t.check(i, ok, f[0])
t.report()
"""


def test_s7_examples_micropython(mpyc):
    rows = []
    for e in EXAMPLES:
        t = TYPES[e["type"]]
        sid, pkt = e["session_id"], e["packet"]
        if t <= 1:
            rows.append([t, sid, e["flight"], e["index"], 0, "-", b"", e["fragment"], pkt, 0])
        elif t == 2:
            rows.append([t, sid, e["flight"], 0, 0, "-", b"", e["bitmap"], pkt, 0])
        elif t == 6:
            rows.append([t, sid, e["reason"], 0, 0, "-", b"", e.get("token", b""), pkt, 0])
        elif t == 3 or t == 7:
            rows.append(
                [
                    t,
                    sid,
                    e["seq"],
                    0,
                    e["suite"],
                    e["sender"],
                    e["key_block"],
                    e["plaintext"],
                    pkt,
                    0,
                ]
            )
        elif t == 4:
            rows.append(
                [
                    t,
                    sid,
                    e["next"],
                    e["bitmap"],
                    e["suite"],
                    e["sender"],
                    e["key_block"],
                    b"",
                    pkt,
                    e["ack_seq"],
                ]
            )
        else:
            rows.append(
                [
                    t,
                    sid,
                    e["reason"],
                    0,
                    e["suite"],
                    e["sender"],
                    e["key_block"],
                    b"",
                    pkt,
                    e["close_seq"],
                ]
            )
    # 36 KiB: passes from 33 KiB, but not at 34 (heap fragmentation); 31 KiB
    # sufficed before atls.protocol and atls.crypto.aead were loaded by the
    # wire codec and the channel
    assert mpyc.run_rows(MPY_DOC, rows, heapsize="36K") == {"ok": len(rows), "failed": []}
