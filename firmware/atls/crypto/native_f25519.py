"""Native X25519 (RFC 7748 §5): the Montgomery ladder on fixed-size limbs.

Theory of operation.  A field element mod p = 2^255 - 19 is 80 bytes: 20
signed 32-bit limbs of 13 bits (native_f25519_viper explains the bounds that
keep every intermediate below 2^31, so 32- and 64-bit words give the same
results).  The field operations come from native_f25519_thumb (inline Thumb
assembly, RP2040) where that module loads, else from native_f25519_viper
(viper, compiled by mpy-cross for the board's -march).  This module imports
only where MicroPython's native emitter exists (CPython and a .mpy of another
arch raise on import, and atls.crypto.x25519 keeps its pure ladder).

Constant time by construction: the ladder runs 255 steps, each the same 18
field operations on fixed-size limbs; the conditional swap is a mask (-bit)
over all limbs; the scalar bit is read at an index that depends on the step
only; inversion is a fixed addition chain (254 squarings, 11 products).  The
only big-int arithmetic is loading the public u-coordinate and turning the
final limbs into 32 bytes.
"""

# ruff: noqa: F821  (viper types and Thumb mnemonics are the compiler's names)

import micropython

try:  # RP2040 (and other Thumb cores): the field operations in assembly
    from atls.crypto.native_f25519_thumb import fadd, fmul, fmul_small

    fsqr = fmul
except (ImportError, ValueError, SyntaxError):  # any other arch: viper
    from atls.crypto.native_f25519_viper import fadd, fmul, fmul_small, fsqr


@micropython.viper
def fsqrn(r: ptr32, a: ptr32, n: int, t: ptr32):
    """r = a^(2^n), n >= 1."""
    sqr = fsqr
    sqr(r, a, a, t)
    for _ in range(n - 1):
        sqr(r, r, r, t)


@micropython.viper
def ladder(k: ptr8, w: ptr32):
    """RFC 7748 §5 ladder on workspace w (320 words): x1 x2 z2 x3 z3 at
    words 0, 20, 40, 60, 80, temporaries after them, 40 scratch words at 280;
    k is the clamped scalar (bit 255 clear, bits 0..2 clear)."""
    mul = fmul
    sqr = fsqr
    add = fadd
    small = fmul_small
    base = int(w)
    x1 = base
    x2 = base + 80
    z2 = base + 160
    x3 = base + 240
    z3 = base + 320
    a = base + 400
    aa = base + 480
    b = base + 560
    bb = base + 640
    e = base + 720
    c = base + 800
    d = base + 880
    da = base + 960
    cb = base + 1040
    t = base + 1120
    swap = 0
    for s in range(255):
        i = 254 - s
        kt = (k[i >> 3] >> (i & 7)) & 1
        swap ^= kt
        m = 0 - swap
        for i in range(20):
            q = (w[20 + i] ^ w[60 + i]) & m
            w[20 + i] ^= q
            w[60 + i] ^= q
            q = (w[40 + i] ^ w[80 + i]) & m
            w[40 + i] ^= q
            w[80 + i] ^= q
        swap = kt
        add(a, x2, z2, 0)
        sqr(aa, a, a, t)
        add(b, x2, z2, 1)
        sqr(bb, b, b, t)
        add(e, aa, bb, 1)
        add(c, x3, z3, 0)
        add(d, x3, z3, 1)
        mul(da, d, a, t)
        mul(cb, c, b, t)
        add(x3, da, cb, 0)
        sqr(x3, x3, x3, t)
        add(z3, da, cb, 1)
        sqr(z3, z3, z3, t)
        mul(z3, x1, z3, t)
        mul(x2, aa, bb, t)
        small(z2, e, 121665)
        add(z2, aa, z2, 0)
        mul(z2, e, z2, t)


def load(w, off, v):
    """Limbs of a public int v < 2^260 into words off.. of w."""
    for i in range(20):
        w[4 * (off + i)] = v & 255
        w[4 * (off + i) + 1] = (v >> 8) & 31
        w[4 * (off + i) + 2] = 0
        w[4 * (off + i) + 3] = 0
        v >>= 13


def value(w, off):
    """The int held by the (signed) limbs at words off.. of w, mod p."""
    v = 0
    for i in range(19, -1, -1):
        j = 4 * (off + i)
        x = w[j] | w[j + 1] << 8 | w[j + 2] << 16 | w[j + 3] << 24
        v = (v << 13) + x - ((x & 0x80000000) << 1)
    return v % (2**255 - 19)


def invert(r, z, w):
    """r = z^(p - 2) = 1/z (ref10's addition chain: 254 squarings, 11
    multiplications); w holds 5 field elements of scratch and 40 words."""
    m = memoryview(w)
    z2, z9, z11, z5, z10 = m[0:80], m[80:160], m[160:240], m[240:320], m[320:400]
    z20, z50, z100, u, t = m[400:480], m[480:560], m[560:640], m[640:720], m[720:880]
    fsqr(z2, z, z, t)
    fsqrn(u, z2, 2, t)
    fmul(z9, u, z, t)
    fmul(z11, z9, z2, t)
    fsqr(u, z11, z11, t)
    fmul(z5, u, z9, t)  # z^(2^5 - 1)
    fsqrn(u, z5, 5, t)
    fmul(z10, u, z5, t)  # 2^10 - 1
    fsqrn(u, z10, 10, t)
    fmul(z20, u, z10, t)  # 2^20 - 1
    fsqrn(u, z20, 20, t)
    fmul(u, u, z20, t)  # 2^40 - 1
    fsqrn(u, u, 10, t)
    fmul(z50, u, z10, t)  # 2^50 - 1
    fsqrn(u, z50, 50, t)
    fmul(z100, u, z50, t)  # 2^100 - 1
    fsqrn(u, z100, 100, t)
    fmul(u, u, z100, t)  # 2^200 - 1
    fsqrn(u, u, 50, t)
    fmul(u, u, z50, t)  # 2^250 - 1
    fsqrn(u, u, 5, t)
    fmul(r, u, z11, t)  # 2^255 - 21 = p - 2


def x25519(k, u):
    """X25519 of clamped scalar bytes k (32) and a reduced int u < p -> int.
    The RFC's final cswap is left out: clamping clears bit 0 of k."""
    w = bytearray(1280)
    load(w, 0, u)
    w[80] = 1  # x2 = 1, z2 = 0
    load(w, 60, u)  # x3 = u
    w[320] = 1  # z3 = 1
    ladder(k, w)
    m = memoryview(w)
    zi = bytearray(80)
    invert(zi, m[160:240], bytearray(880))
    fmul(zi, m[80:160], zi, m[1120:])
    return value(zi, 0)
