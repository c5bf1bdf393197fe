"""RSA verify (atls.crypto.rsa): RSASSA-PSS (RFC 8017 §8.1.2, MGF1-SHA256,
salt 32) and RSASSA-PKCS1-v1_5 (§8.2.2, SHA-256) under CPython and the
MicroPython unix port (32 KiB heap).

No Wycheproof RSA file is in tests/vectors, so keys and signatures come from
the `cryptography` package (RSA-2048 plus odd sizes where emLen = k - 1);
negatives are flipped bits, other salt lengths / hashes / paddings,
signatures >= n, wrong lengths, and encoded blocks crafted with the private
exponent (s = EM^d mod n) that break exactly one rule of EMSA-PSS (§9.1.2)
or of the PKCS#1 v1.5 block (§9.2).
"""

import hashlib
import os
import random
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa as crsa

from atls.crypto import rsa
from atls.errors import AuthError, InvalidPointError

sys.path.insert(0, str(Path(__file__).resolve().parent / "mpy"))
from mpycross import compiled  # noqa: E402

HEAP = "32K"
# RFC 8017 §9.2 note 1: DigestInfo prefixes
DI_SHA256 = bytes.fromhex("3031300d060960864801650304020105000420")
DI_SHA256_NO_NULL = bytes.fromhex("302f300b06096086480165030402010420")
DI_SHA1 = bytes.fromhex("3021300906052b0e03021a05000414")


def _pss(salt_len=32, mgf=hashes.SHA256):
    return padding.PSS(padding.MGF1(mgf()), salt_len)


@pytest.fixture(scope="module")
def keys():
    """{bits: private key}: 2048 (TLS), 2049 (emLen = k - 1), 3072."""
    return {b: crsa.generate_private_key(65537, b) for b in (2048, 2049, 3072)}


def _ne(sk):
    pn = sk.public_key().public_numbers()
    return pn.n, pn.e


def _k(n):
    return (n.bit_length() + 7) // 8


def _raw_sign(sk, em_int):
    """s = EM^d mod n: a signature on an arbitrary encoded block."""
    n, _ = _ne(sk)
    assert em_int < n
    return pow(em_int, sk.private_numbers().d, n).to_bytes(_k(n), "big")


