"""Pairing packets (atls.pairing, docs/PROTOCOL.md §8) and the gateway's
allowlist (host_tools.gateway.pairing_table): unit tests written for `make
mutants` (tests/mutants/), which found these modules covered only by the
multi-process gateway tests.  Packets are built by hand from the §8 layout
here, independently of the codec, and checked both ways."""

import hashlib
import json
import os

import pytest

from atls import pairing
from atls.errors import DecodeError
from host_tools.gateway.config import GatewayError
from host_tools.gateway.pairing_table import PairingTable

NONCE = bytes(range(1, 17))  # Nd / Ng (16)
COMMIT = bytes(range(0x40, 0x50))
PUB = bytes(range(0x60, 0x80))  # an X25519 share (32)
TAG = bytes(range(0xA0, 0xB0))
ADDR = bytes.fromhex("0013a20041b2c3d4")


def request(mode=0, commit=COMMIT, dev=b"dev-1", svc=b"svc", version=2, first=0xB0):
    """§8.1 REQUEST by hand: 0xB0 | 0, version, mode, commit, id_len, id, svc_len, svc."""
    head = bytes((first, version, mode)) + commit
    return head + bytes((len(dev),)) + dev + bytes((len(svc),)) + svc


def response(nonce=NONCE, pub=PUB, addr=ADDR, gid=b"gw-1"):
    """§8.1 RESPONSE by hand: 0xB4, Ng, Pg, addr64, gid_len, gateway id."""
    return b"\xb4" + nonce + pub + addr + bytes((len(gid),)) + gid


# ---- §8.1 packets -------------------------------------------------------------


def test_request_encodes_the_section_8_layout_and_decodes_back():
    want = request()
    assert want.hex() == "b00200" + COMMIT.hex() + "05" + b"dev-1".hex() + "03" + b"svc".hex()
    assert pairing.encode_request(0, COMMIT, "dev-1", "svc") == want
    assert pairing.encode_request(0, COMMIT, b"dev-1", b"svc") == want
    assert pairing.decode(want) == ("request", 0, COMMIT, "dev-1", "svc")
    one = request(mode=1)
    assert pairing.encode_request(1, COMMIT, "dev-1", "svc") == one
    assert pairing.decode(one) == ("request", 1, COMMIT, "dev-1", "svc")


def test_response_and_reveal_encode_the_section_8_layout_and_decode_back():
    want = response()
    assert pairing.encode_response(NONCE, PUB, ADDR, "gw-1") == want
    assert pairing.decode(want) == ("response", NONCE, PUB, ADDR, "gw-1")
    for proof in (b"", TAG):
        rv = b"\xb5" + PUB + NONCE + proof
        assert pairing.encode_reveal(PUB, NONCE, proof) == rv
        assert pairing.decode(rv) == ("reveal", PUB, NONCE, proof)
        assert pairing.encode(pairing.decode(rv)) == rv


def test_replies_encode_the_section_8_layout_and_decode_back():
    assert pairing.encode_reply(pairing.ACCEPT, tag=TAG) == b"\xb1" + TAG
    assert pairing.decode(b"\xb1" + TAG) == ("accept", TAG)
    assert pairing.encode_reply(pairing.NOT_PAIRED, tag=TAG) == b"\xb6" + TAG
    assert pairing.decode(b"\xb6" + TAG) == ("not_paired", TAG)
    for reason in (0, 1, 2, 3, 4, 5, 6, 255):
        assert pairing.encode_reply(pairing.PENDING, reason) == bytes((0xB3, reason))
        assert pairing.decode(bytes((0xB3, reason))) == ("pending", reason)
        for tag in (b"", TAG):
            want = bytes((0xB2, reason)) + tag
            assert pairing.encode_reply(pairing.REJECT, reason, tag) == want
            assert pairing.decode(want) == ("reject", reason, tag)
            assert pairing.encode(pairing.decode(want)) == want
    for kind in (pairing.ACCEPT, pairing.NOT_PAIRED):  # the tag is not optional
        for tag in (b"", TAG[:15], TAG + b"x"):
            with pytest.raises(ValueError):
                pairing.encode_reply(kind, tag=tag)
    with pytest.raises(ValueError):
        pairing.encode_reply(pairing.REQUEST, tag=TAG)
    assert pairing.REASONS[1] == "join window closed" and pairing.REASONS[3] == "table full"


