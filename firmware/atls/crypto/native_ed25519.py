"""Native Ed25519 verification arithmetic (RFC 8032 §5.1): edwards25519
point operations as op programs on the Curve25519 field of native_f25519
(Thumb assembly on RP2040, viper elsewhere), for atls.crypto.ed25519.

Theory of operation.  Points are extended (X, Y, Z, T) in four workspace
elements; doubling and the additions are RFC 8032 §5.1.4's formulas (the
same as ed25519.py's pure _dbl, _add, _madd), each one program of 14 field
operations.  [S]B + [k](-A) is ed25519.py's interleaved sliding-window loop
over B's affine niels table (ed25519._BT, 1B..15B) and the cached odd
multiples of -A, built per call.  Everything here is public (signature,
key, message hash): the window logic branches on the scalars' bits, which is
fine for verification and never used with a secret.  The square root of
decoding is the fixed chain z^(2^252 - 3) (native_f25519.chain).

Workspace elements: 0-2 run's, 3-6 the accumulator X Y Z T, 7-14
temporaries, 15-18 the table point being added, 19 2d, 20-35 -A's table (4
cached points: Y - X, Y + X, 2d T, 2 Z; windows of width 3 for k keep the
workspace at 4.6 KB), 36-59 B's (8 niels points, windows of width 4).
"""

from micropython import const

from atls.crypto.native_f25519 import F_ADD, F_MUL, F_SUB, chain, invert, load, op, run, sqn, value

_P = const(2**255 - 19)
_D2 = const(0x2406D9DC56DFFCE7198E80F2EEF3D13000E0149A8283B156EBD69B9426B2F159)  # 2d mod p
_AT = const(20)
_BT = const(36)
_SIZE = const(60)

# fmt: off
_DBL = bytes((  # RFC 8032 §5.1.4 doubling: A B H E G F at 7..12
    F_MUL, 7, 3, 3,
    F_MUL, 8, 4, 4,
    F_ADD, 9, 7, 8,  # H = A + B
    F_ADD, 10, 3, 4,
    F_MUL, 10, 10, 10,
    F_SUB, 10, 9, 10,  # E = H - (X + Y)^2
    F_SUB, 11, 7, 8,  # G = A - B
    F_MUL, 12, 5, 5,
    F_ADD, 12, 12, 12,
    F_ADD, 12, 12, 11,  # F = 2 Z^2 + G
    F_MUL, 3, 10, 12,
    F_MUL, 4, 11, 9,
    F_MUL, 5, 12, 11,
    F_MUL, 6, 10, 9,
))


def _add(d):  # §5.1.4 addition of the cached point at 15..18; d: D = Z q3 or 2 Z
    return bytes((
        F_SUB, 7, 4, 3,
        F_MUL, 7, 7, 15,  # A = (Y - X) q0
        F_ADD, 8, 4, 3,
        F_MUL, 8, 8, 16,  # B = (Y + X) q1
        F_MUL, 9, 6, 17,  # C = T q2
    ) + d + (
        F_SUB, 11, 8, 7,  # E = B - A
        F_SUB, 12, 10, 9,  # F = D - C
        F_ADD, 13, 10, 9,  # G = D + C
        F_ADD, 14, 8, 7,  # H = B + A
        F_MUL, 3, 11, 12,
        F_MUL, 4, 13, 14,
        F_MUL, 5, 12, 13,
        F_MUL, 6, 11, 14,
    ))
# fmt: on


_ADD = _add((F_MUL, 10, 5, 18))
_MADD = _add((F_ADD, 10, 5, 5))  # an affine niels point: Z2 = 1


def _cached(w, e):
    """Elements e..e+3 = (Y - X, Y + X, 2d T, 2 Z) of the accumulator."""
    run(w, bytes((F_SUB, e, 4, 3, F_ADD, e + 1, 4, 3, F_MUL, e + 2, 6, 19, F_ADD, e + 3, 5, 5)), 4)


def _affine(w, x, y):
    """Accumulator = (x, y, 1, x y)."""
    load(w, 3, x)
    load(w, 4, y)
    load(w, 5, 1)
    load(w, 6, x * y % _P)


def pow22523(z):
    """z^(2^252 - 3) mod p (RFC 8032 §5.1.3's square root exponent)."""
    w = bytearray(80 * 13)
    load(w, 3, z)
    chain(w, 4, 3, (5, 6, 7, 8, 9, 10, 11, 12))  # z^(2^250 - 1)
    sqn(w, 4, 4, 2)
    op(w, F_MUL, 4, 4, 3)
    return value(w, 4)


def _window(bs, i, u, width):
    """Sliding window starting at set bit i of u (bytes bs, LE)."""
    j = i - width + 1 if i >= width - 1 else 0
    while not bs[j >> 3] >> (j & 7) & 1:
        j += 1
    return j, (u >> j) & ((1 << (i - j + 1)) - 1)


_BUF = []


def mul2_encode(s, k, ax, ay, bt):
    """encode([s]B + [k]P) (RFC 8032 §5.1.2) for public scalars < 2^253,
    P = (ax, ay) affine; bt: B's niels table (ed25519._BT)."""
    if not _BUF:  # allocated once, as native_p256's: no 4.8 KB block to find later
        w = memoryview(bytearray(80 * _SIZE))
        load(w, 19, _D2)
        for i, (a, b, c) in enumerate(bt):  # B's table stays
            e = _BT + 3 * i
            load(w, e, a)
            load(w, e + 1, b)
            load(w, e + 2, c)
        _BUF.append(w)
    w = _BUF[0]
    _affine(w, ax, ay)  # P's odd multiples: P, then P + 2P, ..
    _cached(w, _AT)
    run(w, _DBL, 14)
    _cached(w, 15)
    _affine(w, ax, ay)
    for i in range(1, 4):
        run(w, _ADD, 14)
        _cached(w, _AT + 4 * i)
    # per scalar: bytes, int, window end (-1: none pending), window value,
    # width, table, elements an entry, its program
    sc = (
        [s.to_bytes(32, "little"), s, -1, 0, 4, _BT, 3, _MADD],
        [k.to_bytes(32, "little"), k, -1, 0, 3, _AT, 4, _ADD],
    )
    _affine(w, 0, 1)  # the neutral element
    q = w[1200:1520]
    for i in range(252, -1, -1):
        run(w, _DBL, 14)
        for c in sc:
            if c[2] < 0 and c[0][i >> 3] >> (i & 7) & 1:
                c[2], c[3] = _window(c[0], i, c[1], c[4])
            if c[2] == i:
                n = 80 * c[6]
                e = 80 * c[5] + n * (c[3] >> 1)
                q[0:n] = w[e : e + n]
                run(w, c[7], 14)
                c[2] = -1
    invert(w, 15, 5, (7, 8, 9, 10, 11, 12, 13, 14))
    run(w, bytes((F_MUL, 3, 3, 15, F_MUL, 4, 4, 15)), 2)
    return (value(w, 4) | (value(w, 3) & 1) << 255).to_bytes(32, "little")
