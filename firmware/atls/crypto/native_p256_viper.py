"""P-256 field arithmetic in viper (any native arch without the Thumb module):
the Montgomery products mod p (pmul) and mod the group order n (nmul), padd,
the masked table read and move, and run, which runs the same op programs as
native_thumb.run (codes 1 P_MUL, 2 N_MUL, 6 P_ADD, 7 P_SUB).

Limbs: 20 unsigned 32-bit words of 13 bits (radix 2^13), Montgomery form
x * R with R = 2^260, values below 2^257.  p is sparse in this radix
(p = -1 + 32 X^7 + 1024 X^14 - 8 X^17 + 512 X^19, X = 2^13, -1/p = 1 mod
2^13): each of pmul's 20 Montgomery steps is five shifted adds, and column
sums stay below 2^31.  n is not sparse: nmul adds m * n (m = t[i] * -1/n mod
2^13 = 7247 t[i]) row by row; columns stay below 2^32 (40 products < 2^26),
so its shifts are logical.  padd folds bits 256.. back with 2^256 = 2^224 -
2^192 - 2^96 + 1 (mod p); a - b is a - b + 8p (b < 2^257 < 8p).  Loads from
a ptr32 are zero-extended on a 64-bit viper word, so a value that is shifted
as signed is sign-extended first, (x ^ s) - s with s = 1 << 31.
"""

# ruff: noqa: F821  (viper types are the compiler's names)

import micropython


@micropython.viper
def prod(t: ptr32, a: ptr32, b: ptr32):
    """t[0:40] = the limb products of a and b (columns < 20 * 2^26)."""
    for i in range(40):
        t[i] = 0
    for i in range(20):
        ai = a[i]
        for j in range(20):
            t[i + j] += ai * b[j]


@micropython.viper
def pmul(r: ptr32, a: ptr32, b: ptr32, t: ptr32):
    """r = a * b / R mod p (Montgomery); t is 40 words of scratch.  The
    reduction steps run after the whole product (column i is complete by
    step i), as native_thumb's do."""
    s = 1  # s = 1 << 31: (x ^ s) - s sign-extends a loaded word on 64 bits
    s <<= 31
    prod(t, a, b)
    for i in range(20):
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
def nmul(r: ptr32, a: ptr32, b: ptr32, t: ptr32, n: ptr32):
    """r = a * b / R mod n (Montgomery, n's limbs at n); t: 40 words."""
    prod(t, a, b)
    for i in range(20):
        m = (t[i] * 7247) & 8191
        for j in range(20):
            t[i + j] += m * n[j]
        t[i + 1] += (t[i] >> 13) & 0x7FFFF
    c = 0
    for i in range(20):
        c += t[i + 20]
        r[i] = c & 8191
        c = (c >> 13) & 0x7FFFF


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
def run(w: ptr32, prog: ptr8, n: int):
    """Ops (code, d, a, b) of prog on elements of w (80 bytes each; 0-1
    scratch, 2 n's limbs for N_MUL): 1 P_MUL, 2 N_MUL, 6 P_ADD, 7 P_SUB.
    Its own interpreter, not native_f25519_viper's: a device that uses one
    curve loads one field's code."""
    base = int(w)
    for i in range(n):
        j = i << 2
        op = prog[j]
        d = base + 80 * prog[j + 1]
        a = base + 80 * prog[j + 2]
        b = base + 80 * prog[j + 3]
        if op == 1:
            pmul(d, a, b, base)
        elif op == 2:
            nmul(d, a, b, base, base + 160)
        else:
            padd(d, a, b, op - 6)


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
