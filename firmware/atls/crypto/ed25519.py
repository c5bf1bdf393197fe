"""Ed25519 signature verification (RFC 8032 §5.1), pure Python ints.

Theory of operation
-------------------
Twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2 over GF(2^255 - 19)
(RFC 8032 §5.1).  Points are extended homogeneous coordinates (X, Y, Z, T)
with x = X/Z, y = Y/Z, x*y = T/Z; the addition and doubling formulas are the
ones in RFC 8032 §5.1.4 (unified and complete, so no special cases).  Table
points are stored "cached" as (Y-X, Y+X, 2d*T, 2Z) so an addition costs
8 multiplications.

verify(A, M, sig) follows §5.1.7 *cofactorless*: S must be < L (else
reject: malleability, §8.4), A must decode per §5.1.3 (y < p canonical,
x^2 a square, x = 0 only with sign bit 0), k = SHA-512(R || A || M) mod L,
and we accept iff encode([S]B - [k]A) == R bytewise.  Comparing encodings
is the same as decoding R and comparing points for canonical R, and rejects
every non-canonical or undecodable R (nothing encodes to it), which is what
Wycheproof expects.  [S]B + [k](-A) is one interleaved double-scalar
multiplication (Shamir's trick) with width-4 sliding windows over tables of
the odd multiples 1..15 (B's is a constant table of 8 affine points, A's is
built per call).
Only public data is processed: no constant-time care is needed or taken.

Errors: a public key that is not 32 bytes or does not decode ->
InvalidPointError; anything wrong with the signature -> AuthError.
On MicroPython, once atls.crypto.x25519 has loaded the native Curve25519
field, the group arithmetic runs on it (atls.crypto.native_ed25519), the
same loop.
On CPython with backend.FAST the same input checks run in pure code, then
``cryptography`` does the group arithmetic (``ed25519.native = None`` or
ATLS_PURE_CRYPTO=1 selects the pure path).
"""

import sys

from atls.crypto import backend
from atls.crypto.sha512 import SHA512
from atls.errors import AuthError, InvalidPointError

# RFC 8032 §5.1 parameters.
_P = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED  # 2^255 - 19
_D = 0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3  # -121665/121666
_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED  # 2^252 + ...
_SQRTM1 = 0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0  # sqrt(-1)
_BX = 0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A
_BY = 0x6666666666666666666666666666666666666666666666666666666666666658  # 4/5

