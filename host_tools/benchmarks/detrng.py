"""Deterministic byte source (SHA-256 in counter mode) for replaying a
recorded handshake: the same seed gives the same client randoms and
ephemeral keys under MicroPython and CPython.  Benchmarks and tests only."""

from hashlib import sha256


class DetRng:
    def __init__(self, seed):
        self.seed = seed if isinstance(seed, bytes) else str(seed).encode()
        self.n = 0

    def __call__(self, size):
        out = b""
        while len(out) < size:
            out += sha256(self.seed + self.n.to_bytes(4, "big")).digest()
            self.n += 1
        return out[:size]
