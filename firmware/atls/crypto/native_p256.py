"""Native P-256 (secp256r1) group arithmetic: fixed-size limbs, Montgomery
multiplication, constant-time fixed-window scalar multiplication.

Theory of operation.  A field element is 80 bytes: 20 unsigned 32-bit limbs
of 13 bits (radix 2^13), kept in Montgomery form x * R mod p with R = 2^260,
every value below 2^257 and every limb in [0, 2^13) after each operation.
p = 2^256 - 2^224 + 2^192 + 2^96 - 1 is sparse in this radix
(p = -1 + 32 X^7 + 1024 X^14 - 8 X^17 + 512 X^19, X = 2^13) and
-1/p = 1 mod 2^13, so each of the 20 Montgomery steps costs five shifted adds
besides the 20 products (pmul; native_p256_thumb has it in Thumb assembly,
used on RP2040).  Column sums stay below 2^31 (20 products < 2^26 plus the
shifted terms), the same 32-bit discipline as native_f25519.  padd folds bits
256.. back with 2^256 = 2^224 - 2^192 - 2^96 + 1 (mod p); a - b is computed as
a - b + 8p (b < 2^257 < 8p keeps it non-negative).

Points are Jacobian (X, Y, Z) in 240 bytes: doubling is dbl-2001-b (a = -3),
additions of affine table points madd-2007-bl.  Scalar multiplication walks
65 signed odd digits (the recoding in atls.crypto.p256._mul_secret: k made
odd, digits 2t - 15 from the nibbles of k >> 1, top digit 1), each window 4
doublings and one addition; the table entry is found by reading all 8 entries
under masks and negated under a mask, so neither a branch nor an address
depends on the scalar.  With these digits no addition meets an exceptional
case (the running multiple is never +-the added one).  Inversion is Fermat
(a^(p-2), fixed exponent).  Verification (public scalars) uses the same loop
with two tables; an exceptional case there (Z = 0) sends the caller to the
pure code.
"""

# ruff: noqa: F821  (viper types are the compiler's names)

import micropython


@micropython.viper
def pmul(r: ptr32, a: ptr32, b: ptr32, t: ptr32):
    """r = a * b / R mod p (Montgomery); t is 40 words of scratch."""
    s = 1  # s = 1 << 31: (x ^ s) - s sign-extends a loaded word on 64 bits
    s <<= 31
    for i in range(40):
        t[i] = 0
    for i in range(20):
        ai = a[i]
        for j in range(20):
            t[i + j] += ai * b[j]
        x = (t[i] ^ s) - s
        m = x & 8191
        t[i + 1] += (x - m) >> 13
        t[i + 7] += m << 5
        t[i + 14] += m << 10
        t[i + 17] -= m << 3
        t[i + 19] += m << 9
    c = 0
    for i in range(20):
        c += (t[i + 20] ^ s) - s
        r[i] = c & 8191
        c >>= 13


@micropython.viper
def padd(r: ptr32, a: ptr32, b: ptr32, neg: int):
    """r = a + b (neg = 0) or a - b + 8p (neg = 1), folded below 2^257."""
    m = 0 - neg
    for i in range(20):
        r[i] = a[i] + ((b[i] ^ m) - m)
    # + 8p = -8 + 256 X^7 + X^15 - 64 X^17 + 4096 X^19 when subtracting
    r[0] -= 8 & m
    r[7] += 256 & m
    r[15] += 1 & m
    r[17] -= 64 & m
    r[19] += 4096 & m
    s = 1
    s <<= 31
    c = 0
    for i in range(20):
        c += (r[i] ^ s) - s
        r[i] = c & 8191
        c >>= 13
    q = r[19] >> 9  # bits 256.. : 2^256 = 2^224 - 2^192 - 2^96 + 1
    r[19] &= 511
    r[0] += q
    r[7] -= q << 5
    r[14] -= q << 10
    r[17] += q << 3
    c = 0
    for i in range(20):
        c += (r[i] ^ s) - s
        r[i] = c & 8191
        c >>= 13