# Affine "niels" odd multiples of B, (y-x, y+x, 2d*x*y) for 1B, 3B, .., 15B:
# the fixed-base table as constants, so a frozen module keeps it in flash
# (tests/test_ed25519.py checks [S]B for each).
_BT = (
    (
        0x44FD2F9298F81267A5C18434688F8A09FD399F05D140BEB39D103905D740913E,
        0x07CF9D3A33D4BA65270B4898643D42C2CF932DC6FB8C0E192FBC93C6F58C3B85,
        0x6F117B689F0C65A85A1B7DCBDD43598C26D9E823CCAAC49EABC91205877AAA68,
    ),  # 1B
    (
        0x2AB91587555BDA628131F31A214BD6BD3BD353FDE5C1BA7D56611FE8A4FCD265,
        0x7A164E1B9A80F8F4C11B50029F016732025A8430E8864B8AAF25B0A84CEE9730,
        0x5A2826AF12B9B4C6D170E5458CF2DB4C589423221C35DA6214AE933F0DD0D889,
    ),  # 3B
    (
        0x154A7E73EB1B55F3E33CF11CB864A087D50014D14B2729B77F9182C3A447D6BA,
        0x2945CCF146E206EBDD1BEB0C5ABFEC448D5048C3C75EED02A212BC4408A5BB33,
        0x43AABE696B3BB69AB41B670B1BBDA72D270E0807D0BDD1FCBCBBDBF1812A8285,
    ),  # 5B
    (
        0x1D6EDD5D2E5317E09DEA764F92192C3A6CA021533BBA23A7BA6F2C9AAA3221B1,
        0x461BEA69283C927E71B2528228542E497470353AB39DC0D26B1A5CD0944EA3BF,
        0x7A9FBB1C6A0F90A7529C41BA5877ADF3B3035F47053EA49AF1836DC801B8B3A2,
    ),  # 7B
    (
        0x49C05A51FADC9C8F96CBC608E75EB04498A081B6F520419BF36E217E039D8064,
        0x34B9ED338ADD7F59CEB233C9C686F5B5A6509E6F51BC46C59B2E678AA6A8632F,
        0x73C172021B008B06AAF6FC2993D4CF16E2FF83E8A719D22F06B4E8BF9045AF1B,
    ),  # 9B
    (
        0x18AB598029D5C77FA3A075556A8DEB953ED6B36977088381315F5B0249864348,
        0x4275AAE2546D8FAF113E847117703406E5D9FECF02302E272FBF00848A802ADE,
        0x3DC65522B53DF94844311199B51A8622031EB4A13282E4A4D82B2CC5FD6089E9,
    ),  # 11B
    (
        0x0267882D176024A79D12B232AAAD5968AEFCEBC99B776F6B506F013B327FBF93,
        0x234FD7EEC346F241537A0E12FB07BA07BF84B39AB5BCDEDBBF70C222A2007F6D,
        0x497BA6FDAA097863A2EF37F891A7E5332437E6B1DF8DD4715360A119732EA378,
    ),  # 13B
    (
        0x43B5CD4218D05EBF7508300807B25192D3829BA42A9910D6040BCD86468CCF0B,
        0x61E22917F12DE72B2DBDBDFAC1F2D4D08648C28D189C246D24CECC0313CFEAA0,
        0x511D61210AE4D842032E5A7D93D64270EB38AF4E373FDEEE5D9A762F9BD0B516,
    ),  # 15B
)


def _dbl(X, Y, Z):
    """RFC 8032 §5.1.4 doubling -> (X, Y, Z, T)."""
    p = _P
    A = X * X % p
    B = Y * Y % p
    H = A + B
    E = H - (X + Y) * (X + Y) % p
    G = A - B
    F = 2 * Z * Z % p + G
    return E * F % p, G * H % p, F * G % p, E * H % p


def _add(X, Y, Z, T, q):
    """RFC 8032 §5.1.4 addition with q = (Y2-X2, Y2+X2, 2d*T2, 2*Z2)."""
    p = _P
    A = (Y - X) * q[0] % p
    B = (Y + X) * q[1] % p
    C = T * q[2] % p
    D = Z * q[3] % p
    E = B - A
    F = D - C
    G = D + C
    H = B + A
    return E * F % p, G * H % p, F * G % p, E * H % p


def _madd(X, Y, Z, T, q):
    """Addition with an affine niels point q = (y2-x2, y2+x2, 2d*x2*y2), Z2 = 1."""
    p = _P
    A = (Y - X) * q[0] % p
    B = (Y + X) * q[1] % p
    C = T * q[2] % p
    D = 2 * Z
    E = B - A
    F = D - C
    G = D + C
    H = B + A
    return E * F % p, G * H % p, F * G % p, E * H % p


def _cached(X, Y, Z, T):
    p = _P
    return (Y - X) % p, (Y + X) % p, 2 * _D * T % p, 2 * Z % p


def _odd_table(x, y):
    """Cached odd multiples (1, 3, .., 15) * (x, y)."""
    P = (x, y, 1, x * y % _P)
    D = _cached(*_dbl(x, y, 1))
    t = [_cached(*P)]
    for _ in range(7):
        P = _add(P[0], P[1], P[2], P[3], D)
        t.append(_cached(*P))
    return t


