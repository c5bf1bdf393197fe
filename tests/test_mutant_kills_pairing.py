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

NONCE = bytes(range(1, 9))


def request(nonce=NONCE, dev=b"dev-1", svc=b"svc", version=1, first=0xB0):
    """§8 PAIR_REQUEST by hand: 0xB0 | 0, version, nonce, id_len, id, svc_len, svc."""
    return bytes((first, version)) + nonce + bytes((len(dev),)) + dev + bytes((len(svc),)) + svc


# ---- §8 packets ---------------------------------------------------------------


def test_request_encodes_the_section_8_layout_and_decodes_back():
    want = request()
    assert want.hex() == "b001" + NONCE.hex() + "05" + b"dev-1".hex() + "03" + b"svc".hex()
    assert pairing.encode_request(NONCE, "dev-1", "svc") == want
    assert pairing.encode_request(NONCE, b"dev-1", b"svc") == want
    assert pairing.decode(want) == ("request", NONCE, "dev-1", "svc")


def test_replies_encode_the_section_8_layout_and_decode_back():
    for kind, t in (("accept", 1), ("reject", 2), ("pending", 3)):
        for reason in (0, 1, 2, 3):
            want = bytes((0xB0 | t,)) + NONCE + bytes((reason,))
            code = {"accept": pairing.ACCEPT, "reject": pairing.REJECT, "pending": pairing.PENDING}
            assert pairing.encode_reply(code[kind], NONCE, reason) == want
            assert pairing.decode(want) == (kind, NONCE, reason)
    assert pairing.encode_reply(pairing.ACCEPT, NONCE) == b"\xb1" + NONCE + b"\x00"
    assert pairing.REASONS == {0: "ok", 1: "join window closed", 2: "refused", 3: "table full"}


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
    with pytest.raises(DecodeError):
        pairing.decode(request(version=2))
    with pytest.raises(DecodeError):
        pairing.decode(request(version=0))
    # the version byte is byte 1, not part of the nonce
    assert pairing.decode(request(nonce=b"\x02" * 8))[1] == b"\x02" * 8
    # smallest request: 1-byte names (12 + 1 + 1 bytes)
    assert pairing.decode(request(dev=b"d", svc=b"s")) == ("request", NONCE, "d", "s")
    # 32-byte names are the longest (MAX_NAME)
    d32, s32 = b"d" * 32, b"s" * 32
    assert pairing.decode(request(dev=d32, svc=s32))[2:] == ("d" * 32, "s" * 32)
    for dev, svc in ((b"d" * 33, b"s"), (b"d", b"s" * 33), (b"", b"s"), (b"d", b"")):
        with pytest.raises(DecodeError):
            pairing.decode(request(dev=dev, svc=svc))


def test_request_length_fields_are_checked_against_the_packet():
    ok = bytearray(request(dev=b"abc", svc=b"xyz"))
    bad = bytearray(ok)
    bad[10] = 4  # id_len one too long: svc_len read from the name
    with pytest.raises(DecodeError):
        pairing.decode(bytes(bad))
    bad = bytearray(ok)
    bad[10] = 2
    with pytest.raises(DecodeError):
        pairing.decode(bytes(bad))
    bad = bytearray(ok)
    bad[14] = 2  # svc_len one short
    with pytest.raises(DecodeError):
        pairing.decode(bytes(bad))
    # id_len exactly fills the packet: no room for svc_len
    with pytest.raises(DecodeError):
        pairing.decode(bytes((0xB0, 1)) + NONCE + b"\x02ab")
    # id_len larger than what is left
    with pytest.raises(DecodeError):
        pairing.decode(bytes((0xB0, 1)) + NONCE + b"\x05ab\x01c")
    with pytest.raises(DecodeError):
        pairing.decode(request(dev=b"\xff\xfe", svc=b"s"))  # names are UTF-8
    with pytest.raises(DecodeError):
        pairing.decode(request(dev=b"d", svc=b"\xc3"))


def test_replies_are_exactly_ten_bytes_of_a_known_type():
    for t in (1, 2, 3):
        ok = bytes((0xB0 | t,)) + NONCE + b"\x00"
        for n in (9, 11, 1):
            with pytest.raises(DecodeError):
                pairing.decode((ok + b"\x00")[:n])
    for t in (4, 5, 6, 7):
        with pytest.raises(DecodeError):
            pairing.decode(bytes((0xB0 | t,)) + NONCE + b"\x00")


def test_encode_request_bounds():
    pairing.encode_request(NONCE, "d" * 32, "s" * 32)
    for nonce, d, s in (
        (NONCE[:7], "d", "s"),
        (NONCE + b"x", "d", "s"),
        (NONCE, "", "s"),
        (NONCE, "d" * 33, "s"),
        (NONCE, "d", ""),
        (NONCE, "d", "s" * 33),
    ):
        with pytest.raises(ValueError):
            pairing.encode_request(nonce, d, s)


def test_confirmation_code_is_the_section_8_formula():
    addr = bytes.fromhex("0013a20041b2c3d4")
    h = hashlib.sha256(b"atls-pair" + addr + NONCE + b"dev-1" + b"svc").digest()
    want = "%06d" % (int.from_bytes(h[:4], "big") % 1000000)
    assert pairing.confirmation_code(addr, NONCE, "dev-1", "svc") == want
    assert pairing.confirmation_code(addr, NONCE, b"dev-1", b"svc") == want
    assert len(want) == 6
    # a code below 100000 keeps its leading zeros
    for i in range(200):
        code = pairing.confirmation_code(addr, bytes([i]) * 8, "d", "s")
        assert len(code) == 6 and code.isdigit()


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
    assert on_disk["version"] == 1 and set(on_disk["devices"]) == {a1.hex(), a2.hex()}
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