@micropython.viper
def pdbl(pt: ptr32, ws: ptr32):
    """Point pt doubled in place (dbl-2001-b); ws: 7 elements and 40 words
    of scratch."""
    mul = pmul
    add = padd
    p = int(pt)
    w = int(ws)
    X = p
    Y = p + 80
    Z = p + 160
    d = w
    g = w + 80
    b = w + 160
    a = w + 240
    u = w + 320
    v = w + 400
    t = w + 480
    mul(d, Z, Z, t)  # delta
    mul(g, Y, Y, t)  # gamma
    mul(b, X, g, t)  # beta
    add(u, X, d, 1)
    add(v, X, d, 0)
    mul(a, u, v, t)
    add(u, a, a, 0)
    add(a, u, a, 0)  # alpha = 3 (X - delta)(X + delta)
    add(u, Y, Z, 0)
    mul(u, u, u, t)
    add(u, u, g, 1)
    add(Z, u, d, 1)  # Z3 = (Y + Z)^2 - gamma - delta
    add(b, b, b, 0)
    add(b, b, b, 0)  # 4 beta
    mul(X, a, a, t)
    add(X, X, b, 1)
    add(X, X, b, 1)  # X3 = alpha^2 - 8 beta
    add(u, b, X, 1)
    mul(u, a, u, t)
    mul(g, g, g, t)
    add(g, g, g, 0)
    add(g, g, g, 0)
    add(g, g, g, 0)
    add(Y, u, g, 1)  # Y3 = alpha (4 beta - X3) - 8 gamma^2


@micropython.viper
def pmadd(pt: ptr32, qt: ptr32, ws: ptr32):
    """Point pt += affine point qt (x, y), madd-2007-bl; ws: 9 elements and
    40 words of scratch."""
    mul = pmul
    add = padd
    p = int(pt)
    q = int(qt)
    w = int(ws)
    X = p
    Y = p + 80
    Z = p + 160
    zz = w
    u2 = w + 80
    s2 = w + 160
    h = w + 240
    hh = w + 320
    i = w + 400
    j = w + 480
    r = w + 560
    v = w + 640
    t = w + 720
    mul(zz, Z, Z, t)
    mul(u2, q, zz, t)
    mul(s2, q + 80, Z, t)
    mul(s2, s2, zz, t)
    add(h, u2, X, 1)  # H = U2 - X1
    mul(hh, h, h, t)
    add(i, hh, hh, 0)
    add(i, i, i, 0)  # I = 4 HH
    mul(j, h, i, t)  # J = H I
    add(r, s2, Y, 1)
    add(r, r, r, 0)  # r = 2 (S2 - Y1)
    mul(v, X, i, t)  # V = X1 I
    add(Z, Z, h, 0)
    mul(Z, Z, Z, t)
    add(Z, Z, zz, 1)
    add(Z, Z, hh, 1)  # Z3 = (Z1 + H)^2 - Z1Z1 - HH
    mul(X, r, r, t)
    add(X, X, j, 1)
    add(X, X, v, 1)
    add(X, X, v, 1)  # X3 = r^2 - J - 2 V
    add(v, v, X, 1)
    mul(v, r, v, t)
    mul(j, Y, j, t)
    add(j, j, j, 0)
    add(Y, v, j, 1)  # Y3 = r (V - X3) - 2 Y1 J


@micropython.viper
def pselect(dst: ptr32, tab: ptr32, idx: int):
    """dst[0:40] = entry idx of tab (8 affine points of 40 words), read under
    masks from every entry: no branch or address depends on idx."""
    for i in range(40):
        dst[i] = 0
    for e in range(8):
        m = ((e ^ idx) - 1) >> 8  # all ones iff e == idx (e, idx < 8)
        for i in range(40):
            dst[i] |= tab[40 * e + i] & m


@micropython.viper
def pcmov(dst: ptr32, src: ptr32, n: int, flag: int):
    """dst[0:n] = src[0:n] if flag else unchanged, by a mask."""
    m = 0 - flag
    for i in range(n):
        dst[i] ^= (dst[i] ^ src[i]) & m


@micropython.viper
def psel(dst: ptr32, tab: ptr32, idx: int, neg: int):
    """dst (x, y; -y at dst + 160; 20 zero words at dst + 240) = tab[idx],
    y negated when neg = 1: pselect, then -y computed and kept by a mask."""
    d = int(dst)
    pselect(d, tab, idx)
    padd(d + 160, d + 240, d + 80, 1)  # 0 - y + 8p
    pcmov(d + 80, d + 160, 20, neg)


