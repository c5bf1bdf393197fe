"""HMAC-SHA-256 (RFC 2104), HKDF (RFC 5869) and TLS 1.3 HKDF-Expand-Label /
Derive-Secret (RFC 8446 §7.1), pure Python over hashlib on every interpreter."""

# Theory of operation.  HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)),
# K' = the key (hashed first when longer than the 64-byte block), zero-padded
# to 64 bytes.  MicroPython's hashlib.sha256 has no copy() and its digest()
# finalises, so the hash states after the pad blocks cannot be cached;
# instead the two padded keys are precomputed once (one big-int XOR, no
# per-byte loop) and each MAC starts two fresh hash objects from them.
# HKDF-Expand reuses one pair of padded keys for all its T(i) blocks.
# hashlib is C on both interpreters, so there is no backend.FAST switch here.
# One-shot HMAC only (no incremental object): nothing in the firmware needs
# one, and each class costs heap when the module is loaded from .mpy.
# Comments rather than a long docstring: compiled from source (tests import
# this module as .py under a 32 KiB heap) the lexer holds a docstring in RAM,
# about 0.9 KiB for this text; a .mpy (mpy-cross) stores no docstrings.
from atls.crypto.backend import sha256
from atls.errors import UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


HASH_LEN = const(32)  # SHA-256 output length (RFC 6234); Hash.length in RFC 8446 §7.1
_BLOCK = const(64)  # SHA-256 block size B (RFC 2104 §2)
_MAX_OKM = const(8160)  # 255 * HashLen (RFC 5869 §2.3)
_MAX_LABEL = const(249)  # opaque label<7..255> minus the 6-byte "tls13 " prefix (RFC 8446 §7.1)
_MAX_CONTEXT = const(255)  # opaque context<0..255> (RFC 8446 §7.1)

# RFC 2104 §2: ipad = 0x36 and opad = 0x5C repeated B times, as 512-bit ints
# (0x0101..01 = (2^512 - 1) / 255 times the byte).
_IPAD = const(0x36 * ((2**512 - 1) // 255))
_OPAD = const(0x5C * ((2**512 - 1) // 255))
_LABEL_PREFIX = const(b"tls13 ")  # RFC 8446 §7.1


def _pads(key):
    # (K' ^ ipad, K' ^ opad) as two 64-byte strings (RFC 2104 §2 steps 1-2, 5)
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    k = int.from_bytes(key, "big") << (8 * (_BLOCK - len(key)))  # right zero-pad
    return (k ^ _IPAD).to_bytes(_BLOCK, "big"), (k ^ _OPAD).to_bytes(_BLOCK, "big")


def _mac(ipad, opad, a, b=None, c=None):
    # HMAC over a || b || c with precomputed padded keys
    h = sha256(ipad)
    h.update(a)
    if b is not None:
        h.update(b)
    if c is not None:
        h.update(c)
    o = sha256(opad)
    o.update(h.digest())
    return o.digest()


def hmac_sha256(key, data):
    """HMAC-SHA-256(key, data) -> 32 bytes, any key length (RFC 2104)."""
    ipad, opad = _pads(key)
    return _mac(ipad, opad, data)


def hkdf_extract(salt, ikm):
    """HKDF-Extract -> PRK (RFC 5869 §2.2); salt None/b"" = 32 zero bytes."""
    return hmac_sha256(salt or bytes(HASH_LEN), ikm)  # RFC 5869 §2.2: HashLen zeros


def hkdf_expand(prk, info, length):
    """HKDF-Expand(PRK, info, L) (RFC 5869 §2.3); L > 255*32 -> UsageError."""
    # T(i) = HMAC(PRK, T(i-1) | info | i), output = first L bytes of T(1)|T(2)|..
    # RFC 5869 asks for len(PRK) >= HashLen; not enforced (caller's PRK comes
    # from hkdf_extract or the TLS key schedule).
    if length < 0 or length > _MAX_OKM:
        raise UsageError("HKDF length > 8160")
    if info is None:
        info = b""
    ipad, opad = _pads(prk)
    t = _mac(ipad, opad, info, b"\x01")  # T(1) = HMAC(PRK, "" | info | 0x01)
    if length <= HASH_LEN:  # the common TLS case: one block, no buffer
        return t[:length]
    out = bytearray(length)  # filled in place: peak RAM ~ 2 x length
    out[:HASH_LEN] = t
    pos = HASH_LEN
    i = 2
    while pos < length:
        t = _mac(ipad, opad, t, info, bytes((i,)))
        k = length - pos
        if k >= HASH_LEN:
            out[pos : pos + HASH_LEN] = t
            pos += HASH_LEN
        else:
            out[pos:] = t[:k]
            pos = length
        i += 1
    return bytes(out)


def hkdf_expand_label(secret, label, context, length):
    """HKDF-Expand-Label (RFC 8446 §7.1); label WITHOUT the "tls13 " prefix."""
    # HkdfLabel = uint16 length || opaque label<7..255> ("tls13 " + label)
    #             || opaque context<0..255>
    # UsageError: label empty or > 249 bytes, context > 255, length > 8160.
    n = len(label)
    if n < 1 or n > _MAX_LABEL or len(context) > _MAX_CONTEXT:
        raise UsageError("HkdfLabel label/context size")
    if length < 0 or length > _MAX_OKM:
        raise UsageError("HKDF length > 8160")
    hl = bytearray(10 + n + len(context))
    hl[0] = length >> 8
    hl[1] = length & 0xFF
    hl[2] = 6 + n
    hl[3:9] = _LABEL_PREFIX
    hl[9 : 9 + n] = label
    hl[9 + n] = len(context)
    hl[10 + n :] = context
    return hkdf_expand(secret, hl, length)


def derive_secret(secret, label, transcript_hash):
    """Derive-Secret (RFC 8446 §7.1) given the precomputed Transcript-Hash."""
    return hkdf_expand_label(secret, label, transcript_hash, HASH_LEN)
