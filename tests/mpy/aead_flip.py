"""Single-bit changes must be rejected (tests/test_aead.py, both interpreters).

Row: kind key nonce aad msg tag_len step count (fields as in aead_check).
Seal msg, then flip bits 0, step, 2*step, ... of ciphertext||tag and of the
AAD: every open must raise AuthError and return nothing; `count` is the
number of flips expected (so a loop that never ran cannot pass).
"""

from aead_check import field, make

from atls.errors import AuthError


def flip_check(f, ccm_cls, gcm_cls):
    a = make(f[0], field(f[1]), int(f[5]), ccm_cls, gcm_cls)
    nonce, aad, msg = field(f[2]), field(f[3]), field(f[4])
    step, count = int(f[6]), int(f[7])
    sealed = a.seal(nonce, aad, msg)
    if a.open(nonce, aad, sealed) != msg:
        return "unflipped open"
    done = 0
    for which in (0, 1):
        buf = bytearray(aad if which else sealed)
        for bit in range(0, len(buf) * 8, step):
            mask = 0x80 >> (bit & 7)
            buf[bit >> 3] ^= mask
            try:
                if which:
                    got = a.open(nonce, buf, sealed)
                else:
                    got = a.open(nonce, aad, buf)
                return "flip %d/%d accepted: %d bytes" % (which, bit, len(got))
            except AuthError:
                done += 1
            except Exception as e:  # noqa: BLE001
                return "flip %d/%d escaped %s" % (which, bit, type(e).__name__)
            buf[bit >> 3] ^= mask
    return None if done == count else "flips %d != %d" % (done, count)
