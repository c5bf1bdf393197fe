"""RSA signature verification with SHA-256 (RFC 8017), pure Python ints.

Theory of operation
-------------------
Both schemes start with RSAVP1 (RFC 8017 §5.2.2): the signature must be
exactly k = len(n) bytes (§8.1.2 step 1, §8.2.2 step 1) and s < n, then
m = pow(s, e, n).  The rest is done on the integer m instead of byte strings:

- RSASSA-PSS (§8.1.2, EMSA-PSS-VERIFY §9.1.2) as TLS 1.3 uses it for
  rsa_pss_rsae_sha256 (RFC 8446 §4.2.3): MGF1-SHA256 (§B.2.1) and a salt of
  exactly 32 bytes (the hash length).  All checks (trailer 0xbc, zero top
  bits, PS all zero, the 0x01 separator, H == H') are evaluated and combined
  before the single decision: no early exit between them.
- RSASSA-PKCS1-v1_5 (§8.2.2): the expected block EM = 00 01 FF..FF 00 ||
  DigestInfo(SHA-256) || H (§9.2, DigestInfo prefix from note 1) is rebuilt
  and compared whole with m, never parsed, which rules out the Bleichenbacher
  2006 family of lenient-parser forgeries.

Keys: n and e are ints (big-endian bytes are accepted too).  n must be odd
and at least 1024 bits, e odd with 3 <= e < n; otherwise InvalidPointError
(this project's "public key not usable" error).  Every signature failure is
AuthError.  Verification handles only public data, so nothing here needs to
be constant time; the combined-checks structure is hygiene, not a defence.
RAM: a 2048-bit pow() needs a few KiB of heap on MicroPython.
"""

from atls.crypto import backend
from atls.errors import AuthError, InvalidPointError

_HLEN = 32  # SHA-256 output, also the PSS salt length (RFC 8446 §4.2.3)
# RFC 8017 §9.2 note 1: DER of DigestInfo for SHA-256, followed by H.
_DIGESTINFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"


def _bitlen(n):
    """n.bit_length() for n > 0 (MicroPython ints have no bit_length)."""
    h = "%x" % n
    return 4 * len(h) - 6 + len(bin(int(h[0], 16)))


def _key(n, e):
    if not isinstance(n, int):
        n = int.from_bytes(bytes(n), "big")
    if not isinstance(e, int):
        e = int.from_bytes(bytes(e), "big")
    if _bitlen(n) < 1024 or not n & 1 or not e & 1 or not 3 <= e < n:
        raise InvalidPointError()  # RSA: unusable public key
    return n, e


def _rsavp1(n, e, sig):
    """RFC 8017 §5.2.2 after the length check of §8.x.2 step 1."""
    try:
        sig = bytes(sig)
    except TypeError:
        raise AuthError()  # RSA: signature must be bytes
    if len(sig) != (_bitlen(n) + 7) >> 3:
        raise AuthError()  # RSA: wrong signature length
    s = int.from_bytes(sig, "big")
    if s >= n:
        raise AuthError()  # RSA: signature representative out of range
    return pow(s, e, n)


def _mgf1(seed, length):
    """RFC 8017 §B.2.1 MGF1 with SHA-256, returned as a big-endian int."""
    out = b""
    c = 0
    while len(out) < length:
        out += backend.sha256(seed + c.to_bytes(4, "big")).digest()
        c += 1
    return int.from_bytes(out[:length], "big")


def verify_pss_sha256(n, e, message, sig):
    """RSASSA-PSS-VERIFY, SHA-256, MGF1-SHA256, salt length 32 (RFC 8017 §8.1.2).
    Returns None; AuthError on failure."""
    n, e = _key(n, e)
    m = _rsavp1(n, e, sig)
    em_bits = _bitlen(n) - 1  # §8.1.2 step 2c: modBits - 1
    em_len = (em_bits + 7) >> 3
    db_len = em_len - _HLEN - 1
    # §9.1.2 steps 2-13 on the integer m (= EM as a big-endian number)
    h = (m >> 8) & ((1 << 8 * _HLEN) - 1)
    hb = h.to_bytes(_HLEN, "big")
    db = ((m >> 8 * (_HLEN + 1)) ^ _mgf1(hb, db_len)) & ((1 << em_bits - 8 * (_HLEN + 1)) - 1)
    salt = (db & ((1 << 8 * _HLEN) - 1)).to_bytes(_HLEN, "big")
    m_hash = backend.sha256(message).digest()
    h2 = backend.sha256(bytes(8) + m_hash + salt).digest()
    ok = em_len >= 2 * _HLEN + 2  # step 3 (sLen = hLen)
    ok &= m & 0xFF == 0xBC  # step 4
    ok &= m >> em_bits == 0  # step 6: leftmost 8emLen - emBits bits zero
    ok &= db >> 8 * _HLEN == 1  # step 10: PS all zero, then 0x01
    ok &= hb == h2  # step 14
    if not ok:
        raise AuthError()  # RSA-PSS: signature does not verify


def verify_pkcs1_sha256(n, e, message, sig):
    """RSASSA-PKCS1-V1_5-VERIFY with SHA-256 (RFC 8017 §8.2.2).
    Returns None; AuthError on failure."""
    n, e = _key(n, e)
    m = _rsavp1(n, e, sig)
    k = (_bitlen(n) + 7) >> 3
    t = _DIGESTINFO + backend.sha256(message).digest()
    # §9.2 step 5: EM = 0x00 || 0x01 || PS (0xff * (k - tLen - 3)) || 0x00 || T
    ps = k - len(t) - 3
    em = ((2 << 8 * ps) - 1) << 8 * (len(t) + 1) | int.from_bytes(t, "big")
    if m != em:
        raise AuthError()  # RSA-PKCS1: signature does not verify
