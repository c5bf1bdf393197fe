"""Native P-256 (secp256r1) group arithmetic: fixed-size limbs, Montgomery
multiplication, constant-time fixed-window scalar multiplication.

Theory of operation.  A field element is 80 bytes: 20 unsigned 32-bit limbs
of 13 bits in Montgomery form x * R mod p, R = 2^260, values below 2^257
(native_p256_viper explains the arithmetic and its bounds).  Field
operations run as op programs (code, d, a, b: element indices of one
workspace) through `run`: native_thumb's inline Thumb assembly on RP2040,
else native_p256_viper's viper (the Thumb build does not load it).  A
point doubling (dbl-2001-b, a = -3) is one program of 24 field
operations, an addition of an affine table point (madd-2007-bl) one of 25.

Scalar multiplication walks 65 signed odd digits (the recoding in
atls.crypto.p256._mul_secret: k made odd, digits 2t - 15 from the nibbles of
k >> 1, top digit 1), each window 4 doublings and one addition; the table
entry is read from all 8 entries under masks and negated under a mask, so
neither a branch nor an address depends on the scalar.  With these digits no
addition meets an exceptional case (the running multiple is never +-the
added one).  Inversions of secret values are Fermat (a^(p-2), a^(n-2): fixed
public exponents): the point's Z, and ECDSA's nonce (inv_n, Montgomery
products mod n).  Verification (public scalars) uses the same loop with two
tables; an exceptional case there (Z = 0) sends the caller to the pure code.
"""

# ruff: noqa: F821  (viper types are the compiler's names)

import micropython
from micropython import const

from atls.buffers import take

try:  # RP2040 (and other Thumb cores): the field operations in assembly
    from atls.crypto.native_p256_thumb import pcmov, pselect
    from atls.crypto.native_thumb import run
except (ImportError, ValueError, SyntaxError):  # any other arch: viper
    from atls.crypto.native_p256_viper import pcmov, pselect, run

P_MUL = const(1)  # op codes of run (native_thumb)
N_MUL = const(2)
P_ADD = const(6)
P_SUB = const(7)
# Workspace elements: 0-1 scratch, 2 the 8p that P_SUB adds (n for N_MUL),
# 3 the integer 1 (a product with it leaves Montgomery form), 4-6 the
# accumulator X, Y, Z, 7-15 temporaries, 16-17 the selected table point
# (x, y), 18 its -y, 19 zero, 20-26 Z of the odd multiples while odd_table
# builds them, 27-42 G's table, 43-58 the other point's (8 entries x, y).
_ONE = const(3)
_X = const(4)
_Y = const(5)
_Z = const(6)
_QX = const(16)
_QY = const(17)
_NY = const(18)
_ZERO = const(19)
_ZS = const(20)
GTAB = const(27)
QTAB = const(43)
_SIZE = const(59)

