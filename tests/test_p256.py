"""P-256 ECDH / ECDSA (atls.crypto.p256) under CPython (pure and native
facade) and under the MicroPython unix port.

Sources: RFC 6979 §A.2.5 (deterministic ECDSA, P-256 with SHA-256);
Wycheproof ecdsa_secp256r1_sha256_test.json (DER, 484 tests) and
ecdsa_secp256r1_sha256_p1363_test.json (r||s, 262 tests), neither has
"acceptable" cases; differential tests against the `cryptography` package.

MicroPython runs use firmware precompiled by mpy-cross (as shipped to a
device).  They do not fit a 32 KiB heap on the unix port, which loads .mpy
bytecode and constants into the heap (p256 ~10.5 KiB, hkdf ~5 KiB, errors
~3 KiB; frozen firmware keeps those in flash).  Measured minimum heaps:
P1363 34K and differential ECDH/sign/verify 38K, run at HEAP = 40K;
Wycheproof DER 39K, run at 48K, because its three 4 KiB signatures (tcId
47/106/148, read from side files) need a 4 KiB buffer reserved up front.
Compiling p256.py from source needs 72K; one test checks the source at 80K.
"""

import hashlib
import os
import random
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from atls.crypto import p256
from atls.errors import AuthError, InvalidPointError, KeyLengthError, UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent / "mpy"))
from mpycross import compiled, side_files  # noqa: E402

# SEC 2 v2 §2.4.2 (= FIPS 186-4 §D.1.2.3) domain parameters, written out here
# so the tests do not read the module's own copies.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
HEAP = "40K"  # see the module docstring for the measured minimum per test
_X962 = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

# RFC 6979 §A.2.5 "ECDSA, 256 Bits (Prime Field)": key pair and the two
# SHA-256 signatures (messages "sample" and "test").
RFC6979_X = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721"
RFC6979_UX = "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
RFC6979_UY = "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
RFC6979_SIGS = [  # (message, k, r, s), "With SHA-256, message = ..."
    (
        b"sample",
        "A6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60",
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    ),
    (
        b"test",
        "D16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0",
        "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
        "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
    ),
]


@pytest.fixture(scope="module")
def mpyc(mpy, tmp_path_factory):
    """MicroPython with p256 (and hkdf for RFC 6979) precompiled by mpy-cross."""
    return compiled(
        mpy,
        tmp_path_factory.mktemp("mpyc"),
        ["atls/crypto/hkdf.py", "atls/crypto/p256.py", "atls/crypto/p256_sign.py"],
    )


@pytest.fixture(params=["pure", "native"])
def impl(request, monkeypatch):
    """p256 with the pure arithmetic, or the CPython facade over `cryptography`."""
    if request.param == "pure":
        monkeypatch.setattr(p256, "native", None)
    elif p256.native is None:
        pytest.skip("no native backend (ATLS_PURE_CRYPTO=1)")
    return p256


@pytest.fixture
def pure(monkeypatch):
    monkeypatch.setattr(p256, "native", None)
    return p256


def _pub(key):
    return key.public_key().public_bytes(*_X962)


def _priv(key):
    return key.private_numbers().private_value.to_bytes(32, "big")


def _wycheproof(vectors, name):
    out = []
    for g in vectors(name)["testGroups"]:
        pub = bytes.fromhex(g["publicKey"]["uncompressed"])
        for t in g["tests"]:
            assert t["result"] in ("valid", "invalid")  # no "acceptable" in these files
            out.append(
                (
                    t["tcId"],
                    pub,
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    int(t["result"] == "valid"),
                )
            )
    return out


# --- curve constants and group law ------------------------------------------------


def _enc(x, y):
    """SEC 1 §2.3.3 uncompressed point (no validation: tests build bad ones too)."""
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def test_domain_parameters_sec2_2_4_2(pure):
    assert (GY * GY - GX**3 + 3 * GX - B) % P == 0
    assert pure.public_key((1).to_bytes(32, "big")) == _enc(GX, GY)
    # (n - 1) * G == -G (the regular window over the fixed-base table)
    assert pure.public_key((N - 1).to_bytes(32, "big")) == _enc(GX, P - GY)