def _mgf1(seed, length):
    out = b""
    for c in range((length + 31) // 32):
        out += hashlib.sha256(seed + c.to_bytes(4, "big")).digest()
    return out[:length]


def _pss_em(n, msg, salt, mutate=None):
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1), SHA-256, optionally breaking one rule."""
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha256(msg).digest()
    h = hashlib.sha256(bytes(8) + m_hash + salt).digest()
    ps = bytearray(em_len - len(salt) - 32 - 2)
    sep = 1
    if mutate == "ps_nonzero":
        ps[len(ps) // 2] = 1
    if mutate == "separator":
        sep = 2
    if mutate == "hash":
        h = hashlib.sha256(bytes(8) + hashlib.sha256(msg + b"!").digest() + salt).digest()
    db = bytes(ps) + bytes([sep]) + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db))))
    top = 8 * em_len - em_bits
    masked[0] &= 0xFF >> top
    if mutate == "top_bits":  # a bit above emBits (§9.1.2 step 6); needs 8emLen > emBits
        masked[0] |= 0x80
    trailer = 0xBD if mutate == "trailer" else 0xBC
    return int.from_bytes(bytes(masked) + h + bytes([trailer]), "big")


def _pkcs1_em(n, msg, prefix=DI_SHA256, bt=1, garbage=b"", fill=0xFF):
    k = _k(n)
    t = prefix + hashlib.sha256(msg).digest() + garbage
    em = b"\x00" + bytes([bt]) + bytes([fill]) * (k - len(t) - 3) + b"\x00" + t
    return int.from_bytes(em, "big")


# --- positive and differential -----------------------------------------------------


def test_pss_and_pkcs1_from_cryptography_all_sizes(keys):
    for _bits, sk in keys.items():
        n, e = _ne(sk)
        for i in range(12):
            msg = os.urandom(i * 13)
            rsa.verify_pss_sha256(n, e, msg, sk.sign(msg, _pss(), hashes.SHA256()))
            rsa.verify_pkcs1_sha256(n, e, msg, sk.sign(msg, padding.PKCS1v15(), hashes.SHA256()))


def test_key_as_bytes_and_bytearray_sig(keys):
    sk = keys[2048]
    n, e = _ne(sk)
    sig = sk.sign(b"m", _pss(), hashes.SHA256())
    rsa.verify_pss_sha256(n.to_bytes(256, "big"), b"\x01\x00\x01", b"m", bytearray(sig))
    rsa.verify_pss_sha256(n, e, memoryview(b"m"), memoryview(sig))


def test_crafted_valid_blocks_verify(keys):
    """Our own encoders produce blocks the verifier accepts, so the mutations
    below each break exactly one rule."""
    for sk in keys.values():
        n, e = _ne(sk)
        rsa.verify_pss_sha256(n, e, b"msg", _raw_sign(sk, _pss_em(n, b"msg", os.urandom(32))))
        rsa.verify_pkcs1_sha256(n, e, b"msg", _raw_sign(sk, _pkcs1_em(n, b"msg")))


# --- negatives -----------------------------------------------------------------------


def test_flipped_bits_and_wrong_message(keys):
    rnd = random.Random(2)
    sk = keys[2048]
    n, e = _ne(sk)
    for i in range(24):
        msg = os.urandom(i)
        pss = sk.sign(msg, _pss(), hashes.SHA256())
        pkcs1 = sk.sign(msg, padding.PKCS1v15(), hashes.SHA256())
        for verify, sig in ((rsa.verify_pss_sha256, pss), (rsa.verify_pkcs1_sha256, pkcs1)):
            bad = bytearray(sig)
            bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
            if int.from_bytes(bad, "big") < n:
                with pytest.raises(AuthError):
                    verify(n, e, msg, bytes(bad))
            with pytest.raises(AuthError):
                verify(n, e, msg + b"\x00", sig)
            with pytest.raises(AuthError):
                verify(*_ne(keys[3072]), msg, sig)


def test_pss_wrong_salt_hash_mgf_and_padding(keys):
    sk = keys[2048]
    n, e = _ne(sk)
    for salt_len in (0, 20, 31, 33, 64, padding.PSS.MAX_LENGTH):
        sig = sk.sign(b"m", _pss(salt_len), hashes.SHA256())
        with pytest.raises(AuthError):
            rsa.verify_pss_sha256(n, e, b"m", sig)
    for sig in (
        sk.sign(b"m", _pss(32, hashes.SHA1), hashes.SHA256()),  # MGF1-SHA1
        sk.sign(b"m", padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384()),
        sk.sign(b"m", padding.PKCS1v15(), hashes.SHA256()),
    ):
        with pytest.raises(AuthError):
            rsa.verify_pss_sha256(n, e, b"m", sig)
    for sig in (
        sk.sign(b"m", _pss(), hashes.SHA256()),
        sk.sign(b"m", padding.PKCS1v15(), hashes.SHA384()),
        sk.sign(b"m", padding.PKCS1v15(), hashes.SHA1()),
    ):
        with pytest.raises(AuthError):
            rsa.verify_pkcs1_sha256(n, e, b"m", sig)


@pytest.mark.parametrize("mutate", ["trailer", "top_bits", "ps_nonzero", "separator", "hash"])
def test_pss_crafted_rule_breaks_rfc8017_9_1_2(keys, mutate):
    tested = 0
    for sk in keys.values():
        n, e = _ne(sk)
        if mutate == "top_bits" and (n.bit_length() - 1) % 8 == 0:
            continue  # emLen = k - 1: no bit above emBits inside EM
        for _ in range(64):  # top_bits: retry salts until EM < n (else s^e != EM)
            em = _pss_em(n, b"msg", os.urandom(32), mutate)
            if em < n:
                break
        with pytest.raises(AuthError):
            rsa.verify_pss_sha256(n, e, b"msg", _raw_sign(sk, em))
        tested += 1
    assert tested >= 2


@pytest.mark.parametrize(
    "kw",
    [
        {"bt": 2},
        {"bt": 0},
        {"prefix": DI_SHA256_NO_NULL},
        {"prefix": DI_SHA1},
        {"garbage": b"\x00" * 8, "fill": 0xFF},
        {"fill": 0xFE},
    ],
    ids=[
        "blocktype2",
        "blocktype0",
        "digestinfo-no-null",
        "sha1-digestinfo",
        "trailing-garbage",
        "ps-not-ff",
    ],
)
def test_pkcs1_crafted_blocks_rfc8017_9_2(keys, kw):
    sk = keys[2048]
    n, e = _ne(sk)
    with pytest.raises(AuthError):
        rsa.verify_pkcs1_sha256(n, e, b"msg", _raw_sign(sk, _pkcs1_em(n, b"msg", **kw)))
    # Bleichenbacher-2006 shape: short padding, the hash, then garbage up to k bytes
    k = _k(n)
    t = DI_SHA256 + hashlib.sha256(b"msg").digest()
    em = b"\x00\x01\xff\xff\x00" + t
    em += bytes(k - len(em))
    with pytest.raises(AuthError):
        rsa.verify_pkcs1_sha256(n, e, b"msg", _raw_sign(sk, int.from_bytes(em, "big")))


def test_signature_range_and_length_rfc8017_8_x_2_step1(keys):
    for bits in (2048, 2049):
        sk = keys[bits]
        n, e = _ne(sk)
        k = _k(n)
        sig = sk.sign(b"m", _pss(), hashes.SHA256())
        for bad in (
            n.to_bytes(k, "big"),
            (n + 1).to_bytes(k, "big"),
            b"\xff" * k,
            sig[1:],
            b"\x00" + sig,
            b"",
            None,
            5,
        ):
            for verify in (rsa.verify_pss_sha256, rsa.verify_pkcs1_sha256):
                with pytest.raises(AuthError):
                    verify(n, e, b"m", bad)
        # s + n encodes the same residue but is >= n: rejected, not reduced
        if n + int.from_bytes(sig, "big") < 256**k:
            with pytest.raises(AuthError):
                big = (n + int.from_bytes(sig, "big")).to_bytes(k, "big")
                rsa.verify_pss_sha256(n, e, b"m", big)


def test_unusable_keys():
    n = crsa.generate_private_key(65537, 1024).public_key().public_numbers().n
    rsa_ok = (n, 65537)
    with pytest.raises(AuthError):  # a usable 1024-bit key, bad signature
        rsa.verify_pss_sha256(*rsa_ok, b"m", bytes(128))
    for bad_n, bad_e in (
        (n + 1, 65537),
        (n >> 8, 65537),
        (n, 1),
        (n, 65536),
        (n, n),
        (n, n + 2),
        (3, 3),
    ):
        for verify in (rsa.verify_pss_sha256, rsa.verify_pkcs1_sha256):
            with pytest.raises(InvalidPointError):
                verify(bad_n, bad_e, b"m", bytes(128))


# --- MicroPython (unix port), precompiled, 32 KiB heap ---------------------------

_MPY_RSA = """
from vecrun import rows, unhex, Tally
from atls.crypto import rsa
from atls.errors import AuthError, InvalidPointError
t = Tally()
n = e = None
for i, f in rows():
    if f[0] == "key":
        n = int(f[1], 16)
        e = int(f[2], 16)
        continue
    fn = rsa.verify_pss_sha256 if f[0] == "pss" else rsa.verify_pkcs1_sha256
    try:
        fn(n, e, unhex(f[1]), unhex(f[2]))
        ok = 1
    except AuthError:
        ok = 0
    except InvalidPointError:
        ok = 2
    t.check(i, ok == int(f[3]), f[0])