# fmt: off
_PROGS = bytes(
    (
        # dbl-2001-b: d g b a u v at 7..12
        P_MUL, 7, _Z, _Z,  # delta
        P_MUL, 8, _Y, _Y,  # gamma
        P_MUL, 9, _X, 8,  # beta
        P_SUB, 11, _X, 7,
        P_ADD, 12, _X, 7,
        P_MUL, 10, 11, 12,
        P_ADD, 11, 10, 10,
        P_ADD, 10, 11, 10,  # alpha = 3 (X - delta)(X + delta)
        P_ADD, 11, _Y, _Z,
        P_MUL, 11, 11, 11,
        P_SUB, 11, 11, 8,
        P_SUB, _Z, 11, 7,  # Z3 = (Y + Z)^2 - gamma - delta
        P_ADD, 9, 9, 9,
        P_ADD, 9, 9, 9,  # 4 beta
        P_MUL, _X, 10, 10,
        P_SUB, _X, _X, 9,
        P_SUB, _X, _X, 9,  # X3 = alpha^2 - 8 beta
        P_SUB, 11, 9, _X,
        P_MUL, 11, 10, 11,
        P_MUL, 8, 8, 8,
        P_ADD, 8, 8, 8,
        P_ADD, 8, 8, 8,
        P_ADD, 8, 8, 8,
        P_SUB, _Y, 11, 8,  # Y3 = alpha (4 beta - X3) - 8 gamma^2
        # madd-2007-bl, (X, Y, Z) += (qx, qy): zz u2 s2 h hh i j r v at 7..15
        P_MUL, 7, _Z, _Z,
        P_MUL, 8, _QX, 7,
        P_MUL, 9, _QY, _Z,
        P_MUL, 9, 9, 7,
        P_SUB, 10, 8, _X,  # H = U2 - X1
        P_MUL, 11, 10, 10,
        P_ADD, 12, 11, 11,
        P_ADD, 12, 12, 12,  # I = 4 HH
        P_MUL, 13, 10, 12,  # J = H I
        P_SUB, 14, 9, _Y,
        P_ADD, 14, 14, 14,  # r = 2 (S2 - Y1)
        P_MUL, 15, _X, 12,  # V = X1 I
        P_ADD, _Z, _Z, 10,
        P_MUL, _Z, _Z, _Z,
        P_SUB, _Z, _Z, 7,
        P_SUB, _Z, _Z, 11,  # Z3 = (Z1 + H)^2 - Z1Z1 - HH
        P_MUL, _X, 14, 14,
        P_SUB, _X, _X, 13,
        P_SUB, _X, _X, 15,
        P_SUB, _X, _X, 15,  # X3 = r^2 - J - 2 V
        P_SUB, 15, 15, _X,
        P_MUL, 15, 14, 15,
        P_MUL, 13, _Y, 13,
        P_ADD, 13, 13, 13,
        P_SUB, _Y, 15, 13,  # Y3 = r (V - X3) - 2 Y1 J
        # -qy (+ 8p)
        P_SUB, _NY, _ZERO, _QY,
    )
)
# fmt: on
_MADD = memoryview(_PROGS)[96:]  # the programs after the doubling
_NEG = memoryview(_PROGS)[196:]


@micropython.viper
def pmulw(w: ptr32, dig: ptr8, progs: ptr8, tab: int):
    """Accumulator (which the caller set to the top digit's point) times
    16^64 plus the windowed digits: dig[0] = number of tables n (1 or 2),
    dig[1 + j] = negate flag of table j, dig[4 + 32 j ..] = k_j >> 1 (32
    bytes, big-endian); table j (8 affine points) at byte tab + 1280 j of w."""
    rn = run
    sel = pselect
    cmov = pcmov
    n = dig[0]
    b = int(w)
    p = int(progs)
    for win in range(63, -1, -1):
        rn(b, p, 24)
        rn(b, p, 24)
        rn(b, p, 24)
        rn(b, p, 24)
        for j in range(n):
            t = dig[4 + 32 * j + 31 - (win >> 1)] >> ((win & 1) << 2) & 15
            s = 1 - (t >> 3)  # 1 if the digit 2t - 15 is negative
            sel(b + 1280, b + tab + 1280 * j, (t ^ (7 * s)) & 7)
            rn(b, p + 196, 1)
            cmov(b + 1360, b + 1440, 20, s ^ dig[1 + j])
            rn(b, p + 96, 25)


@micropython.viper
def rpow(w: ptr32, sq: ptr8, mu: ptr8, ex: ptr8):
    """a^ex by square and multiply: sq squares the result element, mu
    multiplies it by a (both one op, the caller's elements); the result
    starts as the Montgomery one; ex: 32 bytes big-endian, public."""
    rn = run
    for i in range(256):
        rn(w, sq, 1)
        if (ex[i >> 3] >> (7 - (i & 7))) & 1:  # public exponent bits only
            rn(w, mu, 1)


_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_R = (1 << 260) % _P  # Montgomery one


def limbs(v, out, off=0):
    """Limbs of 0 <= v < 2^260 into out[off:off + 80]."""
    for i in range(off, off + 80, 4):
        out[i] = v & 255
        out[i + 1] = (v >> 8) & 31
        out[i + 2] = out[i + 3] = 0
        v >>= 13
    return out


def _int(b, e=0):
    """The int of the limbs of element e of b."""
    v = 0
    for i in range(80 * e + 76, 80 * e - 4, -4):
        v = (v << 13) | b[i] | b[i + 1] << 8
    return v


def _prog(*ops):
    """A program of 4-byte ops."""
    return bytes(ops)


_BUF = []