def test_fixed_base_table_is_odd_multiples_of_g(pure):
    """The fixed-base table holds G, 3G, .., 15G: k * G for those k (one
    table entry each) and for random k (every entry) match `cryptography`."""
    rnd = random.Random(6)
    for k in list(range(1, 16, 2)) + [rnd.randrange(1, N) for _ in range(20)]:
        want = _pub(ec.derive_private_key(k, ec.SECP256R1()))
        assert pure.public_key(k.to_bytes(32, "big")) == want, k


def _signature_with_s(d, k, s):
    """(digest, r) so that (r, s) is the valid signature of the key d with
    nonce k over that digest: e = s*k - r*d mod n (SEC 1 §4.1.3 step 6)."""
    x = int.from_bytes(_pub(ec.derive_private_key(k, ec.SECP256R1()))[1:33], "big")
    r = x % N
    return ((s * k - r * d) % N).to_bytes(32, "big"), r


def test_verify_at_the_edges_of_s_and_r_sec1_4_1_4(pure):
    """w = s^-1 mod n for s = 1, 2, n-1, n-2 (the inversion's edge values)
    and random s; then u1*G + u2*Q at infinity: R = O is rejected (step 5)."""
    rnd = random.Random(7)
    key = ec.generate_private_key(ec.SECP256R1())
    d, pub = key.private_numbers().private_value, _pub(key)
    for s in [1, 2, N - 1, N - 2] + [rnd.randrange(1, N) for _ in range(20)]:
        digest, r = _signature_with_s(d, rnd.randrange(1, N), s)
        assert pure.ecdsa_verify_raw(pub, digest, r, s), s
        key.public_key().verify(
            encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
        )
        assert not pure.ecdsa_verify_raw(pub, digest, r, s - 1 or 2)
    # Q = G, s = 1: R = (e + r) * G, the point at infinity when r = n - e
    e = rnd.randrange(1, N)
    assert not pure.ecdsa_verify_raw(_enc(GX, GY), e.to_bytes(32, "big"), N - e, 1)


def test_public_key_matches_cryptography_incl_edge_scalars(impl):
    # small scalars and n - small hit the exceptional (doubling) branch of the
    # regular window; random ones the ordinary path
    ks = list(range(1, 34)) + [N - i for i in range(1, 34)]
    ks += [random.randrange(1, N) for _ in range(40)]
    for k in ks:
        want = _pub(ec.derive_private_key(k, ec.SECP256R1()))
        assert impl.public_key(k.to_bytes(32, "big")) == want, k


def test_private_key_checks(impl):
    with pytest.raises(KeyLengthError):
        impl.public_key(bytes(31))
    with pytest.raises(KeyLengthError):
        impl.ecdh(bytes(33), _pub(ec.generate_private_key(ec.SECP256R1())))
    for bad in (0, N, N + 1, 2**256 - 1):
        with pytest.raises(UsageError):
            impl.public_key(bad.to_bytes(32, "big"))
        with pytest.raises(UsageError):
            impl.ecdsa_sign(bad.to_bytes(32, "big"), b"m")


def test_generate_keypair(impl):
    seen = set()
    for _ in range(5):
        priv, pub = impl.generate_keypair()
        assert len(priv) == 32 and 0 < int.from_bytes(priv, "big") < N
        assert pub == _pub(ec.derive_private_key(int.from_bytes(priv, "big"), ec.SECP256R1()))
        seen.add(priv)
    assert len(seen) == 5


# --- ECDH (SEC 1 §3.3.1) ---------------------------------------------------------


def test_ecdh_differential_vs_cryptography(impl):
    for _ in range(300):
        a = ec.generate_private_key(ec.SECP256R1())
        b = ec.generate_private_key(ec.SECP256R1())
        want = a.exchange(ec.ECDH(), b.public_key())
        assert impl.ecdh(_priv(a), _pub(b)) == want
        assert impl.ecdh(_priv(b), _pub(a)) == want
        assert impl.public_key(_priv(a)) == _pub(a)