t.report()
"""


def test_mpy_rsa_pss_pkcs1(mpy, keys, tmp_path_factory):
    mpyc = compiled(mpy, tmp_path_factory.mktemp("mpyc"), ["atls/crypto/rsa.py"])
    rnd = random.Random(4)
    rows, checks = [], 0
    for bits, sk in keys.items():
        n, e = _ne(sk)
        rows.append(("key", "%x" % n, "%x" % e))
        for _i in range(8 if bits == 2048 else 3):
            msg = os.urandom(rnd.randrange(0, 100))
            for kind, sig in (
                ("pss", sk.sign(msg, _pss(), hashes.SHA256())),
                ("pkcs1", sk.sign(msg, padding.PKCS1v15(), hashes.SHA256())),
            ):
                bad = bytearray(sig)
                bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
                rows += [
                    (kind, msg, sig, 1),
                    (kind, msg + b"x", sig, 0),
                    (kind, msg, bytes(bad), 0),
                ]
                checks += 3
        k = _k(n)
        rows += [
            ("pss", b"m", sk.sign(b"m", _pss(20), hashes.SHA256()), 0),
            ("pss", b"m", sk.sign(b"m", padding.PKCS1v15(), hashes.SHA256()), 0),
            ("pkcs1", b"m", sk.sign(b"m", _pss(), hashes.SHA256()), 0),
            ("pss", b"m", n.to_bytes(k, "big"), 0),
            ("pkcs1", b"m", b"\xff" * k, 0),
            ("pss", b"m", bytes(k - 1), 0),
        ]
        checks += 6
        for mutate in ("trailer", "ps_nonzero", "separator", "hash"):
            em = _pss_em(n, b"msg", os.urandom(32), mutate)
            rows.append(("pss", b"msg", _raw_sign(sk, em), 0))
            checks += 1
        rows.append(("pss", b"msg", _raw_sign(sk, _pss_em(n, b"msg", os.urandom(32))), 1))
        em = _pkcs1_em(n, b"msg", prefix=DI_SHA256_NO_NULL)
        rows.append(("pkcs1", b"msg", _raw_sign(sk, em), 0))
        checks += 2
    rows += [("key", "%x" % (n + 1), "10001"), ("pss", b"m", bytes(_k(n)), 2)]
    checks += 1
    res = mpyc.run_rows(_MPY_RSA, rows, heapsize=HEAP)
    assert res == {"ok": checks, "failed": []}


def test_mpy_from_source(mpy, keys):
    sk = keys[2048]
    n, e = _ne(sk)
    sig = sk.sign(b"hello", _pss(), hashes.SHA256())
    sig2 = sk.sign(b"hello", padding.PKCS1v15(), hashes.SHA256())
    src = (
        "from binascii import unhexlify as u\nfrom atls.crypto import rsa\n"
        "n = 0x%x\nrsa.verify_pss_sha256(n, %d, b'hello', u('%s'))\n"
        "rsa.verify_pkcs1_sha256(n, %d, b'hello', u('%s'))\nprint('ok')\n"
        % (n, e, sig.hex(), e, sig2.hex())
    )
    assert mpy.check(src, heapsize=HEAP).stdout.strip() == "ok"
