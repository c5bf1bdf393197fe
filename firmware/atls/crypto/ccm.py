"""AES-CCM (RFC 3610, NIST SP 800-38C) on the backend's AES block cipher.

Theory of operation
  Formatting (RFC 3610 §2.2, SP 800-38C §A.2): B0 = flags || nonce || l(m) in
  L = 15 - len(nonce) bytes, then the AAD prefixed by its encoded length and
  zero-padded to whole blocks, then the message zero-padded.
  Authentication: a CBC-MAC over those blocks.  The backend's CBC encryptor
  (C code on MicroPython) chains across calls, so the blocks are fed in
  chunks of up to 256 bytes into a small scratch buffer and only the last
  output block is kept; the message itself is never copied.
  Encryption (RFC 3610 §2.3): CTR mode with A_i = flags' || nonce || i.
  `ctr_parts` (shared with GCM) builds up to 16 counter blocks at once as one
  big integer, ECB-encrypts them in a single call and XORs the keystream
  with the data as integers: no per-byte loop on the hot path.
  Tag: the first M bytes of CBC-MAC XOR S0, S0 = E(A0).
  Open: decrypt, MAC the recovered plaintext, compare tags in constant shape
  (`tags_equal`) and release the plaintext only if they match.
"""

from atls.crypto.backend import aes_cbc, aes_ecb
from atls.errors import AuthError, KeyLengthError, UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BLOCKS = const(16)  # counter blocks per ECB call
_CHUNK = const(256)  # _BLOCKS * 16 bytes: keystream / CBC scratch size
_MIN_NONCE = const(7)  # RFC 3610 §2: L in 2..8, nonce = 15 - L bytes
_MAX_NONCE = const(13)
_TAG_LENS = const((4, 6, 8, 10, 12, 14, 16))  # RFC 3610 §2: M in 4..16, even
_KEY_LENS = const((16, 32))  # AES-128 (TLS_AES_128_CCM_*), AES-256 optional
_ZERO16 = const(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")

# _ONES has a 1 in the last byte of each of 16 blocks; _STEPS holds 0..15 in
# those places.  c * _ONES + _STEPS is the 256-byte run of counter blocks
# c, c+1, ..., c+15 (big-endian, first block most significant).
# With B = 2^128, _STEPS = sum (15 - i) B^i = (_ONES - 16) / (B - 1).  Built
# at import from bytes (few temporaries), not as constant expressions: the
# compiler would keep big-int constants in RAM beside the globals.
_ONES = int.from_bytes((_ZERO16[1:] + b"\x01") * _BLOCKS, "big")
_STEPS = (_ONES - 16) // ((1 << 128) - 1)


def tags_equal(a, b):
    """Compare two tags without stopping at the first difference."""
    n = len(a)
    if n != len(b):
        return False
    acc = 0
    for i in range(n):
        acc |= a[i] ^ b[i]
    return acc == 0


def ctr_parts(ecb, ctr, src, ks):
    """XOR `src` with the CTR keystream whose first counter block is the
    128-bit int `ctr` (incremented as a whole 128-bit integer; callers keep
    lengths small enough that their counter field never wraps).  `ks` is a
    scratch bytearray of _CHUNK bytes.  Returns a list of bytes pieces of
    _CHUNK bytes (the last may be shorter), for the caller to join once."""
    n = len(src)
    if n <= 16:  # one block (or none): skip the run arithmetic
        if n == 0:
            return []
        k = int.from_bytes(ecb.encrypt(ctr.to_bytes(16, "big")), "big") >> ((16 - n) << 3)
        return [(int.from_bytes(src, "big") ^ k).to_bytes(n, "big")]
    mv = src if isinstance(src, memoryview) else memoryview(src)
    kv = memoryview(ks)
    parts = []
    off = 0
    while off < n:
        take = n - off
        if take >= _CHUNK:
            take = _CHUNK
            run = ctr * _ONES + _STEPS
        else:  # the first nb blocks of the run only
            nb = (take + 15) >> 4
            sh = (_BLOCKS - nb) << 7
            run = ctr * (_ONES >> sh) + (_STEPS >> sh)
        ecb.encrypt(run.to_bytes((take + 15) & ~15, "big"), ks)
        k = int.from_bytes(kv[:take], "big")
        parts.append((int.from_bytes(mv[off : off + take], "big") ^ k).to_bytes(take, "big"))
        off += take
        ctr += _BLOCKS
    return parts


def join(parts):
    """One bytes object from ctr_parts' pieces (no copy for a single piece)."""
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def _feed(cbc, data, scratch):
    """CBC-encrypt whole blocks of `data` into `scratch` chunk by chunk;
    returns the end offset of the last output block in `scratch`."""
    n = len(data)
    if n <= _CHUNK:
        cbc.encrypt(data, scratch)
        return n
    mv = data if isinstance(data, memoryview) else memoryview(data)
    off = 0
    take = 0
    while off < n:
        take = n - off
        if take > _CHUNK:
            take = _CHUNK
        cbc.encrypt(mv[off : off + take], scratch)
        off += take
    return take


def check_key(key, tag_len):
    """KeyLengthError unless the key and tag lengths are offered."""
    if len(key) not in _KEY_LENS:
        raise KeyLengthError("AES-CCM key must be 16 or 32 bytes")
    if tag_len not in _TAG_LENS:
        raise KeyLengthError("AES-CCM tag length must be 4..16 and even")


def check_nonce(nonce, n):
    """Return L for this nonce, checking that an n-byte message fits."""
    ln = len(nonce)
    if ln < _MIN_NONCE or ln > _MAX_NONCE:
        raise KeyLengthError("AES-CCM nonce must be 7..13 bytes")
    q = 15 - ln
    if n >> (q << 3):
        raise UsageError("message too long for the CCM length field")
    return q


class CCM:
    """AES-CCM with a fixed key and tag length M (RFC 3610 §2)."""

    def __init__(self, key, tag_len=16):
        check_key(key, tag_len)
        self._key = bytes(key)
        self._m = tag_len
        self._ecb = aes_ecb(self._key)
        self._ks = bytearray(_CHUNK)  # keystream / CBC-MAC scratch

    def _mac(self, nonce, aad, msg, n, q):
        """CBC-MAC of B0 || AAD || msg XOR S0: (16-byte int, A0 as int)."""
        la = len(aad)
        nv = int.from_bytes(nonce, "big") << (q << 3)
        # B0 flags: Adata, M' = (M-2)/2 in bits 5..3, L' = L-1 (RFC 3610 §2.2)
        flags = (0x40 if la else 0) | ((self._m - 2) << 2) | (q - 1)
        hdr = ((flags << 120) | nv | n).to_bytes(16, "big")
        if la:
            if la < 0xFF00:  # RFC 3610 §2.2 length encodings of l(a)
                hdr += la.to_bytes(2, "big")
            elif la < 0x100000000:
                hdr += b"\xff\xfe" + la.to_bytes(4, "big")
            else:
                hdr += b"\xff\xff" + la.to_bytes(8, "big")
            hdr += bytes(aad)
            pad = -len(hdr) & 15
            if pad:
                hdr += _ZERO16[:pad]
        buf = self._ks
        cbc = aes_cbc(self._key, _ZERO16)
        end = _feed(cbc, hdr, buf)
        full = n & ~15
        if full:
            end = _feed(cbc, msg[:full] if full < n else msg, buf)
        if full < n:
            last = bytearray(16)
            last[: n - full] = msg[full:]
            cbc.encrypt(last, buf)
            end = 16
        t = int.from_bytes(buf[end - 16 : end], "big")
        a0 = ((q - 1) << 120) | nv  # A0 = flags(L-1) || nonce || 0 (RFC 3610 §2.3)
        s0 = self._ecb.encrypt(a0.to_bytes(16, "big"))
        return t ^ int.from_bytes(s0, "big"), a0

    def seal(self, nonce, aad, plaintext):
        """Return ciphertext || tag (RFC 3610 §2.2-2.4)."""
        n = len(plaintext)
        q = check_nonce(nonce, n)
        mv = plaintext if isinstance(plaintext, memoryview) else memoryview(plaintext)
        t, a0 = self._mac(nonce, aad, mv, n, q)
        parts = ctr_parts(self._ecb, a0 + 1, mv, self._ks)
        m = self._m
        parts.append((t >> ((16 - m) << 3)).to_bytes(m, "big"))
        return b"".join(parts)

    def open(self, nonce, aad, data):
        """Return the plaintext of ciphertext || tag, or raise AuthError
        (RFC 3610 §2.5); nothing is released when the tag is wrong."""
        m = self._m
        n = len(data) - m
        q = check_nonce(nonce, n if n > 0 else 0)
        if n < 0:
            raise AuthError()  # AES-CCM input shorter than the tag
        mv = data if isinstance(data, memoryview) else memoryview(data)
        a0 = ((q - 1) << 120) | (int.from_bytes(nonce, "big") << (q << 3))
        pt = join(ctr_parts(self._ecb, a0 + 1, mv[:n], self._ks))
        t = self._mac(nonce, aad, memoryview(pt), n, q)[0]
        if not tags_equal((t >> ((16 - m) << 3)).to_bytes(m, "big"), mv[n:]):
            raise AuthError()  # AES-CCM tag mismatch
        return pt
