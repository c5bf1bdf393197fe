"""Ed25519 verify (atls.crypto.ed25519) and its SHA-512 (atls.crypto.sha512),
under CPython (pure and native facade) and the MicroPython unix port.

Sources: RFC 8032 §7.1 (TEST 1, 2, 3, 1024, SHA(abc), parsed from
tests/vectors/rfc8032.txt); Wycheproof ed25519_test.json (151 tests, no
"acceptable"); FIPS 180-2 Appendix C.1/C.2 SHA-512 examples (the same "abc"
digest is RFC 8032 TEST SHA(abc)'s message); differential tests against
`cryptography` and hashlib.

MicroPython runs use mpy-cross-compiled firmware (see tests/mpy/mpycross.py).
SHA-512 runs in a 32 KiB heap.  Ed25519 verify does not fit 32 KiB on the
unix port, which loads .mpy bytecode and constants into the heap (ed25519
~8 KiB with its 8-point base table, sha512 ~4.4 KiB, errors+backend ~4.6 KiB;
frozen firmware keeps those in flash); measured minimum heaps: Wycheproof
34K, RFC 8032 + differential 35K (long messages via a side file), so they
run at HEAP = 40K.  Compiling ed25519.py from source needs 40K; checked once
at 64K.
"""

import hashlib
import os
import random
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atls.crypto import ed25519
from atls.crypto.sha512 import SHA512, sha512
from atls.errors import AuthError, InvalidPointError

sys.path.insert(0, str(Path(__file__).resolve().parent / "mpy"))
from mpycross import compiled, side_files  # noqa: E402

# RFC 8032 §5.1 parameters, written out here so the tests do not read the
# module's own copies.
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
NEUTRAL = (1).to_bytes(32, "little")  # the encoding of (0, 1)
HEAP = "40K"  # Ed25519 verify runs; see the module docstring

# FIPS 180-2 Appendix C.1 and C.2: SHA-512("abc") and the 896-bit message.
SHA512_ABC = (
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
)
MSG_896 = (
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
    b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
)
SHA512_896 = (
    "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
    "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
)


def rfc8032_7_1(text):
    """RFC 8032 §7.1 Ed25519 test blocks -> {name: {"pub", "msg", "sig"}}."""
    start = text.index("7.1.  Test Vectors for Ed25519\n")
    sec = text[start : text.index("7.2.  Test Vectors for Ed25519ctx\n")]
    out = {}
    for block in sec.split("-----TEST ")[1:]:
        name = block.split("\n", 1)[0].strip()
        fields, cur, mlen = {}, None, None
        for line in block.replace("\f", "\n").split("\n")[1:]:
            s = line.strip()
            if s.endswith(":"):
                cur = {"SECRET KEY:": "sk", "PUBLIC KEY:": "pub", "SIGNATURE:": "sig"}.get(s)
                if s.startswith("MESSAGE (length "):
                    cur, mlen = "msg", int(s.split()[2])
                fields.setdefault(cur, "")
            elif cur and s and len(s) % 2 == 0 and all(c in "0123456789abcdef" for c in s):
                fields[cur] += s
        v = {k: bytes.fromhex(fields[k]) for k in ("pub", "msg", "sig")}
        assert len(v["msg"]) == mlen and len(v["pub"]) == 32 and len(v["sig"]) == 64, name
        out[name] = v
    return out


@pytest.fixture(scope="module")
def rfc_tests(vectors):
    t = rfc8032_7_1(vectors("rfc8032.txt"))
    assert sorted(t) == ["1", "1024", "2", "3", "SHA(abc)"]
    return t


@pytest.fixture(scope="module")
def mpyc(mpy, tmp_path_factory):
    return compiled(
        mpy, tmp_path_factory.mktemp("mpyc"), ["atls/crypto/sha512.py", "atls/crypto/ed25519.py"]
    )