SQRT_B = pow(B, (P + 1) // 4, P)  # (0, sqrt(b)) is on the curve (p = 3 mod 4)


def _invalid_points():
    good = _pub(ec.generate_private_key(ec.SECP256R1()))
    x, y = int.from_bytes(good[1:33], "big"), int.from_bytes(good[33:], "big")
    enc = _enc
    pts = [
        ("off curve y+1", enc(x, (y + 1) % P)),
        ("off curve x+1", enc((x + 1) % P, y)),
        ("x = p: (p, sqrt b) is on the curve mod p", enc(P, SQRT_B)),
        ("y = p - sqrt b + p", enc(0, P - SQRT_B + P)) if P - SQRT_B + P < 2**256 else None,
        ("x = p", enc(P, y)),
        ("y = p", enc(x, P)),
        ("y = y + p", enc(x, y + P)) if y + P < 2**256 else None,
        ("all ones", b"\x04" + b"\xff" * 64),
        ("infinity (0, 0)", b"\x04" + bytes(64)),
        ("infinity octet 0x00", b"\x00"),
        ("65 zero bytes", bytes(65)),
        ("compressed", bytes([2 + (y & 1)]) + good[1:33]),
        ("hybrid 0x06/07", bytes([6 + (y & 1)]) + good[1:]),
        ("prefix 0x05", b"\x05" + good[1:]),
        ("truncated", good[:-1]),
        ("extended", good + b"\x00"),
        ("raw x||y", good[1:]),
        ("empty", b""),
    ]
    return [p for p in pts if p is not None]


def test_invalid_points_rejected_sec1_3_2_2(impl):
    priv = _priv(ec.generate_private_key(ec.SECP256R1()))
    sig = impl.ecdsa_sign(priv, b"m")
    pts = _invalid_points()
    assert len(pts) >= 16
    for _why, pt in pts:
        with pytest.raises(InvalidPointError):
            impl.ecdh(priv, pt)
        with pytest.raises(InvalidPointError):
            impl.ecdsa_verify(pt, b"m", sig)
        with pytest.raises(InvalidPointError):
            impl.ecdsa_verify_raw(pt, bytes(32), 1, 1)
    with pytest.raises(InvalidPointError):
        impl.ecdh(priv, None)


def test_ecdh_with_x_zero_point(impl):
    """(0, sqrt(b)) is a valid point of order n: accepted, same result as cryptography."""
    k = ec.generate_private_key(ec.SECP256R1())
    for y in (SQRT_B, P - SQRT_B):
        pt = _enc(0, y)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pt)
        assert impl.ecdh(_priv(k), pt) == k.exchange(ec.ECDH(), peer)


# --- ECDSA ------------------------------------------------------------------------


def test_rfc6979_a_2_5_sha256_sign(impl, vectors):
    text = " ".join(vectors("rfc6979.txt").split())
    for h in (RFC6979_X, RFC6979_UX, RFC6979_UY):
        assert h in text  # transcription check against the RFC text
    priv = bytes.fromhex(RFC6979_X)
    pub = b"\x04" + bytes.fromhex(RFC6979_UX + RFC6979_UY)
    assert impl.public_key(priv) == pub
    for msg, k, r, s in RFC6979_SIGS:
        for h in (k, r, s):
            assert "= " + h in text
        h1 = hashlib.sha256(msg).digest()
        # §3.2 step h: the first candidate k is the RFC's, so r = x(k * G) mod n
        assert int.from_bytes(impl.public_key(bytes.fromhex(k))[1:33], "big") % N == int(r, 16)
        sig = impl.ecdsa_sign(priv, msg)
        assert decode_dss_signature(sig) == (int(r, 16), int(s, 16))
        assert sig == encode_dss_signature(int(r, 16), int(s, 16))
        impl.ecdsa_verify(pub, msg, sig)
        assert impl.ecdsa_verify_raw(pub, h1, int(r, 16), int(s, 16))


