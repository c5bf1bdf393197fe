"""NIST P-256 (secp256r1): ECDH, ECDSA verify and RFC 6979 deterministic sign.

Theory of operation
-------------------
Curve y^2 = x^3 - 3x + b over GF(p) (SEC 2 v2 §2.4.2, FIPS 186-4 §D.1.2.3),
prime group order n, cofactor 1.  Field elements are plain Python ints reduced
with ``%`` (one mpz division is cheaper than the dozen big-int bytecode ops
of a Solinas reduction).  Points live in Jacobian coordinates
(X, Y, Z) ~ (X/Z^2, Y/Z^3); Z == 0 is the point at infinity.  Doubling uses
the a = -3 formula (dbl-2001-b), addition the add-1998-cmo-2 / mixed madd
formulas; one final inversion returns to affine.  Inversions use the
extended Euclidean algorithm (5x faster than Fermat's pow on MicroPython),
blinded by a random factor whenever the value depends on a secret.

Scalar multiplication:
- secret scalars (ECDH, key generation, signing): a regular signed fixed
  window.  k is made odd (k or n - k, result negated back), then recoded into
  64 odd digits in [-15, 15] plus a top digit that is always 1, so every
  window does exactly 4 doublings and 1 addition from a table of 8 odd
  multiples (P, 3P, .., 15P).  The digits come straight from the bits of
  k >> 1 (see _mul_secret): no digit array on the heap.  The only branch on
  intermediate values is the exceptional "add a point to itself" case of the
  addition formula, reached only when k or n - k is below 31.
- public scalars (ECDSA verify): u1*G + u2*Q interleaved (Shamir) with
  width-4 sliding windows, odd-multiple tables of 8 points each: G's table is
  affine constants (_GT), Q's is Jacobian and built per call.
  The x-coordinate test r == x(R) mod n is done projectively (r*Z^2 == X),
  saving the final inversion.

Constant-time caveats (honest): Python big-int arithmetic, ``%``, ``pow`` and
list indexing are not constant time, so this code is *not* side-channel
hardened.  What it does: a fixed number of windows and additions per secret
scalar, branch-free digit/sign selection in Python arithmetic, blinded
inversions of secret-derived values (Z, the nonce k), no early exits on
secret data.  Table indexing by a
secret digit and big-int operand-size effects remain.

Peer input: public keys must be 65 bytes 0x04||X||Y with X, Y < p and on the
curve (InvalidPointError).  ECDSA signatures must be strict DER (X.690 §10,
as Wycheproof demands) with 1 <= r, s < n, anything else is AuthError.

On CPython with backend.FAST the facade checks inputs in pure code exactly as
above, then lets ``cryptography`` do the arithmetic; set ``p256.native =
None`` (or ATLS_PURE_CRYPTO=1) for the pure path.
"""

from atls.crypto import backend
from atls.errors import AuthError, InvalidPointError, KeyLengthError, UsageError

# SEC 2 v2 §2.4.2 / FIPS 186-4 §D.1.2.3 domain parameters (a = -3).
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

_INF = (1, 1, 0)
# Affine odd multiples G, 3G, .., 15G (the fixed-base table; constants so a
# frozen module keeps them in flash).  tests/test_p256.py checks k*G for each.
_GT = (
    (
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    ),  # 1G
    (
        0x5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C,
        0x8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032,
    ),  # 3G
    (
        0x51590B7A515140D2D784C85608668FDFEF8C82FD1F5BE52421554A0DC3D033ED,
        0xE0C17DA8904A727D8AE1BF36BF8A79260D012F00D4D80888D1D0BB44FDA16DA4,
    ),  # 5G
    (
        0x8E533B6FA0BF7B4625BB30667C01FB607EF9F8B8A80FEF5B300628703187B2A3,
        0x73EB1DBDE03318366D069F83A6F5900053C73633CB041B21C55E1A86C1F400B4,
    ),  # 7G
    (
        0xEA68D7B6FEDF0B71878938D51D71F8729E0ACB8C2C6DF8B3D79E8A4B90949EE0,
        0x2A2744C972C9FCE787014A964A8EA0C84D714FEAA4DE823FE85A224A4DD048FA,
    ),  # 9G
    (
        0x3ED113B7883B4C590638379DB0C21CDA16742ED0255048BF433391D374BC21D1,
        0x9099209ACCC4C8A224C843AFA4F4C68A090D04DA5E9889DAE2F8EEFCE82A3740,
    ),  # 11G
    (
        0x177C837AE0AC495A61805DF2D85EE2FC792E284B65EAD58A98E15D9D46072C01,
        0x63BB58CD4EBEA558A24091ADB40F4E7226EE14C3A1FB4DF39C43BBE2EFC7BFD8,
    ),  # 13G
    (
        0xF0454DC6971ABAE7ADFB378999888265AE03AF92DE3A0EF163668C63E59B9D5F,
        0xB5B93EE3592E2D1F4E6594E51F9643E62A3B21CE75B5FA3F47E59CDE0D034F36,
    ),  # 15G
)
_GX, _GY = _GT[0]  # the base point G (FIPS 186-4 §D.1.2.3), shared with the table