@pytest.fixture(params=["pure", "native"])
def impl(request, monkeypatch):
    if request.param == "pure":
        monkeypatch.setattr(ed25519, "native", None)
    elif ed25519.native is None:
        pytest.skip("no native backend (ATLS_PURE_CRYPTO=1)")
    return ed25519


@pytest.fixture
def pure(monkeypatch):
    monkeypatch.setattr(ed25519, "native", None)
    return ed25519


def _raw_pub(sk):
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _wycheproof(vectors):
    rows = []
    for g in vectors("ed25519_test.json")["testGroups"]:
        pub = bytes.fromhex(g["publicKey"]["pk"])
        for t in g["tests"]:
            assert t["result"] in ("valid", "invalid")
            rows.append(
                (
                    t["tcId"],
                    pub,
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    int(t["result"] == "valid"),
                )
            )
    return rows


# --- SHA-512 (FIPS 180-4) ---------------------------------------------------------


def test_sha512_fips180_examples():
    assert sha512(b"abc").hex() == SHA512_ABC
    assert sha512(MSG_896).hex() == SHA512_896
    assert sha512(b"").hex() == hashlib.sha512(b"").hexdigest()


def test_sha512_matches_rfc8032_test_sha_abc_message(rfc_tests):
    assert rfc_tests["SHA(abc)"]["msg"] == sha512(b"abc")


def test_sha512_vs_hashlib_random_lengths_and_splits():
    rnd = random.Random(5)
    for n in list(range(0, 300)) + [1000, 4096, 10007]:
        m = rnd.randbytes(n)
        assert sha512(m) == hashlib.sha512(m).digest(), n
        h = SHA512()
        i = 0
        while i < n:  # incremental, random chunk sizes
            j = i + rnd.randrange(0, 200)
            h.update(m[i:j])
            i = j
        assert h.digest() == hashlib.sha512(m).digest()
        assert h.digest() == hashlib.sha512(m).digest()  # digest() does not finalise
    h = SHA512(b"ab")
    h.update(bytearray(b"c"))
    assert h.digest().hex() == SHA512_ABC


# --- Ed25519 ----------------------------------------------------------------------


def _ref_add(p1, p2):
    """RFC 8032 §5.1.4 addition in affine coordinates (a slow reference)."""
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P,
    )


def _ref_mul(k, pt=(BX, BY)):
    q = (0, 1)
    while k:
        if k & 1:
            q = _ref_add(q, pt)
        pt = _ref_add(pt, pt)
        k >>= 1
    return q


def _ref_enc(pt):
    """RFC 8032 §5.1.2 encoding."""
    return (pt[1] | (pt[0] & 1) << 255).to_bytes(32, "little")


def _o_key_sig(s):
    """A signature (R, S) that verifies under the neutral element as public
    key A, for any message: [S]B - [k]A = [S]B, so R = enc([S]B)."""
    return _ref_enc(_ref_mul(s)) + s.to_bytes(32, "little")


