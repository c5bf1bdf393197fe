"""Native X25519 (RFC 7748 §5): the Montgomery ladder on fixed-size limbs.

Theory of operation.  A field element mod p = 2^255 - 19 is 80 bytes: 20
signed 32-bit limbs of 13 bits (native_f25519_viper explains the bounds that
keep every intermediate below 2^31, so 32- and 64-bit words give the same
results).  Field operations run as op programs (code, d, a, b: element
indices of one workspace) through `run`: native_thumb's inline Thumb
assembly (RP2040) where that module loads, else native_f25519_viper's (viper,
compiled by mpy-cross for the board's -march; the Thumb build does not load
it).  This module imports only where MicroPython's native emitter exists
(CPython and a .mpy of another arch raise on import, and atls.crypto.x25519
keeps its pure ladder).  atls.crypto.native_ed25519 reuses run, invert and
the limb conversions.

Constant time by construction: the ladder runs 255 steps, each the same
program of 18 field operations on fixed-size limbs; the conditional swap is
a mask (-bit) over all limbs; the scalar bit is read at an index that
depends on the step only; inversion is a fixed addition chain (254
squarings, 11 products).  The only big-int arithmetic is loading the public
u-coordinate and turning the final limbs into 32 bytes.
"""

# ruff: noqa: F821  (viper types are the compiler's names)

import micropython
from micropython import const

from atls.buffers import take

try:  # RP2040 (and other Thumb cores): the field operations in assembly
    from atls.crypto.native_thumb import run
except (ImportError, ValueError, SyntaxError):  # any other arch: viper
    from atls.crypto.native_f25519_viper import run

F_MUL = const(0)  # op codes of run (native_thumb)
F_A24 = const(3)
F_ADD = const(4)
F_SUB = const(5)
# workspace elements (0-2: run's scratch and constant)
_X1 = const(3)
_X2 = const(4)
_Z2 = const(5)
_X3 = const(6)
_Z3 = const(7)
_A = const(8)
_AA = const(9)
_B = const(10)
_BB = const(11)
_E = const(12)
_C = const(13)
_D = const(14)
_DA = const(15)
_CB = const(16)
_R = const(16)  # the result, once the ladder is done
# RFC 7748 §5, one ladder step after the swap
# fmt: off
_STEP = bytes(
    (
        F_ADD, _A, _X2, _Z2,
        F_MUL, _AA, _A, _A,
        F_SUB, _B, _X2, _Z2,
        F_MUL, _BB, _B, _B,
        F_SUB, _E, _AA, _BB,
        F_ADD, _C, _X3, _Z3,
        F_SUB, _D, _X3, _Z3,
        F_MUL, _DA, _D, _A,
        F_MUL, _CB, _C, _B,
        F_ADD, _X3, _DA, _CB,
        F_MUL, _X3, _X3, _X3,
        F_SUB, _Z3, _DA, _CB,
        F_MUL, _Z3, _Z3, _Z3,
        F_MUL, _Z3, _X1, _Z3,
        F_MUL, _X2, _AA, _BB,
        F_A24, _Z2, _E, 0,
        F_ADD, _Z2, _AA, _Z2,
        F_MUL, _Z2, _E, _Z2,
    )
)
# fmt: on


@micropython.viper
def ladder(k: ptr8, w: ptr32, step: ptr8):
    """RFC 7748 §5 ladder on workspace w (17 elements: x1 x2 z2 x3 z3 at 3..7,
    temporaries after them); k is the clamped scalar (bit 255 and bits 0..2
    clear); step is _STEP."""
    rn = run
    swap = 0
    for s in range(255):
        i = 254 - s
        kt = (k[i >> 3] >> (i & 7)) & 1
        swap ^= kt
        m = 0 - swap
        for i in range(20):  # x2 <-> x3 (words 80, 120), z2 <-> z3 (100, 140)
            q = (w[80 + i] ^ w[120 + i]) & m
            w[80 + i] ^= q
            w[120 + i] ^= q
            q = (w[100 + i] ^ w[140 + i]) & m
            w[100 + i] ^= q
            w[140 + i] ^= q
        swap = kt
        rn(w, step, 18)