def buffers():
    """The workspace (59 elements, 4,720 bytes), allocated once: a device
    that uses P-256 keeps it rather than fragmenting its heap.  The one
    atls.buffers.early() reserved at boot, before the imports, when it did."""
    if not _BUF:
        b = take("p256")
        if len(b) != 80 * _SIZE:  # atls.buffers.SIZES must say this layout's size
            raise ValueError("atls.buffers.SIZES['p256'] is not %d" % (80 * _SIZE))
        w = memoryview(b)
        for i, v in ((0, -8), (7, 256), (15, 1), (17, -64), (19, 4096)):  # 8p
            w[160 + 4 * i : 164 + 4 * i] = (v & 0xFFFFFFFF).to_bytes(4, "little")
        limbs(1, w, 80 * _ONE)
        _BUF.append(w)
    return _BUF[0]


def table(points):
    """8 affine points (ints) -> G's table in the workspace; its element."""
    w = buffers()
    for i, (x, y) in enumerate(points):
        limbs((x << 260) % _P, w, 80 * (GTAB + 2 * i))
        limbs((y << 260) % _P, w, 80 * (GTAB + 2 * i + 1))
    return GTAB


def _entry(w, tab, idx, neg):
    """(qx, qy) = entry idx of the table at element tab, y negated if neg."""
    pselect(w[80 * _QX :], w[80 * tab :], idx)
    run(w, _NEG, 1)
    pcmov(w[80 * _QY :], w[80 * _NY :], 20, neg)


def odd_table(x, y, inv):
    """Table of Q, 3Q, .., 15Q for a public point Q = (x, y) at element QTAB:
    (2h + 1)Q = 2(hQ) + Q with hQ = Q, 3Q, 5Q, 7Q or a doubling of Q or 3Q,
    then one inversion inv(a, p) for all seven Z (Montgomery's trick), the
    rest native.  No allocation beyond small programs."""
    w = buffers()
    q = 80 * QTAB
    limbs((x << 260) % _P, w, q)
    limbs((y << 260) % _P, w, q + 80)
    w[80 * _QX : 80 * _QX + 160] = w[q : q + 160]
    for i in range(1, 8):
        h = i  # entry i is (2i + 1)Q = 2(hQ) + Q, hQ = (2 s + 1)Q * 2^d
        s, d = (h >> 1, 0) if h & 1 else (0, 2) if h == 4 else (h >> 2, 1)
        w[80 * _X : 80 * _X + 160] = w[q + 160 * s : q + 160 * s + 160]
        if s:
            w[80 * _Z : 80 * _Z + 80] = w[80 * (_ZS + s - 1) : 80 * (_ZS + s)]
        else:
            limbs(_R, w, 80 * _Z)
        for _ in range(d + 1):
            run(w, _PROGS, 24)
        run(w, _MADD, 25)
        w[q + 160 * i : q + 160 * i + 160] = w[80 * _X : 80 * _X + 160]
        w[80 * (_ZS + i - 1) : 80 * (_ZS + i)] = w[80 * _Z : 80 * _Z + 80]
    # prefix products c_i = Z_1 .. Z_i at elements 6 + i (7..13)
    w[560:640] = w[80 * _ZS : 80 * _ZS + 80]
    for i in range(2, 8):
        run(w, _prog(P_MUL, 6 + i, 5 + i, _ZS + i - 1), 1)
    run(w, _prog(P_MUL, 14, 13, _ONE), 1)  # c7 out of Montgomery form
    limbs((inv(_int(w, 14) % _P, _P) << 260) % _P, w, 80 * _X)  # 1 / c7
    for i in range(7, 0, -1):  # inv at _X, z = 1 / Z_i at _Y, z^2 at _Z
        if i > 1:
            run(w, _prog(P_MUL, _Y, _X, 5 + i, P_MUL, _X, _X, _ZS + i - 1), 2)
        else:
            w[400:480] = w[320:400]
        e = QTAB + 2 * i
        run(
            w,
            _prog(P_MUL, _Z, _Y, _Y, P_MUL, e, e, _Z, P_MUL, _Z, _Z, _Y, P_MUL, e + 1, e + 1, _Z),
            4,
        )
    return QTAB


