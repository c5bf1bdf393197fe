"""Deterministic ECDSA-SHA256 signing on P-256 (RFC 6979), for client
certificates.  Split from atls.crypto.p256 (which re-exports `ecdsa_sign` on
first use) so that devices that only verify never load it."""

from atls.crypto import backend
from atls.crypto.p256 import (
    _GT,
    _N,
    _affine,
    _digest_int,
    _gtab,
    _inv_blind,
    _mul_secret,
    _scalar,
    limbs,
    native,
)


def _der_uint(v):
    b = v.to_bytes(33, "big").lstrip(b"\x00")
    if not b or b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def _rfc6979(priv, h1):
    """Candidate nonces k per RFC 6979 §3.2 (HMAC-SHA256, qlen = hlen = 256)."""
    from atls.crypto.hkdf import hmac_sha256

    bx = bytes(priv) + (_digest_int(h1) % _N).to_bytes(32, "big")  # §3.2 d.
    V = b"\x01" * 32  # §3.2 b.
    K = hmac_sha256(b"\x00" * 32, V + b"\x00" + bx)  # §3.2 c., d.
    V = hmac_sha256(K, V)  # e.
    K = hmac_sha256(K, V + b"\x01" + bx)  # f.
    V = hmac_sha256(K, V)  # g.
    while True:  # h.
        V = hmac_sha256(K, V)
        k = int.from_bytes(V, "big")
        if 0 < k < _N:
            yield k
        K = hmac_sha256(K, V + b"\x00")
        V = hmac_sha256(K, V)


def ecdsa_sign(priv, message):
    """Deterministic ECDSA-SHA256 (RFC 6979) -> DER signature."""
    d = _scalar(priv)
    if native:
        return native.sign(d, bytes(message))
    n = _N
    h = backend.sha256(message).digest()
    e = _digest_int(h)
    gt = _GT
    for k in _rfc6979(priv, h):
        xy = limbs and limbs.mul(k, _gtab())  # native: constant time
        x = (xy or _affine(*_mul_secret(k, gt, True)))[0]
        r = x % n
        if r == 0:
            continue
        # the nonce's inverse: fixed-time Fermat on native limbs, else blinded
        s = (limbs.inv_n(k) if limbs else _inv_blind(k, n)) * (e + r * d) % n
        if s:
            body = _der_uint(r) + _der_uint(s)
            return b"\x30" + bytes([len(body)]) + body