# --- Jacobian arithmetic (https://hyperelliptic.org/EFD/g1p/auto-shortw-jacobian-3.html)


def _dbl(X, Y, Z):
    """2*(X, Y, Z), a = -3 (dbl-2001-b).  Infinity (Z == 0) maps to itself."""
    p = _P
    d = Z * Z % p
    g = Y * Y % p
    b = X * g % p
    a = 3 * (X - d) * (X + d) % p
    X3 = (a * a - 8 * b) % p
    return X3, (a * (4 * b - X3) - 8 * g * g) % p, 2 * Y * Z % p


def _add(X1, Y1, Z1, X2, Y2, Z2):
    """(X1, Y1, Z1) + (X2, Y2, Z2), complete over the exceptional cases."""
    if Z1 == 0:
        return X2, Y2, Z2
    if Z2 == 0:
        return X1, Y1, Z1
    p = _P
    z1 = Z1 * Z1 % p
    z2 = Z2 * Z2 % p
    U1 = X1 * z2 % p
    S1 = Y1 * Z2 * z2 % p
    H = X2 * z1 % p - U1
    R = Y2 * Z1 * z1 % p - S1
    if H == 0:
        if R == 0:
            return _dbl(X1, Y1, Z1)
        return _INF
    HH = H * H % p
    HHH = H * HH % p
    V = U1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - S1 * HHH) % p, Z1 * Z2 * H % p


def _madd(X1, Y1, Z1, x2, y2):
    """(X1, Y1, Z1) + affine (x2, y2) (madd), complete over exceptional cases."""
    if Z1 == 0:
        return x2, y2, 1
    p = _P
    z1 = Z1 * Z1 % p
    H = x2 * z1 % p - X1
    R = y2 * Z1 * z1 % p - Y1
    if H == 0:
        if R == 0:
            return _dbl(X1, Y1, Z1)
        return _INF
    HH = H * H % p
    HHH = H * HH % p
    V = X1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - Y1 * HHH) % p, Z1 * H % p


def _inv(a, m):
    """a^-1 mod m (m prime, 0 < a < m) by the extended Euclidean algorithm:
    ~5x faster than pow(a, m - 2, m) on MicroPython, but its running time
    depends on a, so secret values go through _inv_blind."""
    x0 = 1
    x1 = 0
    b = m
    while b:
        q = a // b
        a, b = b, a - q * b
        x0, x1 = x1, x0 - q * x1
    return x0 % m


def _inv_blind(a, m):
    """a^-1 mod m with a random multiplicative blind: 1/a = r / (a*r)."""
    r = 0
    while not r:
        r = int.from_bytes(backend.random_bytes(32), "big") % m
    return _inv(a * r % m, m) * r % m


def _affine(X, Y, Z):
    """Jacobian -> affine; Z is a secret-dependent value, so the inversion is blinded."""
    p = _P
    zi = _inv_blind(Z, p)
    zi2 = zi * zi % p
    return X * zi2 % p, Y * zi2 * zi % p


def _odd_table(X, Y, Z):
    """[P, 3P, 5P, .., 15P] in Jacobian coordinates."""
    t = [(X, Y, Z)]
    D = _dbl(X, Y, Z)
    for _ in range(7):
        X, Y, Z = _add(X, Y, Z, D[0], D[1], D[2])
        t.append((X, Y, Z))
    return t