def _decode(s):
    """RFC 8032 §5.1.3 point decoding -> affine (x, y), or None."""
    p = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None  # non-canonical y
    u = (y * y - 1) % p
    v = (_D * y * y + 1) % p
    v3 = v * v * v % p
    t = u * v3 * v3 * v % p
    x = u * v3 * (_limbs.pow22523(t) if _limbs else pow(t, (p - 5) >> 3, p)) % p
    vxx = v * x * x % p
    if vxx != u:
        if vxx != p - u:
            return None  # x^2 = u/v has no root
        x = x * _SQRTM1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def _window(bs, i, u):
    """Sliding window of width 4 starting at set bit i of u (bytes bs, LE)."""
    j = i - 3 if i >= 3 else 0
    while not bs[j >> 3] >> (j & 7) & 1:
        j += 1
    return j, (u >> j) & ((1 << (i - j + 1)) - 1)


def _mul2(s, k, tk):
    """[s]B + [k]P (public scalars < 2^253); tk = cached odd multiples of P."""
    a = s.to_bytes(32, "little")
    b = k.to_bytes(32, "little")
    tb = _BT
    X, Y, Z, T = 0, 1, 1, 0  # neutral element
    ja = jb = -1
    va = vb = 0
    for i in range(252, -1, -1):
        X, Y, Z, T = _dbl(X, Y, Z)
        if ja < 0 and a[i >> 3] >> (i & 7) & 1:
            ja, va = _window(a, i, s)
        if ja == i:
            X, Y, Z, T = _madd(X, Y, Z, T, tb[va >> 1])
            ja = -1
        if jb < 0 and b[i >> 3] >> (i & 7) & 1:
            jb, vb = _window(b, i, k)
        if jb == i:
            X, Y, Z, T = _add(X, Y, Z, T, tk[vb >> 1])
            jb = -1
    return X, Y, Z


def _encode(X, Y, Z):
    """RFC 8032 §5.1.2 encoding; Z^-1 by extended Euclid (public data)."""
    p = _P
    x0 = 1
    x1 = 0
    a = Z % p
    b = p
    while b:
        q = a // b
        a, b = b, a - q * b
        x0, x1 = x1, x0 - q * x1
    zi = x0 % p
    x = X * zi % p
    return (Y * zi % p | (x & 1) << 255).to_bytes(32, "little")


def verify(pub, message, sig):
    """RFC 8032 §5.1.7 Ed25519 verify (cofactorless, strict S < L).
    Returns None; raises AuthError (or InvalidPointError for a bad key)."""
    try:
        pub = bytes(pub)
        sig = bytes(sig)
    except TypeError:
        raise AuthError()  # Ed25519: arguments must be bytes
    if len(pub) != 32:
        raise InvalidPointError()  # Ed25519: public key must be 32 bytes
    A = _decode(pub)
    if A is None:
        raise InvalidPointError()  # Ed25519: public key does not decode
    if len(sig) != 64:
        raise AuthError()  # Ed25519: signature must be 64 bytes
    S = int.from_bytes(sig[32:], "little")
    if S >= _L:
        raise AuthError()  # Ed25519: S out of range
    if native:
        if not native.verify(pub, bytes(message), sig):
            raise AuthError()  # Ed25519: signature does not verify
        return
    R = sig[:32]
    h = SHA512(R)
    h.update(pub)
    h.update(message)
    k = int.from_bytes(h.digest(), "little") % _L
    # [S]B - [k]A == R  <=>  [S]B + [k](-A) encodes to R
    ax = _P - A[0] if A[0] else 0
    if _limbs:  # the same loop on native field arithmetic
        enc = _limbs.mul2_encode(S, k, ax, A[1], _BT)
    else:
        enc = _encode(*_mul2(S, k, _odd_table(ax, A[1])))
    if enc != R:
        raise AuthError()  # Ed25519: signature does not verify


# the host's `cryptography` (CPython, backend.FAST) or None
native = backend.native.Ed25519 if backend.FAST else None
_limbs = None
if "atls.crypto.native_f25519" in sys.modules:  # X25519 loaded the native field: use it
    # (alone, Ed25519 keeps the pure code: compiling the viper field from source
    # would take more heap than a pure verification needs, e.g. for OTA bundles)
    from atls.crypto import native_ed25519 as _limbs
IMPL = "cryptography" if native else "native" if _limbs else "pure"