def test_is_pairing_is_the_b0_nibble_with_a_type_below_8():
    assert pairing.is_pairing(b"\xb0")
    assert pairing.is_pairing(b"\xb7\x00")
    for first in (0xB8, 0xBF, 0xA0, 0x30, 0xF0, 0x00, 0xF8, 0x90):
        assert not pairing.is_pairing(bytes((first,)) + bytes(20)), hex(first)
    assert not pairing.is_pairing(b"")


def test_decode_refuses_what_is_not_a_pairing_packet():
    for first in (0xB8, 0xBF, 0xF0, 0xF8, 0xA0, 0x30, 0xF1):
        with pytest.raises(DecodeError):
            pairing.decode(bytes((first,)) + request()[1:])
    with pytest.raises(DecodeError):
        pairing.decode(b"")


def test_request_lengths_exactly():
    ok = request()
    for cut in range(len(ok)):  # every truncation
        with pytest.raises(DecodeError):
            pairing.decode(ok[:cut])
    with pytest.raises(DecodeError):  # one byte more
        pairing.decode(ok + b"x")
    for version in (0, 1, 3):  # §8: version 1 is refused
        with pytest.raises(DecodeError):
            pairing.decode(request(version=version))
    with pytest.raises(DecodeError):
        pairing.decode(request(mode=2))
    # the version and mode bytes are bytes 1 and 2, not part of the commit
    assert pairing.decode(request(commit=b"\x02" * 16))[2] == b"\x02" * 16
    # smallest request: 1-byte names (21 + 1 + 1 bytes)
    assert len(request(dev=b"d", svc=b"s")) == 23
    assert pairing.decode(request(dev=b"d", svc=b"s")) == ("request", 0, COMMIT, "d", "s")
    # 32-byte names are the longest (MAX_NAME)
    d32, s32 = b"d" * 32, b"s" * 32
    assert pairing.decode(request(dev=d32, svc=s32))[3:] == ("d" * 32, "s" * 32)
    for dev, svc in ((b"d" * 33, b"s"), (b"d", b"s" * 33), (b"", b"s"), (b"d", b"")):
        with pytest.raises(DecodeError):
            pairing.decode(request(dev=dev, svc=svc))


def test_request_length_fields_are_checked_against_the_packet():
    ok = bytearray(request(dev=b"abc", svc=b"xyz"))
    assert ok[19] == 3 and ok[23] == 3
    for i, v in ((19, 4), (19, 2), (23, 2), (23, 4)):  # id_len / svc_len one off
        bad = bytearray(ok)
        bad[i] = v
        with pytest.raises(DecodeError):
            pairing.decode(bytes(bad))
    head = bytes((0xB0, 2, 0)) + COMMIT
    with pytest.raises(DecodeError):  # id_len exactly fills the packet: no svc_len
        pairing.decode(head + b"\x02ab")
    with pytest.raises(DecodeError):  # id_len larger than what is left
        pairing.decode(head + b"\x05ab\x01c")
    with pytest.raises(DecodeError):
        pairing.decode(request(dev=b"\xff\xfe", svc=b"s"))  # names are UTF-8
    with pytest.raises(DecodeError):
        pairing.decode(request(dev=b"d", svc=b"\xc3"))


def test_response_lengths_exactly():
    ok = response()
    assert len(response(gid=b"g")) == 59  # 58 + gateway id
    for cut in range(len(ok)):
        with pytest.raises(DecodeError):
            pairing.decode(ok[:cut])
    with pytest.raises(DecodeError):
        pairing.decode(ok + b"x")
    assert pairing.decode(response(gid=b"g" * 8))[4] == "g" * 8
    for gid in (b"", b"g" * 9):  # gateway id 1..8 bytes
        with pytest.raises(DecodeError):
            pairing.decode(response(gid=gid))
    with pytest.raises(DecodeError):
        pairing.decode(response(gid=b"\xff"))


