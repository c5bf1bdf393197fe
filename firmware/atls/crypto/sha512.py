"""SHA-512 (FIPS 180-4 §6.4) in pure Python ints, for Ed25519 verification.

MicroPython's hashlib has no SHA-512, and Ed25519 (RFC 8032 §5.1) hashes
R || A || M with it, so this is a compact, unoptimised implementation:
64-bit words are plain ints masked with 2^64 - 1, the message schedule is a
rolling window of 16 words (FIPS 180-4 §6.4.2 computes W_0..W_79; only the
last 16 are ever needed), and the 80 round constants K (§4.2.3) are one
640-byte bytes literal read word by word: no table of big-int objects, and a
frozen module keeps it in flash.  update() compresses whole 128-byte blocks
straight from the caller's buffer and keeps only the tail.  Nothing is
secret in the Ed25519 verify use, so no constant-time care is taken.

API (hashlib-like): SHA512(data=b"") with update(data) and digest() (which
does not disturb the running state), and sha512(data) -> 64-byte digest.
"""

_M = 0xFFFFFFFFFFFFFFFF
# FIPS 180-4 §5.3.5: initial hash value H(0).
_H0 = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)
# FIPS 180-4 §4.2.3: K_0..K_79, big-endian 64-bit words.
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)


def _compress(h, blk, off):
    """FIPS 180-4 §6.4.2 on the 128-byte block blk[off:off+128]; h is updated."""
    M = _M
    K = _K
    w = [int.from_bytes(blk[off + 8 * i : off + 8 * i + 8], "big") for i in range(16)]
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        j = t & 15
        if t >= 16:
            x = w[(t - 15) & 15]
            y = w[(t - 2) & 15]
            w[j] = (
                w[j]
                + w[(t - 7) & 15]
                + ((((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56))) & M ^ (x >> 7))  # σ0
                + ((((y >> 19) | (y << 45)) ^ ((y >> 61) | (y << 3))) & M ^ (y >> 6))  # σ1
            ) & M
        t1 = (
            hh
            + int.from_bytes(K[8 * t : 8 * t + 8], "big")
            + w[j]
            + (
                (((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))) & M
            )  # Σ1
            + (g ^ (e & (f ^ g)))
        )  # Ch
        t2 = ((((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))) & M) + (
            (a & b) | (c & (a | b))
        )  # Σ0 + Maj
        hh = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        b = a
        a = (t1 + t2) & M
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & M


class SHA512:
    def __init__(self, data=b""):
        self._h = list(_H0)
        self._buf = b""
        self._len = 0
        if data:
            self.update(data)

    def update(self, data):
        n = len(data)
        self._len += n
        h = self._h
        i = 0
        buf = self._buf
        if buf:  # complete the buffered block first
            i = 128 - len(buf)
            buf += bytes(data[:i])
            if len(buf) < 128:
                self._buf = buf
                return
            _compress(h, buf, 0)
        while i + 128 <= n:  # whole blocks straight from data, no copy
            _compress(h, data, i)
            i += 128
        self._buf = bytes(data[i:])

    def digest(self):
        # §5.1.2 padding: 0x80, zeros, 128-bit big-endian bit length.
        h = list(self._h)
        tail = self._buf + b"\x80" + bytes((111 - len(self._buf)) & 127)
        tail += (self._len * 8).to_bytes(16, "big")
        for off in range(0, len(tail), 128):
            _compress(h, tail, off)
        return b"".join(v.to_bytes(8, "big") for v in h)


def sha512(data=b""):
    """One-shot SHA-512 digest (64 bytes)."""
    return SHA512(data).digest()