@micropython.viper
def pmulw(acc: ptr32, tabs: ptr32, dig: ptr8, ws: ptr32):
    """Point at acc (which the caller set to the top digit's point) times
    16^64 plus the windowed digits: dig[0] = number of tables n (1 or 2),
    dig[1 + j] = negate flag of table j, dig[4 + 32 j ..] = k_j >> 1 (32
    bytes, big-endian); table j (8 affine points, 1280 bytes) at tabs + 1280 j.
    w: 1200 bytes of scratch (the selected entry at w + 880)."""
    n = dig[0]
    tb = int(tabs)
    w = int(ws)
    e = w + 880  # selected entry: x, y, -y, and 20 zero words
    for win in range(63, -1, -1):
        pdbl(acc, w)
        pdbl(acc, w)
        pdbl(acc, w)
        pdbl(acc, w)
        for j in range(n):
            t = dig[4 + 32 * j + 31 - (win >> 1)] >> ((win & 1) << 2) & 15
            s = 1 - (t >> 3)  # 1 if the digit 2t - 15 is negative
            psel(e, tb + 1280 * j, (t ^ (7 * s)) & 7, s ^ dig[1 + j])
            pmadd(acc, e, w)


@micropython.viper
def ppow(r: ptr32, a: ptr32, ex: ptr8, t: ptr32):
    """r = a^ex (Montgomery), ex 32 bytes big-endian and public; r starts as
    the Montgomery one (the caller sets it); t: 40 words of scratch."""
    for i in range(256):
        pmul(r, r, r, t)
        if (ex[i >> 3] >> (7 - (i & 7))) & 1:  # public exponent bits only
            pmul(r, r, a, t)


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


def _int(b):
    v = 0
    for i in range(76, -4, -4):
        v = (v << 13) | b[i] | b[i + 1] << 8
    return v


_BUF = []  # tables (G's, then the other point's), workspace, accumulator


def buffers():
    """(tables 2560 bytes, workspace 1520 whose words 300..319 stay zero for
    psel, accumulator 240), allocated once:
    a device that uses P-256 keeps them rather than fragmenting its heap."""
    if not _BUF:
        _BUF.extend((bytearray(2560), memoryview(bytearray(1520)), memoryview(bytearray(240))))
    return _BUF


def table(points, out, off=0):
    """8 affine points (ints) -> 1280 bytes of Montgomery limbs at out[off:]."""
    for i, (x, y) in enumerate(points):
        limbs((x << 260) % _P, out, off + 160 * i)
        limbs((y << 260) % _P, out, off + 160 * i + 80)
    return memoryview(out)[off : off + 1280]


def odd_table(x, y, inv):
    """Table of Q, 3Q, .., 15Q for a public point Q = (x, y), written into the
    second half of buffers()[0]: (2h + 1)Q = 2(hQ) + Q with hQ = Q, 3Q, 5Q,
    7Q or a doubling of Q or 3Q, then one inversion inv(a, p) for all seven Z
    (Montgomery's trick), the rest native.  No allocation: the workspace
    holds the Z values and prefix products."""
    tabs, w, acc = buffers()
    t = memoryview(tabs)[1280:]  # entries: x, y (Jacobian X, Y until the end)
    zs = w[880:1440]  # Z of entries 1..7 (w[0:880] is pdbl's and pmadd's)
    limbs((x << 260) % _P, t)
    limbs((y << 260) % _P, t, 80)
    for i in range(1, 8):
        h = i  # entry i is (2i + 1)Q = 2(hQ) + Q, hQ = (2 s + 1)Q * 2^d
        s, d = (h >> 1, 0) if h & 1 else (0, 2) if h == 4 else (h >> 2, 1)
        acc[0:160] = t[160 * s : 160 * s + 160]
        if s:
            acc[160:240] = zs[80 * (s - 1) : 80 * s]
        else:
            limbs(_R, acc, 160)
        for _ in range(d + 1):
            pdbl(acc, w)
        pmadd(acc, t, w)
        t[160 * i : 160 * i + 160] = acc[0:160]
        zs[80 * (i - 1) : 80 * i] = acc[160:240]
    c, tw, one = w[0:560], w[560:720], limbs(1, w, 720)[720:800]  # prefixes
    c[0:80] = zs[0:80]
    for i in range(2, 8):
        pmul(c[80 * (i - 1) :], c[80 * (i - 2) :], zs[80 * (i - 1) :], tw)
    inv_, z, z2 = acc[0:80], acc[80:160], acc[160:240]
    pmul(z, c[480:560], one, tw)  # c7 out of Montgomery form
    limbs((inv(_int(z) % _P, _P) << 260) % _P, inv_)
    for i in range(7, 0, -1):
        if i > 1:
            pmul(z, inv_, c[80 * (i - 2) :], tw)  # 1 / Z_i
            pmul(inv_, inv_, zs[80 * (i - 1) :], tw)
        else:
            z[:] = inv_
        pmul(z2, z, z, tw)
        e = t[160 * i :]
        pmul(e, e, z2, tw)
        pmul(z2, z2, z, tw)
        pmul(e[80:], e[80:], z2, tw)
    limbs(0, w, 1120)  # psel's zero words again
    return t[0:1280]