def test_sign_verify_differential_vs_cryptography(impl):
    for i in range(150):
        key = ec.generate_private_key(ec.SECP256R1())
        priv, pub = _priv(key), _pub(key)
        msg = os.urandom(i % 70)
        sig = impl.ecdsa_sign(priv, msg)
        key.public_key().verify(sig, msg, ec.ECDSA(hashes.SHA256()))  # raises if bad
        # RFC 6979 is deterministic: byte-identical to cryptography's
        assert sig == key.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        theirs = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        impl.ecdsa_verify(pub, msg, theirs)
        r, s = decode_dss_signature(theirs)
        assert impl.ecdsa_verify_raw(pub, hashlib.sha256(msg).digest(), r, s)
        assert not impl.ecdsa_verify_raw(pub, hashlib.sha256(msg + b"x").digest(), r, s)
        # flipped bits in signature / message / wrong key
        bad = bytearray(theirs)
        bad[random.randrange(len(bad))] ^= 1 << random.randrange(8)
        for args in (
            (pub, msg, bytes(bad)),
            (pub, msg + b"\x00", theirs),
            (_pub(ec.generate_private_key(ec.SECP256R1())), msg, theirs),
        ):
            with pytest.raises(AuthError):
                impl.ecdsa_verify(*args)


def test_verify_raw_range_checks(impl):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = _pub(key)
    r, s = decode_dss_signature(key.sign(b"m", ec.ECDSA(hashes.SHA256())))
    d = hashlib.sha256(b"m").digest()
    assert impl.ecdsa_verify_raw(pub, d, r, s)
    for rr, ss in ((0, s), (r, 0), (r + N, s), (r, s + N), (r, N - s + N), (-r, s), (N, s)):
        assert not impl.ecdsa_verify_raw(pub, d, rr, ss)
    assert impl.ecdsa_verify_raw(pub, d, r, N - s)  # malleated s is valid ECDSA


def test_wycheproof_ecdsa_der_all_484(impl, vectors):
    tests = _wycheproof(vectors, "ecdsa_secp256r1_sha256_test.json")
    assert len(tests) == 484
    wrong = []
    for tc, pub, msg, sig, valid in tests:
        try:
            impl.ecdsa_verify(pub, msg, sig)
            ok = 1
        except (AuthError, InvalidPointError):
            ok = 0
        if ok != valid:
            wrong.append(tc)
    assert wrong == []


