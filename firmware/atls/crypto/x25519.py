"""X25519 Diffie-Hellman (RFC 7748 §5, §6.1): Montgomery ladder on Python
ints, one final inversion; all-zero shared secrets raise InvalidPointError."""

# Theory of operation.  Field elements are plain ints mod p = 2^255 - 19 (big
# ints are C code on MicroPython and CPython, so the 255-step ladder costs a
# few ms).  _ladder follows the RFC 7748 §5 pseudo-code: projective (X:Z)
# coordinates, a24 = 121665, each product reduced with % p, and one inversion
# at the end by Fermat, pow(z, p - 2, p).
# The conditional swap is arithmetic, not a branch on the secret bit:
# mask = -swap (0 or all ones), d = mask & (a ^ b), a ^= d, b ^= d (the RFC's
# cswap).  Timing caveat, stated honestly: Python big ints are not constant
# time.  Their cost follows operand length (leading zero limbs are stripped),
# multiplication/reduction may take data-dependent paths, and mask & x is
# cheaper for mask == 0.  So the ladder has no secret-dependent control flow,
# but the code does not claim constant-time execution.
# Inputs (§5): the scalar is clamped (bits 0-2 and 255 cleared, bit 254 set),
# the u-coordinate's top bit is masked and values >= p are reduced.  §6.1 and
# RFC 8446 §7.4.2: an all-zero result (low-order peer point) raises
# InvalidPointError, checked by one comparison on the integer result rather
# than a per-byte loop.
# With backend.FAST (CPython) x25519/x25519_base delegate to `cryptography`
# (its ValueError for an all-zero result becomes InvalidPointError);
# x25519_pure/x25519_base_pure stay reachable for tests.  On MicroPython the
# ladder runs on native field arithmetic (atls.crypto.native_f25519: fixed-size
# limbs, constant time by construction) wherever that module loads;
# x25519_native/x25519_base_native are None where it does not.
from atls.crypto import backend
from atls.errors import InvalidPointError, KeyLengthError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_KEY_LEN = const(32)  # scalars and u-coordinates are 32 bytes (RFC 7748 §5)
_A24 = const(121665)  # (A - 2) / 4, A = 486662 (RFC 7748 §4.1, §5)
_BASE_U = const(9)  # base point u = 9 (RFC 7748 §4.1)
_P = const(2**255 - 19)  # field prime (RFC 7748 §4.1)
_U_MASK = const(2**255 - 1)  # clears the u-coordinate's top bit (RFC 7748 §5)


def _ladder(k, u):
    # k * u (x-only) for clamped scalar bytes k and a reduced int u; returns an
    # int.  Bits are read from the bytes (small-int ops, no big-int shifts).
    p = _P
    x1 = x3 = u
    x2 = z3 = 1
    z2 = swap = 0
    for t in range(254, -1, -1):
        kt = (k[t >> 3] >> (t & 7)) & 1
        swap ^= kt
        m = -swap  # 0 or -1 (all ones): arithmetic cswap
        d = m & (x2 ^ x3)
        x2 ^= d
        x3 ^= d
        d = m & (z2 ^ z3)
        z2 ^= d
        z3 ^= d
        swap = kt
        a = x2 + z2
        aa = a * a % p
        b = x2 - z2
        bb = b * b % p
        e = aa - bb
        d = x3 - z3
        da = d * a % p
        cb = (x3 + z3) * b % p
        x3 = da + cb
        x3 = x3 * x3 % p
        z3 = da - cb
        z3 = x1 * (z3 * z3 % p) % p
        x2 = aa * bb % p
        z2 = e * (aa + _A24 * e) % p
    # The RFC's final cswap(swap) is omitted: swap is now bit 0 of k, which
    # clamping always clears.
    return x2 * pow(z2, p - 2, p) % p


def _scalar(s):
    # decodeScalar25519 (RFC 7748 §5): clear bits 0-2 and 255, set bit 254
    if len(s) != _KEY_LEN:
        raise KeyLengthError("X25519 scalar != 32 bytes")
    k = bytearray(s)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return k


def x25519_pure(scalar, u):
    """X25519(k, u) -> 32 bytes (RFC 7748 §5), pure Python."""
    k = _scalar(scalar)
    if len(u) != _KEY_LEN:
        raise KeyLengthError("X25519 u != 32 bytes")
    r = _ladder(k, (int.from_bytes(u, "little") & _U_MASK) % _P)
    if r == 0:  # RFC 7748 §6.1, RFC 8446 §7.4.2
        raise InvalidPointError()  # X25519 all-zero shared secret
    return r.to_bytes(_KEY_LEN, "little")


def x25519_base_pure(scalar):
    """Public key X25519(k, 9), pure Python."""
    return _ladder(_scalar(scalar), _BASE_U).to_bytes(_KEY_LEN, "little")


def x25519_native(scalar, u):
    """X25519(k, u) on the native field arithmetic (atls.crypto.native_f25519)."""
    k = _scalar(scalar)
    if len(u) != _KEY_LEN:
        raise KeyLengthError("X25519 u != 32 bytes")
    r = _native.x25519(k, (int.from_bytes(u, "little") & _U_MASK) % _P)
    if r == 0:  # RFC 7748 §6.1, RFC 8446 §7.4.2
        raise InvalidPointError()  # X25519 all-zero shared secret
    return r.to_bytes(_KEY_LEN, "little")


def x25519_base_native(scalar):
    """Public key X25519(k, 9) on the native field arithmetic."""
    return _native.x25519(_scalar(scalar), _BASE_U).to_bytes(_KEY_LEN, "little")


try:  # MicroPython with a native emitter and a .mpy of this arch (or source)
    from atls.crypto import native_f25519 as _native
except Exception:  # CPython, another arch's .mpy, no emitter: pure ladder
    _native = x25519_native = x25519_base_native = None

if backend.FAST:  # CPython with `cryptography` (backend.native)
    x25519 = backend.native.x25519
    x25519_base = backend.native.x25519_base
elif _native:
    x25519 = x25519_native
    x25519_base = x25519_base_native
else:
    x25519 = x25519_pure
    x25519_base = x25519_base_pure


def generate_keypair():
    """(private32, public32); the private key is random (clamped on use)."""
    priv = backend.random_bytes(_KEY_LEN)
    return priv, x25519_base(priv)