def _affine(w):
    """(x, y) ints of the Jacobian accumulator (Z != 0).  Fermat inversion:
    its running time does not depend on Z."""
    limbs(_R, w, 560)  # element 7 = 1 (Montgomery)
    rpow(w, _prog(P_MUL, 7, 7, 7), _prog(P_MUL, 7, 7, _Z), (_P - 2).to_bytes(32, "big"))
    run(w, _prog(P_MUL, 8, 7, 7, P_MUL, 9, _X, 8, P_MUL, 9, 9, _ONE), 3)  # x
    run(w, _prog(P_MUL, 7, 7, 8, P_MUL, 10, _Y, 7, P_MUL, 10, 10, _ONE), 3)  # y
    return _int(w, 9) % _P, _int(w, 10) % _P


def _odd(k):
    """(k or n - k, whichever is odd; 1 if it is n - k): the product with a
    negated table is then k times the point."""
    flip = 1 - (k & 1)
    return k + flip * (_N - 2 * k), flip


def mul(k, tab):
    """k * P for secret 1 <= k < n; tab = the element of a table of P's odd
    multiples P, 3P, .., 15P (GTAB or QTAB).  Returns affine (x, y) ints, or
    None for the few k (k or n - k below 31) whose digits meet a doubling
    inside an addition: the result's Z is then 0, and the caller computes
    those with pure code."""
    k, flip = _odd(k)
    dig = bytearray(36)
    dig[0] = 1
    dig[1] = flip
    dig[4:36] = (k >> 1).to_bytes(32, "big")
    w = buffers()
    _entry(w, tab, 0, flip)  # the top digit: +-P
    w[80 * _X : 80 * _X + 160] = w[80 * _QX : 80 * _QX + 160]
    limbs(_R, w, 80 * _Z)
    pmulw(w, dig, _PROGS, 80 * tab)
    if _int(w, _Z) % _P == 0:  # k or n - k < 31: an exceptional addition
        return None
    return _affine(w)


def mul2(u1, u2, tab2=QTAB):
    """u1 * G + u2 * Q for public 0 < u1, u2 < n (ECDSA verification), G's
    table at GTAB, Q's (odd_table) at QTAB: Jacobian (X, 0, Z) ints (Y is not
    needed), or None where the sum meets an exceptional case (the caller
    uses pure code)."""
    u1, f1 = _odd(u1)
    u2, f2 = _odd(u2)
    dig = bytearray(68)
    dig[0] = 2
    dig[1] = f1
    dig[2] = f2
    dig[4:36] = (u1 >> 1).to_bytes(32, "big")
    dig[36:68] = (u2 >> 1).to_bytes(32, "big")
    w = buffers()
    _entry(w, GTAB, 0, f1)
    w[80 * _X : 80 * _X + 160] = w[80 * _QX : 80 * _QX + 160]
    limbs(_R, w, 80 * _Z)
    _entry(w, tab2, 0, f2)
    run(w, _MADD, 25)
    pmulw(w, dig, _PROGS, 80 * GTAB)
    run(w, _prog(P_MUL, 7, _X, _ONE, P_MUL, 8, _Z, _ONE), 2)  # out of Montgomery form
    x = _int(w, 7) % _P  # the caller compares x(R) * Z^2 with r * Z^2
    z = _int(w, 8) % _P
    return (x, 0, z) if z else None


_RR_N = (1 << 520) % _N  # R^2 mod n: a product with it enters Montgomery form
_R_N = (1 << 260) % _N


def inv_n(k):
    """1/k mod n for a secret 0 < k < n (ECDSA's nonce): Fermat, k^(n - 2),
    on Montgomery products mod n; the same operations for every k."""
    w = bytearray(480)  # 0-1 scratch, 2 n, 3 result, 4 k R, 5 constant
    limbs(_N, w, 160)
    limbs(k, w, 320)
    limbs(_RR_N, w, 400)
    run(w, _prog(N_MUL, 4, 4, 5), 1)
    limbs(_R_N, w, 240)
    rpow(w, _prog(N_MUL, 3, 3, 3), _prog(N_MUL, 3, 3, 4), (_N - 2).to_bytes(32, "big"))
    limbs(1, w, 400)
    run(w, _prog(N_MUL, 3, 3, 5), 1)
    return _int(w, 3) % _N