def _affine(acc, m):
    """(x, y) ints of the Jacobian point acc (Z != 0); m: memoryview of the
    workspace.  Fermat inversion: its running time does not depend on Z."""
    zi, zi2, one, x, t = m[0:80], m[80:160], m[160:240], m[240:320], m[320:480]
    limbs(_R, zi)
    ppow(zi, acc[160:240], (_P - 2).to_bytes(32, "big"), t)
    pmul(zi2, zi, zi, t)
    limbs(1, one)
    pmul(x, acc, zi2, t)
    pmul(x, x, one, t)  # out of Montgomery form
    xi = _int(x)
    pmul(zi, zi, zi2, t)
    pmul(x, acc[80:160], zi, t)
    pmul(x, x, one, t)
    return xi % _P, _int(x) % _P


def _odd(k):
    """(k or n - k, whichever is odd; 1 if it is n - k): the product with a
    negated table is then k times the point."""
    flip = 1 - (k & 1)
    return k + flip * (_N - 2 * k), flip


def mul(k, tab):
    """k * P for secret 1 <= k < n; tab = table() of P's odd multiples
    P, 3P, .., 15P.  Returns affine (x, y) ints, or None for the few k (k or
    n - k below 31) whose digits meet a doubling inside an addition: the
    result's Z is then 0, and the caller computes those with pure code."""
    k, flip = _odd(k)
    dig = bytearray(36)
    dig[0] = 1
    dig[1] = flip
    dig[4:36] = (k >> 1).to_bytes(32, "big")
    _, w, acc = buffers()
    psel(memoryview(w)[880:], tab, 0, flip)  # the top digit: +-P
    acc[0:160] = memoryview(w)[880:1040]
    limbs(_R, acc, 160)
    pmulw(acc, tab, dig, w)
    if _int(acc[160:240]) % _P == 0:  # k or n - k < 31: an exceptional addition
        return None
    return _affine(acc, memoryview(w))


def mul2(u1, u2, tab2):
    """u1 * G + u2 * Q for public 0 < u1, u2 < n (ECDSA verification), G's
    table in buffers()[0][:1280], Q's (odd_table) after it in tab2: Jacobian
    (X, 0, Z) ints (Y is not needed), or None where the sum meets an
    exceptional case (the caller uses pure code)."""
    u1, f1 = _odd(u1)
    u2, f2 = _odd(u2)
    dig = bytearray(68)
    dig[0] = 2
    dig[1] = f1
    dig[2] = f2
    dig[4:36] = (u1 >> 1).to_bytes(32, "big")
    dig[36:68] = (u2 >> 1).to_bytes(32, "big")
    tabs, w, acc = buffers()
    m = memoryview(w)
    psel(m[880:], tabs, 0, f1)
    acc[0:160] = m[880:1040]
    limbs(_R, acc, 160)
    psel(m[880:], tab2, 0, f2)
    pmadd(acc, m[880:], w)
    pmulw(acc, tabs, dig, w)
    one, v, t = limbs(1, m, 0)[0:80], m[80:160], m[160:320]
    pmul(v, acc, one, t)  # out of Montgomery form: the caller compares
    x = _int(v) % _P  # x(R) * Z^2 with r * Z^2, no inversion
    pmul(v, acc[160:240], one, t)
    z = _int(v) % _P
    return (x, 0, z) if z else None


try:  # RP2040 (and other Thumb cores): the Montgomery product in assembly
    from atls.crypto.native_p256_thumb import padd, pcmov, pmul, pselect  # noqa: F811
except (ImportError, ValueError, SyntaxError):  # any other arch: viper
    pass
