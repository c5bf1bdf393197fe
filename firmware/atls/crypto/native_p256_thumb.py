"""P-256's masked table read and conditional move in inline Thumb assembly
(RP2040: armv6m, Thumb-1), the same functions as native_p256_viper's;
`make mpy` builds this module for Thumb arches only.  The field arithmetic
itself is native_thumb.run.  Fixed loop counts, no branch on data."""

# ruff: noqa: F821  (Thumb mnemonics and registers are the assembler's names)

import micropython


@micropython.asm_thumb
def pselect(r0, r1, r2):
    # r0[0:40] = entry r2 of the 8-entry table r1 (40 words each), masked
    mov(r4, 0)
    mov(r7, 40)
    label(zero)
    str(r4, [r0, 0])
    add(r0, 4)
    sub(r7, 1)
    bne(zero)
    sub(r0, 160)
    mov(r3, 8)
    label(entry)
    mov(r5, r2)
    sub(r5, 1)
    mvn(r4, r2)
    and_(r5, r4)
    asr(r5, r5, 31)  # all ones iff r2 == 0
    mov(r7, 40)
    label(word)
    ldr(r4, [r1, 0])
    and_(r4, r5)
    ldr(r6, [r0, 0])
    orr(r6, r4)
    str(r6, [r0, 0])
    add(r0, 4)
    add(r1, 4)
    sub(r7, 1)
    bne(word)
    sub(r0, 160)
    sub(r2, 1)
    sub(r3, 1)
    bne(entry)


@micropython.asm_thumb
def pcmov(r0, r1, r2, r3):
    # r0[0:r2] = r1[0:r2] if r3 else unchanged (mask)
    neg(r3, r3)
    label(loop)
    ldr(r4, [r0, 0])
    ldr(r5, [r1, 0])
    eor(r5, r4)
    and_(r5, r3)
    eor(r4, r5)
    str(r4, [r0, 0])
    add(r0, 4)
    add(r1, 4)
    sub(r2, 1)
    bne(loop)