def load(w, e, v):
    """Limbs of a public int v < 2^260 into element e of w."""
    for i in range(80 * e, 80 * e + 80, 4):
        w[i] = v & 255
        w[i + 1] = (v >> 8) & 31
        w[i + 2] = w[i + 3] = 0
        v >>= 13


def value(w, e):
    """The int held by the (signed) limbs of element e of w, mod p."""
    v = 0
    for i in range(19, -1, -1):
        j = 80 * e + 4 * i
        x = w[j] | w[j + 1] << 8 | w[j + 2] << 16 | w[j + 3] << 24
        v = (v << 13) + x - ((x & 0x80000000) << 1)
    return v % (2**255 - 19)


def op(w, code, d, a, b):
    """One field operation on elements of w."""
    run(w, bytes((code, d, a, b)), 1)


def sqn(w, d, a, n):
    """d = a^(2^n), n >= 1: one squaring into d, then n - 1 in place."""
    op(w, F_MUL, d, a, a)
    if n > 1:
        run(w, bytes((F_MUL, d, d, d)) * (n - 1), n - 1)


def chain(w, r, z, t):
    """r = z^(2^250 - 1) and t[0] = z^11 (ref10's addition chain, the
    common part of inversion and of the square root's power 2^252 - 3);
    t: 8 scratch elements (t[2] keeps z^11)."""
    z2, z9, z11, z5, z10, z20, z50, u = t
    sqn(w, z2, z, 1)
    sqn(w, u, z2, 2)
    op(w, F_MUL, z9, u, z)
    op(w, F_MUL, z11, z9, z2)
    sqn(w, u, z11, 1)
    op(w, F_MUL, z5, u, z9)  # z^(2^5 - 1)
    sqn(w, u, z5, 5)
    op(w, F_MUL, z10, u, z5)  # 2^10 - 1
    sqn(w, u, z10, 10)
    op(w, F_MUL, z20, u, z10)  # 2^20 - 1
    sqn(w, u, z20, 20)
    op(w, F_MUL, u, u, z20)  # 2^40 - 1
    sqn(w, u, u, 10)
    op(w, F_MUL, z50, u, z10)  # 2^50 - 1
    sqn(w, u, z50, 50)
    op(w, F_MUL, z20, u, z50)  # 2^100 - 1 (z20 is free again)
    sqn(w, u, z20, 100)
    op(w, F_MUL, u, u, z20)  # 2^200 - 1
    sqn(w, u, u, 50)
    op(w, F_MUL, r, u, z50)  # 2^250 - 1


def invert(w, r, z, t):
    """r = z^(p - 2) = 1/z (254 squarings, 11 products); t: 8 elements."""
    chain(w, t[7], z, t)
    sqn(w, t[7], t[7], 5)
    op(w, F_MUL, r, t[7], t[2])  # 2^255 - 21 = p - 2


_W = []  # the workspace (17 elements), kept: atls.buffers reserved it at boot
_ZERO = bytes(80)


def x25519(k, u):
    """X25519 of clamped scalar bytes k (32) and a reduced int u < p -> int.
    The RFC's final cswap is left out: clamping clears bit 0 of k."""
    if not _W:  # a 1,360-byte block mid-handshake: a fragmented heap may lack it
        w = take("x25519")
        if len(w) != 80 * 17:  # atls.buffers.SIZES must say this layout's size
            raise ValueError("atls.buffers.SIZES['x25519'] is not %d" % (80 * 17))
        _W.append(w)
    w = _W[0]
    load(w, _X1, u)
    load(w, _X2, 1)
    load(w, _Z2, 0)
    load(w, _X3, u)
    load(w, _Z3, 1)
    ladder(k, w, _STEP)
    invert(w, _R, _Z2, (6, 7, 8, 9, 10, 11, 12, 13))
    op(w, F_MUL, _R, _X2, _R)
    r = value(w, _R)
    for i in range(0, 80 * 17, 80):  # no ladder state left behind
        w[i : i + 80] = _ZERO
    return r