def _mul_secret(k, table, affine):
    """k*P for secret 1 <= k < n; table = odd multiples of P (affine or
    Jacobian).  Returns Jacobian (X, Y, Z).  Regular window, see module doc.

    For odd k < 2^257 and T = k >> 1 with 4-bit windows t_i (i < 64):
    k = 16^64 + sum (2 t_i - 15) 16^i, so every digit 2 t_i - 15 is odd in
    [-15, 15] and the top digit is 1: no digit array, no zero digits."""
    p = _P
    odd = k & 1
    k = k + (1 - odd) * (_N - 2 * k)  # k if odd else n - k (both odd)
    tb = (k >> 1).to_bytes(32, "big")
    e = table[0]
    X, Y, Z = (e[0], e[1], 1) if affine else e
    for i in range(63, -1, -1):
        X, Y, Z = _dbl(X, Y, Z)
        X, Y, Z = _dbl(X, Y, Z)
        X, Y, Z = _dbl(X, Y, Z)
        X, Y, Z = _dbl(X, Y, Z)
        t = tb[31 - (i >> 1)] >> ((i & 1) << 2) & 15
        s = 1 - (t >> 3)  # 1 if the digit 2t - 15 is negative
        e = table[(t ^ (7 * s)) & 7]  # |2t - 15| >> 1
        y = e[1] + s * (p - 2 * e[1])  # negate without a branch
        if affine:
            X, Y, Z = _madd(X, Y, Z, e[0], y)
        else:
            X, Y, Z = _add(X, Y, Z, e[0], y, e[2])
    Y = Y + (1 - odd) * (p - 2 * Y)  # undo the n - k substitution
    return X, Y % p, Z


def _mul2(u1, u2, Qx, Qy):
    """u1*G + u2*Q for public 0 <= u1, u2 < n (Shamir's trick): left-to-right
    sliding windows of width 4 over both scalars at once, odd-multiple tables;
    reads bits from 32-byte strings, so no digit arrays are allocated."""
    gt = _GT
    qt = _odd_table(Qx, Qy, 1)
    a = u1.to_bytes(32, "big")
    b = u2.to_bytes(32, "big")
    X, Y, Z = _INF
    ja = jb = -1  # bit position where the pending window of u1 / u2 ends
    va = vb = 0
    for i in range(255, -1, -1):
        if Z:
            X, Y, Z = _dbl(X, Y, Z)
        if ja < 0 and a[31 - (i >> 3)] >> (i & 7) & 1:
            ja = i - 3 if i >= 3 else 0
            while not a[31 - (ja >> 3)] >> (ja & 7) & 1:
                ja += 1
            va = (u1 >> ja) & ((1 << (i - ja + 1)) - 1)
        if ja == i:
            e = gt[va >> 1]
            X, Y, Z = _madd(X, Y, Z, e[0], e[1])
            ja = -1
        if jb < 0 and b[31 - (i >> 3)] >> (i & 7) & 1:
            jb = i - 3 if i >= 3 else 0
            while not b[31 - (jb >> 3)] >> (jb & 7) & 1:
                jb += 1
            vb = (u2 >> jb) & ((1 << (i - jb + 1)) - 1)
        if jb == i:
            e = qt[vb >> 1]
            X, Y, Z = _add(X, Y, Z, e[0], e[1], e[2])
            jb = -1
    return X, Y, Z


# --- encodings ---------------------------------------------------------------


def _decode_point(pub):
    """SEC 1 v2 §2.3.4 uncompressed point, validated (-> (x, y))."""
    try:
        if len(pub) != 65 or pub[0] != 4:
            raise InvalidPointError()  # P-256: need 65-byte uncompressed point
        x = int.from_bytes(pub[1:33], "big")
        y = int.from_bytes(pub[33:65], "big")
    except TypeError:
        raise InvalidPointError()  # P-256: public key must be bytes
    p = _P
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + _B)) % p:
        raise InvalidPointError()  # P-256: point not on curve
    return x, y


def _encode_point(x, y):
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _scalar(priv):
    """Private key bytes -> int in [1, n - 1] (caller mistake otherwise)."""
    if not isinstance(priv, (bytes, bytearray, memoryview)) or len(priv) != 32:
        raise KeyLengthError("P-256 private key must be 32 bytes")
    k = int.from_bytes(priv, "big")
    if k == 0 or k >= _N:
        raise UsageError("P-256 private key out of range")
    return k


def _der_int(b, i):
    """Strict DER INTEGER at b[i:] (X.690 §8.3, §10): positive, minimal."""
    if i + 2 > len(b) or b[i] != 2:
        raise AuthError()  # ECDSA: bad DER
    ln = b[i + 1]
    i += 2
    if ln == 0 or ln > 33 or i + ln > len(b) or b[i] & 0x80:
        raise AuthError()  # ECDSA: bad DER
    if ln > 1 and b[i] == 0 and not b[i + 1] & 0x80:
        raise AuthError()  # ECDSA: bad DER
    return int.from_bytes(b[i : i + ln], "big"), i + ln