def test_replies_and_reveals_have_exactly_their_lengths():
    sizes = {1: (17,), 2: (2, 18), 3: (2,), 5: (49, 65), 6: (17,)}
    for t, ok in sizes.items():
        for n in range(0, 70):
            pkt = bytes((0xB0 | t,)) + bytes(range(1, n))
            if n in ok:
                assert pairing.decode(pkt)[0] in (
                    "accept",
                    "reject",
                    "pending",
                    "reveal",
                    "not_paired",
                )
            else:
                with pytest.raises(DecodeError):
                    pairing.decode(pkt)
    for n in range(1, 70):  # type 7 is none
        with pytest.raises(DecodeError):
            pairing.decode(b"\xb7" + bytes(n - 1))


def test_encoders_bound_every_field():
    pairing.encode_request(0, COMMIT, "d" * 32, "s" * 32)
    pairing.encode_request(1, COMMIT, "d", "s")
    for mode, commit, d, s in (
        (2, COMMIT, "d", "s"),
        (0, COMMIT[:15], "d", "s"),
        (0, COMMIT + b"x", "d", "s"),
        (0, COMMIT, "", "s"),
        (0, COMMIT, "d" * 33, "s"),
        (0, COMMIT, "d", ""),
        (0, COMMIT, "d", "s" * 33),
    ):
        with pytest.raises(ValueError):
            pairing.encode_request(mode, commit, d, s)
    pairing.encode_response(NONCE, PUB, ADDR, "g" * 8)
    for args in (
        (NONCE[:15], PUB, ADDR, "g"),
        (NONCE, PUB[:31], ADDR, "g"),
        (NONCE, PUB, ADDR[:7], "g"),
        (NONCE, PUB, ADDR, ""),
        (NONCE, PUB, ADDR, "g" * 9),
    ):
        with pytest.raises(ValueError):
            pairing.encode_response(*args)
    for args in ((PUB[:31], NONCE), (PUB, NONCE + b"x"), (PUB, NONCE, TAG[:15])):
        with pytest.raises(ValueError):
            pairing.encode_reveal(*args)


# ---- §8.2 derivations, from the formulas with hashlib/hmac ----------------------