def test_constants_rfc8032_5_1(pure):
    assert D * 121666 % P == (-121665) % P
    assert BY * 5 % P == 4 and BX % 2 == 0
    assert (-BX * BX + BY * BY - 1 - D * BX * BX * BY * BY) % P == 0
    assert pow(2, (P - 1) // 4, P) ** 2 % P == P - 1  # sqrt(-1) exists (p = 5 mod 8)
    assert _ref_mul(L) == (0, 1)  # B has order L
    # [L - 1]B = -B and [L - 2]B = -2B through the verify multiplier
    assert _ref_enc(_ref_mul(L - 1)) == _ref_enc((P - BX, BY))
    for s in (L - 1, L - 2):
        pure.verify(NEUTRAL, b"m", _o_key_sig(s))


def test_fixed_base_table_is_odd_multiples_of_b(pure):
    """The fixed-base table holds B, 3B, .., 15B: [S]B for those S (one
    table entry each) and for random S (every entry) verify; a wrong R does not."""
    rnd = random.Random(5)
    for s in list(range(1, 16, 2)) + [rnd.randrange(1, L) for _ in range(8)]:
        pure.verify(NEUTRAL, b"table", _o_key_sig(s))
        with pytest.raises(AuthError):
            pure.verify(NEUTRAL, b"table", _o_key_sig(s)[:32] + (s + 1).to_bytes(32, "little"))


def test_decode_rfc8032_5_1_3(pure):
    pure.verify(NEUTRAL, b"m", _o_key_sig(1))  # (0, 1): x = 0 with sign 0 decodes
    bad = [
        (P + 1).to_bytes(32, "little"),  # y >= p
        (1 | 1 << 255).to_bytes(32, "little"),  # x = 0 with sign 1
        (2).to_bytes(32, "little"),  # y = 2: x^2 is not a square
    ]
    for pub in bad:
        with pytest.raises(InvalidPointError):
            pure.verify(pub, b"m", _o_key_sig(1))


def test_rfc8032_7_1_vectors(impl, rfc_tests):
    for _name, v in rfc_tests.items():
        impl.verify(v["pub"], v["msg"], v["sig"])
        with pytest.raises(AuthError):
            impl.verify(v["pub"], v["msg"] + b"\x00", v["sig"])
        bad = bytearray(v["sig"])
        bad[0] ^= 1
        with pytest.raises(AuthError):
            impl.verify(v["pub"], v["msg"], bytes(bad))


def test_wycheproof_ed25519_all_151(impl, vectors):
    rows = _wycheproof(vectors)
    assert len(rows) == 151
    wrong = []
    for tc, pub, msg, sig, valid in rows:
        try:
            impl.verify(pub, msg, sig)
            ok = 1
        except (AuthError, InvalidPointError):
            ok = 0
        if ok != valid:
            wrong.append(tc)
    assert wrong == []


def test_differential_vs_cryptography(impl):
    rnd = random.Random(7)
    for _i in range(200):
        sk = Ed25519PrivateKey.generate()
        pub = _raw_pub(sk)
        msg = os.urandom(rnd.randrange(0, 300))
        sig = sk.sign(msg)
        impl.verify(pub, msg, sig)
        bad = bytearray(sig)
        bad[rnd.randrange(64)] ^= 1 << rnd.randrange(8)
        with pytest.raises(AuthError):
            impl.verify(pub, msg, bytes(bad))
        if msg:
            m2 = bytearray(msg)
            m2[rnd.randrange(len(m2))] ^= 1 << rnd.randrange(8)
            with pytest.raises(AuthError):
                impl.verify(pub, bytes(m2), sig)
        other = _raw_pub(Ed25519PrivateKey.generate())
        with pytest.raises(AuthError):
            impl.verify(other, msg, sig)


def test_malleability_and_encodings_rfc8032_8_4(impl):
    sk = Ed25519PrivateKey.generate()
    pub = _raw_pub(sk)
    sig = sk.sign(b"m")
    S = int.from_bytes(sig[32:], "little")
    for s2 in (S + L, L, 2**256 - 1):  # S >= L is rejected (§5.1.7, §8.4)
        if s2 < 2**256:
            with pytest.raises(AuthError):
                impl.verify(pub, b"m", sig[:32] + s2.to_bytes(32, "little"))
    for bad_sig in (sig[:63], sig + b"\x00", b"", None):
        with pytest.raises(AuthError):
            impl.verify(pub, b"m", bad_sig)
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    sign = pub[31] >> 7
    bad_keys = [
        pub[:31],
        pub + b"\x00",
        b"",
        (P | sign << 255).to_bytes(32, "little"),  # y = p, non-canonical
        ((2**255 - 1) | sign << 255).to_bytes(32, "little"),  # y >= p
        (2).to_bytes(32, "little"),
    ]  # not on the curve
    if y + P < 2**255:
        bad_keys.append((y + P | sign << 255).to_bytes(32, "little"))
    for k in bad_keys:
        with pytest.raises(InvalidPointError):
            impl.verify(k, b"m", sig)


# --- MicroPython (unix port), precompiled firmware, 32 KiB heap -------------------

_MPY_ROWS = """
from pkrows import field, reserve
reserve(1024)  # the longest message (RFC 8032 TEST 1024, Wycheproof)
from vecrun import rows, unhex, Tally
from atls.crypto import ed25519
from atls.errors import AuthError, InvalidPointError
t = Tally()
for i, f in rows():
    try:
        ed25519.verify(unhex(f[1]), field(f[2]), unhex(f[3]))
        ok = 1
    except (AuthError, InvalidPointError):
        ok = 0
    t.check(int(f[0]), ok == int(f[4]))
t.report()
"""


def test_mpy_wycheproof_ed25519_all_151(mpyc, vectors, tmp_path):
    rows = side_files(_wycheproof(vectors), tmp_path, 256)
    assert mpyc.run_rows(_MPY_ROWS, rows, heapsize=HEAP) == {"ok": 151, "failed": []}


def rfc_and_differential_rows(rfc_tests, tmp_path):
    """RFC 8032 §7.1 vectors and 60 `cryptography` signatures, each also
    with a changed message or one flipped bit: (rows, count)."""
    rows, n = [], 0
    for _name, v in rfc_tests.items():
        rows.append((n, v["pub"], v["msg"], v["sig"], 1))
        rows.append((n + 1, v["pub"], v["msg"] + b"x", v["sig"], 0))
        n += 2
    rnd = random.Random(11)
    for _i in range(60):
        sk = Ed25519PrivateKey.generate()
        msg = os.urandom(rnd.randrange(0, 200))
        sig = sk.sign(msg)
        bad = bytearray(sig)
        bad[rnd.randrange(64)] ^= 1 << rnd.randrange(8)
        rows.append((n, _raw_pub(sk), msg, sig, 1))
        rows.append((n + 1, _raw_pub(sk), msg, bytes(bad), 0))
        n += 2
    return side_files(rows, tmp_path, 256), n  # TEST 1024's message


def test_mpy_rfc8032_7_1_and_differential(mpyc, rfc_tests, tmp_path):
    rows, n = rfc_and_differential_rows(rfc_tests, tmp_path)
    assert mpyc.run_rows(_MPY_ROWS, rows, heapsize=HEAP) == {"ok": n, "failed": []}


_MPY_SHA512 = """
from vecrun import rows, unhex, Tally
from atls.crypto.sha512 import SHA512, sha512
t = Tally()
for i, f in rows():
    m = unhex(f[0])
    t.check(i, sha512(m) == unhex(f[1]), "one-shot")
    h = SHA512(m[:7])
    h.update(m[7:])
    t.check(i, h.digest() == unhex(f[1]), "split")
t.report()
"""


def test_mpy_sha512_vs_hashlib(mpyc):
    rnd = random.Random(3)
    lengths = list(range(0, 140, 3)) + [255, 256, 257, 300]
    msgs = [b"abc", MSG_896] + [rnd.randbytes(n) for n in lengths]
    rows = [(m, hashlib.sha512(m).digest()) for m in msgs]
    assert rows[0][1].hex() == SHA512_ABC
    res = mpyc.run_rows(_MPY_SHA512, rows, heapsize="32K")
    assert res == {"ok": 2 * len(rows), "failed": []}


def test_mpy_from_source_rfc8032_test_1(mpy, rfc_tests):
    """The .py sources on MicroPython (compiling needs more than 32K)."""
    v = rfc_tests["1"]
    src = (
        "from binascii import unhexlify as u\nfrom atls.crypto import ed25519\n"
        "from atls.errors import AuthError\n"
        "ed25519.verify(u('%s'), b'', u('%s'))\n"
        % (v["pub"].hex(), v["sig"].hex())
        + "try:\n    ed25519.verify(u('%s'), b'x', u('%s'))\n    print('accepted')\n"
        "except AuthError:\n    print('ok')\n" % (v["pub"].hex(), v["sig"].hex())
    )
    assert mpy.check(src, heapsize="64K").stdout.strip() == "ok"