def _parse_der(sig):
    if not isinstance(sig, (bytes, bytearray, memoryview)):
        raise AuthError()  # ECDSA: signature must be bytes
    if len(sig) < 8 or sig[0] != 0x30 or sig[1] != len(sig) - 2:
        raise AuthError()  # ECDSA: bad DER
    r, i = _der_int(sig, 2)
    s, i = _der_int(sig, i)
    if i != len(sig):
        raise AuthError()  # ECDSA: bad DER
    return r, s


def _digest_int(digest):
    """bits2int (RFC 6979 §2.3.2) for a 256-bit group order."""
    e = int.from_bytes(digest, "big")
    if len(digest) > 32:
        e >>= 8 * len(digest) - 256
    return e


# --- public API --------------------------------------------------------------


def public_key(priv):
    """priv32 -> 65-byte uncompressed public key."""
    k = _scalar(priv)
    if native:
        return native.public_key(k)
    xy = limbs and limbs.mul(k, _gtab())
    return _encode_point(*(xy or _affine(*_mul_secret(k, _GT, True))))


def generate_keypair():
    """(priv32, pub65) from the OS CSPRNG (rejection sampling into [1, n-1])."""
    while True:
        priv = backend.random_bytes(32)
        k = int.from_bytes(priv, "big")
        if 0 < k < _N:
            return priv, public_key(priv)


def ecdh(priv, peer_pub):
    """SEC 1 §3.3.1 ECDH: x-coordinate (32 bytes) of priv * peer point."""
    k = _scalar(priv)
    x, y = _decode_point(peer_pub)
    if native:
        return native.ecdh(k, peer_pub)
    xy = limbs and limbs.mul(k, limbs.odd_table(x, y, _inv))
    if xy:
        return xy[0].to_bytes(32, "big")
    X, Y, Z = _mul_secret(k, _odd_table(x, y, 1), False)
    if Z == 0:  # impossible for a validated point of prime order; kept as a guard
        raise InvalidPointError()  # P-256: shared secret is the point at infinity
    return _affine(X, Y, Z)[0].to_bytes(32, "big")


def ecdsa_verify_raw(pub, digest, r, s):
    """SEC 1 §4.1.4 verify of (r, s) over a message digest; True if valid."""
    Qx, Qy = _decode_point(pub)
    n = _N
    if not (0 < r < n and 0 < s < n):
        return False
    e = _digest_int(digest)
    if native and len(digest) == 32:
        return native.verify_digest(pub, digest, r, s)
    w = _inv(s, n)
    u1, u2 = e * w % n, r * w % n
    xyz = limbs and u1 and u2 and _gtab() and limbs.mul2(u1, u2, limbs.odd_table(Qx, Qy, _inv))
    X, Y, Z = xyz or _mul2(u1, u2, Qx, Qy)  # native None: exceptional, pure code
    if Z == 0:
        return False
    p = _P
    z2 = Z * Z % p
    if r * z2 % p == X:  # x(R) == r
        return True
    return r + n < p and (r + n) * z2 % p == X  # x(R) == r + n, n <= x < p


def ecdsa_verify(pub, message, sig):
    """Verify a DER ECDSA-SHA256 signature (RFC 8446 ecdsa_secp256r1_sha256).
    Returns None; AuthError on any failure, InvalidPointError for a bad key."""
    _decode_point(pub)
    r, s = _parse_der(sig)
    if not ecdsa_verify_raw(pub, backend.sha256(message).digest(), r, s):
        raise AuthError()  # ECDSA: signature does not verify


def __getattr__(name):
    # ecdsa_sign (client certificates only) lives in atls.crypto.p256_sign and
    # is loaded on first use: a device that only verifies never holds its code.
    if name == "ecdsa_sign":
        from atls.crypto.p256_sign import ecdsa_sign

        return ecdsa_sign
    raise AttributeError(name)


# the host's `cryptography` (CPython, backend.FAST) or None
native = backend.native.P256 if backend.FAST else None
try:  # MicroPython's native emitter: fixed-size limbs, constant-time ladder
    from atls.crypto import native_p256 as limbs
except Exception:  # CPython, another arch's .mpy, no emitter: pure ints
    limbs = None
IMPL = "cryptography" if native else "native" if limbs else "pure"
_GTAB = []  # G's odd multiples as native limbs, built on first use


def _gtab():
    if not _GTAB:
        _GTAB.append(limbs.table(_GT))
    return _GTAB[0]


def prepare():
    """Allocate the native code's buffers and G's table now: DeviceSession.preload
    calls it at boot, while the heap is whole; mid-handshake a fragmented heap may
    have no 2.5 KiB in one piece left (MemoryError with most of the heap free)."""
    if limbs:
        _gtab()