def test_commitment_transcript_and_code_are_the_section_8_2_formulas():
    assert (
        pairing.commitment(PUB, NONCE)
        == hashlib.sha256(b"atls-pair2 commit" + PUB + NONCE).digest()[:16]
    )
    req, resp = request(), response()
    addr_d = bytes.fromhex("0013a20041a7b2c1")
    th = pairing.transcript(addr_d, ADDR, req, resp, PUB, NONCE)
    assert th == hashlib.sha256(b"atls-pair2" + addr_d + ADDR + req + resp + PUB + NONCE).digest()
    h = hashlib.sha256(b"atls-pair2 code" + th).digest()
    want = "%06d" % (int.from_bytes(h[:4], "big") % 1000000)
    assert pairing.confirmation_code(th) == want
    # a code below 100000 keeps its leading zeros
    codes = [pairing.confirmation_code(bytes([i]) * 32) for i in range(200)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert any(c[0] == "0" for c in codes)


def test_pairing_key_and_tags_are_hkdf_and_hmac_of_section_8_2():
    import hmac

    shared, th = bytes(range(32)), bytes(range(100, 132))
    ic = bytes(range(16)) + b"\xaa\xbb"  # install code with its CRC: the CRC is not keyed

    def hkdf(salt, ikm, info):
        prk = hmac.new(salt or bytes(32), ikm, "sha256").digest()
        return hmac.new(prk, info + b"\x01", "sha256").digest()

    assert pairing.pairing_key(shared, th) == hkdf(b"", shared, b"atls-pair2 key" + th)
    k1 = pairing.pairing_key(shared, th, ic)
    assert k1 == hkdf(ic[:16], shared, b"atls-pair2 key" + th)
    assert k1 != pairing.pairing_key(shared, th)
    for label in (b"accept", b"device", b"reject\x02", b"not paired"):
        assert pairing.tag(k1, label) == hmac.new(k1, label, "sha256").digest()[:16]


def test_same_compares_every_byte_and_the_length():
    assert pairing.same(TAG, bytes(TAG))
    assert not pairing.same(TAG, TAG[:15])
    assert not pairing.same(TAG[:15], TAG)
    assert pairing.same(b"", b"")
    for i in range(16):
        other = bytearray(TAG)
        other[i] ^= 0x80
        assert not pairing.same(TAG, bytes(other)), i


# ---- the allowlist ----------------------------------------------------------------


def test_table_add_get_remove_persist(tmp_path):
    path = tmp_path / "sub" / "pairing.json"
    t = PairingTable(path)
    assert len(t) == 0 and not path.exists()
    a1, a2 = bytes.fromhex("0013a20000000001"), bytes.fromhex("0013A200000000AB")
    t.add(a1, "Dev-1", "svc")
    t.add(a2, "dev-2", "svc2")
    assert t.get(a1)["device"] == "Dev-1" and t.get(a1)["service"] == "svc"
    assert abs(t.get(a1)["paired_at"] - __import__("time").time()) < 60
    assert t.get(bytes(8)) is None
    on_disk = json.loads(path.read_text())
    assert on_disk["version"] == 2 and set(on_disk["devices"]) == {a1.hex(), a2.hex()}
    assert not path.with_suffix(".tmp").exists()  # written then renamed
    again = PairingTable(path)
    assert len(again) == 2 and again.get(a2)["device"] == "dev-2"
    # unpair by device id (any case) or by address (any case)
    assert t.remove("DEV-1") == [a1.hex()]
    assert t.get(a1) is None and len(t) == 1
    assert t.remove("0013A200000000AB") == [a2.hex()]
    assert len(t) == 0 and len(PairingTable(path)) == 0
    mtime = os.stat(path).st_mtime_ns
    assert t.remove("nobody") == []
    assert os.stat(path).st_mtime_ns == mtime  # nothing removed: not rewritten


def test_table_remove_takes_every_entry_of_a_device_and_nothing_else(tmp_path):
    t = PairingTable(tmp_path / "p.json")
    a, b, c = (bytes([0, 0, 0, 0, 0, 0, 0, i]) for i in (1, 2, 3))
    t.add(a, "x", "s")
    t.add(b, "x", "s")
    t.add(c, "y", "s")
    assert sorted(t.remove("x")) == sorted([a.hex(), b.hex()])
    assert t.get(c)["device"] == "y" and len(PairingTable(tmp_path / "p.json")) == 1


def test_corrupt_table_is_a_gateway_error(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(GatewayError):
        PairingTable(path)
    path.write_text(json.dumps({"version": 1}))
    assert len(PairingTable(path)) == 0


# ---- the gateway's side of the exchange (Pairer, §8.3) --------------------------------


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_pairer(tmp_path, **cfg):
    import types

    from host_tools.gateway.pairing_table import Pairer

    config = types.SimpleNamespace(
        services={"default": None}, limits={"max_pending_pairings": 4}, auto_confirm=True, **cfg
    )
    sent = []
    clock = Clock()
    pr = Pairer(
        PairingTable(tmp_path / "p.json"),
        config,
        lambda addr, payload: sent.append((addr, bytes(payload))),
        lambda: True,
        {"drops": {}},
        clock=clock,
    )
    return pr, sent, clock


def device_request(seed=1):
    """A device's REQUEST (mode 0) and the REVEAL that opens its commitment."""
    from atls.crypto.x25519 import x25519_base

    priv = bytes([seed]) * 32
    pub, nonce = x25519_base(priv), bytes([seed + 1]) * 16
    req = pairing.encode_request(0, pairing.commitment(pub, nonce), "dev-1", "default")
    return priv, req, pairing.encode_reveal(pub, nonce), pub


def test_pairer_answers_with_its_gateway_id_or_gateway():
    import tempfile
    from pathlib import Path

    for cfg, gid in (
        ({"gateway_id": "gw-7"}, "gw-7"),
        ({}, "gateway"),
        ({"gateway_id": None}, "gateway"),
    ):
        pr, sent, _ = make_pairer(Path(tempfile.mkdtemp()), **cfg)
        pr.on_packet(ADDR, device_request()[1])
        assert pairing.decode(sent[-1][1])[4] == gid, cfg


def test_a_repeated_reveal_is_answered_again_and_a_different_one_is_dropped(tmp_path):
    """§8.3: after the key exists, the same REVEAL again (the answer was lost)
    gets the same ACCEPT; a REVEAL with another share or nonce is dropped."""
    pr, sent, _ = make_pairer(tmp_path)
    priv, req, rv, pub = device_request()
    pr.on_packet(ADDR, req)
    pr.on_packet(ADDR, rv)
    accept = sent[-1][1]
    assert pairing.decode(accept)[0] == "accept"
    pr.on_packet(ADDR, rv)
    assert sent[-1][1] == accept and len(sent) == 3
    pr.on_packet(ADDR, pairing.encode_reveal(pub, bytes(16)))
    assert len(sent) == 3 and pr.counters["drops"]["pair_bad_reveal"] == 1


def test_a_pending_exchange_is_forgotten_after_its_timeout(tmp_path):
    """A device silent for more than PENDING_TIMEOUT_S is forgotten: its
    late REVEAL gets REJECT 5 (start again), one just in time does not."""
    from host_tools.gateway.pairing_table import PENDING_TIMEOUT_S

    for wait, kind in ((PENDING_TIMEOUT_S + 1, ("reject", 5, b"")), (PENDING_TIMEOUT_S, None)):
        pr, sent, clock = make_pairer(tmp_path)
        _, req, rv, _ = device_request()
        pr.on_packet(ADDR, req)
        clock.t += wait
        pr.on_packet(ADDR, rv)
        got = pairing.decode(sent[-1][1])
        if kind:
            assert got == kind and not pr.pending
        else:
            assert got[0] == "accept"


def test_an_accepted_exchange_leaves_the_list_and_an_unrevealed_one_blocks_nothing(tmp_path):
    """`pair` lists only exchanges still waiting for the person; one that was
    accepted (done) no longer shows, and one that has not revealed (no code
    to show) does not make another with the same device id ambiguous."""
    other = bytes.fromhex("0013a20041b2c3ff")
    pr, sent, _ = make_pairer(tmp_path)
    _, req, rv, _ = device_request(1)
    pr.on_packet(other, device_request(5)[1])  # same device id "dev-1", no REVEAL yet
    pr.on_packet(ADDR, req)
    pr.on_packet(ADDR, rv)
    assert pairing.decode(sent[-1][1])[0] == "accept" and sent[-1][0] == ADDR
    assert pr.pending_requests() == []


def test_preauthorisations_survive_a_reload(tmp_path):
    t = PairingTable(tmp_path / "p.json")
    t.preauthorise("dev-9", bytes(range(16)))
    again = PairingTable(tmp_path / "p.json")
    assert again.preauth_for(ADDR, "dev-9")[1] is not None
    t2 = PairingTable(tmp_path / "q.json")
    t2.add(ADDR, "d", "s")
    assert "preauth" not in json.loads((tmp_path / "q.json").read_text())


def test_pairing_again_replaces_the_key(tmp_path):
    pr, sent, _ = make_pairer(tmp_path)
    keys = []
    for seed in (1, 3):
        _, req, rv, _ = device_request(seed)
        pr.on_packet(ADDR, req)
        pr.on_packet(ADDR, rv)
        assert pairing.decode(sent[-1][1])[0] == "accept"
        keys.append(pr.table.get(ADDR)["key"])
    assert keys[0] != keys[1] and pr.counters["paired"] == 2
    assert PairingTable(tmp_path / "p.json").get(ADDR)["key"] == keys[1]
