"""AES-GCM (NIST SP 800-38D) with 96-bit nonces and 128-bit tags.

Theory of operation
  H = E(0^128).  J0 = nonce || 0^31 || 1 (SP 800-38D §7.1, 96-bit IV only).
  Encryption: CTR from inc32(J0), via ccm.ctr_parts (16 counter blocks per
  ECB call, XOR as integers).  The 32-bit counter cannot wrap because the
  plaintext is capped at 2^36 - 32 bytes (§5.2.1.1).
  Tag: T = E(J0) XOR GHASH_H(A || 0* || C || 0* || [len A]64 || [len C]64).
  Open: the tag is checked before anything is decrypted.

GHASH multiply (Shoup's 4-bit table, without his per-step reduction)
  A block is an int read big-endian, so bit 127 holds the coefficient of
  x^0 (GCM's reflected bit order, §6.3).  Tab[n] = p(n)*H for the 16 nibble
  polynomials p(n) (bit 3 of n is x^0): 16 Python ints per key.  Going
  through the 32 nibbles of X, e = (e ^ Tab[nibble]) << 4 accumulates X*H
  unreduced in 256 bits (bit 255-d holds x^d); one reduction by
  x^128 = x^7 + x^2 + x + 1 at the end folds the low 128 bits back twice
  (the second fold only touches 7 bits and is done on small ints).
  A second, pre-shifted table would save one shift per byte (about 20%
  of GHASH time) for another ~1 KiB of heap per key: not worth it here.
"""

from atls.crypto.backend import aes_ecb
from atls.crypto.ccm import ctr_parts, join, tags_equal
from atls.errors import AuthError, KeyLengthError, UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_NONCE_LEN = const(12)  # SP 800-38D §5.2.1.1: 96-bit IVs recommended
_TAG_LEN = const(16)
_MAX_TEXT = const(0xFFFFFFFE0)  # 2^36 - 32 bytes (§5.2.1.1, 2^39 - 256 bits)
_KEY_LENS = const((16, 32))
_M128 = const((1 << 128) - 1)
_R = const(0xE1 << 120)  # x^128 = x^7 + x^2 + x + 1, reflected (§6.3)


def check_key(key):
    if len(key) not in _KEY_LENS:
        raise KeyLengthError("AES-GCM key must be 16 or 32 bytes")


def check_nonce(nonce, n):
    """KeyLengthError unless the nonce is 12 bytes; UsageError if n is
    over the SP 800-38D limit."""
    if len(nonce) != _NONCE_LEN:
        raise KeyLengthError("AES-GCM nonce must be 12 bytes")
    if n > _MAX_TEXT:
        raise UsageError("AES-GCM text too long")


class GCM:
    """AES-GCM with a fixed key (SP 800-38D §7)."""

    def __init__(self, key):
        check_key(key)
        self._ecb = aes_ecb(bytes(key))
        self._ks = bytearray(256)
        h = int.from_bytes(self._ecb.encrypt(bytes(16)), "big")
        t = [0] * 16
        for bit in (8, 4, 2, 1):  # nibble bit 3 is x^0, bit 0 is x^3
            t[bit] = h
            h = (h >> 1) ^ (_R if h & 1 else 0)  # h *= x
        for i in range(16):
            t[i] = t[i & 8] ^ t[i & 4] ^ t[i & 2] ^ t[i & 1]
        self._t = t

    def _tag(self, j0, segs, la, n):
        """E(J0) XOR GHASH over `segs` (the AAD, then the ciphertext in
        pieces that are whole blocks except the last), each zero-padded,
        then the lengths block (SP 800-38D §7.1 steps 5-6)."""
        segs.append(((la << 67) | (n << 3)).to_bytes(16, "big"))
        tab = self._t
        y = 0
        for data in segs:
            m = len(data)
            mv = data if isinstance(data, memoryview) else memoryview(data)
            for i in range(0, m, 16):
                j = i + 16
                if j <= m:
                    y ^= int.from_bytes(mv[i:j], "big")
                else:  # zero-pad the last partial block
                    y ^= int.from_bytes(mv[i:m], "big") << ((j - m) << 3)
                e = 0
                for b in y.to_bytes(16, "big"):
                    e = (((e ^ tab[b >> 4]) << 4) ^ tab[b & 15]) << 4
                # e: bits 255..128 are x^0..x^127, bits 127..0 x^128..x^255.
                # The fold (t >> 1, >> 2, >> 7) drops t's low 7 bits, which
                # are x^128.. again: pre-add their image (small-int math).
                u = e & 127
                t = (e & _M128) ^ (((u ^ (u << 5) ^ (u << 6)) & 127) << 121)
                y = (e >> 128) ^ t ^ (t >> 1) ^ (t >> 2) ^ (t >> 7)
        ek = self._ecb.encrypt(j0.to_bytes(16, "big"))
        return (y ^ int.from_bytes(ek, "big")).to_bytes(16, "big")

    def seal(self, nonce, aad, plaintext):
        """Return ciphertext || 16-byte tag (SP 800-38D §7.1)."""
        n = len(plaintext)
        check_nonce(nonce, n)
        j0 = (int.from_bytes(nonce, "big") << 32) | 1
        parts = ctr_parts(self._ecb, j0 + 1, plaintext, self._ks)
        parts.append(self._tag(j0, [aad] + parts, len(aad), n))
        return b"".join(parts)

    def open(self, nonce, aad, data):
        """Return the plaintext, or raise AuthError (SP 800-38D §7.2).
        The tag is checked before anything is decrypted."""
        n = len(data) - _TAG_LEN
        check_nonce(nonce, n)
        if n < 0:
            raise AuthError()  # AES-GCM input shorter than the tag
        mv = data if isinstance(data, memoryview) else memoryview(data)
        ct = mv[:n]
        j0 = (int.from_bytes(nonce, "big") << 32) | 1
        if not tags_equal(self._tag(j0, [aad, ct], len(aad), n), mv[n:]):
            raise AuthError()  # AES-GCM tag mismatch
        return join(ctr_parts(self._ecb, j0 + 1, ct, self._ks))