def test_wycheproof_ecdsa_p1363_all_262(impl, vectors):
    n = 0
    for g in vectors("ecdsa_secp256r1_sha256_p1363_test.json")["testGroups"]:
        pub = bytes.fromhex(g["publicKey"]["uncompressed"])
        for t in g["tests"]:
            sig = bytes.fromhex(t["sig"])
            digest = hashlib.sha256(bytes.fromhex(t["msg"])).digest()
            ok = len(sig) == 64 and impl.ecdsa_verify_raw(
                pub, digest, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            assert ok == (t["result"] == "valid"), t["tcId"]
            n += 1
    assert n == 262


def test_der_parser_strict_and_total(pure):
    """Bad DER is AuthError, never another exception, and a mutated signature
    that verifies fails the test (random mutations)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pub = _pub(key)
    sig = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(sig)
    assert pure.ecdsa_verify_raw(pub, hashlib.sha256(b"m").digest(), r, s)
    pure.ecdsa_verify(pub, b"m", sig)  # the strict DER parser takes the genuine one
    rnd = random.Random(1)
    for _ in range(400):
        b = bytearray(sig)
        op = rnd.randrange(3)
        if op == 0:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif op == 1:
            del b[rnd.randrange(len(b)) :]
        else:
            b.insert(rnd.randrange(len(b) + 1), rnd.randrange(256))
        try:
            p256.ecdsa_verify(pub, b"m", bytes(b))
        except AuthError:
            continue
        # accepted: only the genuine signature may verify (a one-byte change
        # cannot reach the malleated (r, n - s), and the DER is strict)
        assert bytes(b) == sig, bytes(b).hex()
    for bad in (b"", b"\x30", b"\x30\x00", sig + b"\x00", b"\x30\x81" + sig[1:], None, 12, "str"):
        with pytest.raises(AuthError):
            p256.ecdsa_verify(pub, b"m", bad)


def test_der_non_minimal_integers_rejected_x690_8_3_2(pure):
    """A superfluous 0x00 before an integer whose top bit is clear (33-byte
    INTEGER, within the length limit) is BER, not DER: rejected."""

    def integer(v, pad=b""):
        b = pad + v.to_bytes(33, "big").lstrip(b"\x00")
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes([len(b)]) + b

    def seq(body):
        return b"\x30" + bytes([len(body)]) + body

    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        r, s = decode_dss_signature(key.sign(b"m", ec.ECDSA(hashes.SHA256())))
        if r < 2**248 * 128 and s < 2**248 * 128:  # both top bits clear: 32-byte INTEGERs
            break
    pub = _pub(key)
    p256.ecdsa_verify(pub, b"m", seq(integer(r) + integer(s)))
    for bad in (
        seq(integer(r, b"\x00") + integer(s)),
        seq(integer(r) + integer(s, b"\x00")),
        seq(integer(r) + integer(s) + b"\x02\x00"),  # extra empty INTEGER
        seq(integer(r) + b"\x02\x00"),  # empty INTEGER
        seq(b"\x02\x21" + (r | 1 << 263).to_bytes(33, "big") + integer(s)),
    ):  # negative
        with pytest.raises(AuthError):
            p256.ecdsa_verify(pub, b"m", bad)


# --- MicroPython (unix port), 32 KiB heap, precompiled firmware -------------------

_MPY_WYCHEPROOF = """
from pkrows import field, reserve
reserve(4200)  # the 4 KiB signatures of tcId 47, 106, 148
from vecrun import rows, unhex, Tally
from atls.crypto import p256
from atls.errors import AuthError, InvalidPointError
t = Tally()
for i, f in rows():
    try:
        p256.ecdsa_verify(unhex(f[1]), field(f[2]), field(f[3]))
        ok = 1
    except (AuthError, InvalidPointError):
        ok = 0
    t.check(int(f[0]), ok == int(f[4]))
t.report()
"""


def test_mpy_wycheproof_ecdsa_der_all_484(mpyc, vectors, tmp_path):
    tests = side_files(_wycheproof(vectors, "ecdsa_secp256r1_sha256_test.json"), tmp_path)
    assert sum(1 for t in tests if str(t[3]).startswith("@")) == 3  # tcId 47, 106, 148
    res = mpyc.run_rows(_MPY_WYCHEPROOF, tests, heapsize="48K")
    assert res == {"ok": 484, "failed": []}


_MPY_P1363 = """
from hashlib import sha256
from vecrun import rows, unhex, Tally
from atls.crypto import p256
t = Tally()
for i, f in rows():
    sig = unhex(f[3])
    ok = len(sig) == 64 and p256.ecdsa_verify_raw(
        unhex(f[1]), sha256(unhex(f[2])).digest(),
        int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    t.check(int(f[0]), int(ok) == int(f[4]))
t.report()
"""


def test_mpy_wycheproof_ecdsa_p1363_all_262(mpyc, vectors):
    rows = []
    for g in vectors("ecdsa_secp256r1_sha256_p1363_test.json")["testGroups"]:
        pub = bytes.fromhex(g["publicKey"]["uncompressed"])
        for t in g["tests"]:
            rows.append(
                (
                    t["tcId"],
                    pub,
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    int(t["result"] == "valid"),
                )
            )
    assert mpyc.run_rows(_MPY_P1363, rows, heapsize=HEAP) == {"ok": 262, "failed": []}


_MPY_DIFF = """
from vecrun import rows, unhex, Tally
from atls.crypto import p256
from atls.errors import AuthError, InvalidPointError
t = Tally()
for i, f in rows():
    kind = f[0]
    if kind == "ecdh":  # priv, own pub, peer pub, shared
        priv = unhex(f[1])
        t.check(i, p256.public_key(priv) == unhex(f[2]), "pub")
        t.check(i, p256.ecdh(priv, unhex(f[3])) == unhex(f[4]), "ecdh")
    elif kind == "sign":  # priv, msg, deterministic sig
        t.check(i, p256.ecdsa_sign(unhex(f[1]), unhex(f[2])) == unhex(f[3]), "sign")
    elif kind == "verify":  # pub, msg, sig, valid
        try:
            p256.ecdsa_verify(unhex(f[1]), unhex(f[2]), unhex(f[3]))
            ok = 1
        except AuthError:
            ok = 0
        t.check(i, ok == int(f[4]), "verify")
    elif kind == "badpoint":  # priv, point
        sig = b"0\\x06\\x02\\x01\\x01\\x02\\x01\\x01"  # DER r = s = 1
        for fn in (lambda: p256.ecdh(unhex(f[1]), unhex(f[2])),
                   lambda: p256.ecdsa_verify(unhex(f[2]), b"m", sig)):
            try:
                fn()
                t.check(i, False, "accepted")
            except InvalidPointError:
                t.check(i, True)
    elif kind == "badpriv":
        try:
            p256.public_key(unhex(f[1]))
            t.check(i, False, "accepted")
        except ValueError:  # UsageError / KeyLengthError
            t.check(i, True)
priv, pub = p256.generate_keypair()
t.check(-1, len(priv) == 32 and p256.public_key(priv) == pub)
t.report()
"""


def diff_rows(n=120):
    """Rows for _MPY_DIFF (vs `cryptography`) and the count of checks they make."""
    rows, expect = [], 1
    for i in range(n):
        a = ec.generate_private_key(ec.SECP256R1())
        b = ec.generate_private_key(ec.SECP256R1())
        rows.append(("ecdh", _priv(a), _pub(a), _pub(b), a.exchange(ec.ECDH(), b.public_key())))
        msg = os.urandom(i % 50)
        rows.append(
            (
                "sign",
                _priv(a),
                msg,
                a.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)),
            )
        )
        sig = b.sign(msg, ec.ECDSA(hashes.SHA256()))
        rows.append(("verify", _pub(b), msg, sig, 1))
        bad = bytearray(sig)
        bad[random.randrange(8, len(bad))] ^= 1 << random.randrange(8)
        rows.append(("verify", _pub(b), msg, bytes(bad), 0))
        expect += 5
    for k in (1, 2, 3, 15, 16, 17, N - 1, N - 2, N - 3, N - 16, N - 17):
        rows.append(
            (
                "ecdh",
                k.to_bytes(32, "big"),
                _pub(ec.derive_private_key(k, ec.SECP256R1())),
                _pub(a),
                ec.derive_private_key(k, ec.SECP256R1()).exchange(ec.ECDH(), a.public_key()),
            )
        )
        expect += 2
    for _why, pt in _invalid_points():
        rows.append(("badpoint", _priv(a), pt))
        expect += 2
    for bad in (bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, bytes(31), bytes(33)):
        rows.append(("badpriv", bad))
        expect += 1
    return rows, expect


def test_mpy_differential_ecdh_sign_verify(mpyc):
    rows, expect = diff_rows()
    res = mpyc.run_rows(_MPY_DIFF, rows, heapsize=HEAP)
    assert res == {"ok": expect, "failed": []}


def test_mpy_rfc6979_a_2_5_from_source(mpy):
    """The .py source itself (not .mpy) on MicroPython; compiling it needs a
    larger heap than 32 KiB (measured minimum: 84 KiB since the workspace reservation
    of issue 17; 80 KiB failed; 96 KiB gives room)."""
    src = "from atls.crypto import p256\nfrom binascii import unhexlify as u\n"
    src += "assert p256.public_key(u('%s')) == u('04%s%s')\n" % (RFC6979_X, RFC6979_UX, RFC6979_UY)
    for msg, _k, r, s in RFC6979_SIGS:
        sig = encode_dss_signature(int(r, 16), int(s, 16)).hex()
        src += "assert p256.ecdsa_sign(u('%s'), %r) == u('%s')\n" % (RFC6979_X, msg, sig)
        src += "p256.ecdsa_verify(u('04%s%s'), %r, u('%s'))\n" % (RFC6979_UX, RFC6979_UY, msg, sig)
    src += "print('ok')\n"
    assert mpy.check(src, heapsize="96K").stdout.strip() == "ok"
