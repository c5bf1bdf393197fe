"""Bounded cursor over bytes, after aioquic's Buffer: symmetric pull_*/push_*.

Every pull checks the remaining length first and raises DecodeError (alert
decode_error) on truncation, so a parser built on it cannot index past its
input.  Length-prefixed blocks are read with `pull_block`, which returns a
sub-Buffer that must be consumed exactly (`expect_end`): trailing bytes are a
decode_error too (RFC 8446 §4, "a length-prefixed block must be consumed").
"""
from atls.errors import DecodeError


class Buffer:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data, pos=0, end=None):
        self.data = data if isinstance(data, memoryview) else memoryview(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self):
        return self.end - self.pos

    def eof(self):
        return self.pos >= self.end

    def expect_end(self):
        if self.pos != self.end:
            raise DecodeError("trailing bytes")

    def _take(self, n):
        p = self.pos
        if n < 0 or p + n > self.end:
            raise DecodeError("truncated")
        self.pos = p + n
        return p

    def pull_uint8(self):
        p = self._take(1)
        return self.data[p]

    def pull_uint16(self):
        p = self._take(2)
        d = self.data
        return (d[p] << 8) | d[p + 1]

    def pull_uint24(self):
        p = self._take(3)
        d = self.data
        return (d[p] << 16) | (d[p + 1] << 8) | d[p + 2]

    def pull_uint32(self):
        p = self._take(4)
        d = self.data
        return (d[p] << 24) | (d[p + 1] << 16) | (d[p + 2] << 8) | d[p + 3]

    def pull_bytes(self, n):
        """n bytes, copied (so callers may keep them)."""
        p = self._take(n)
        return bytes(self.data[p:p + n])

    def pull_view(self, n):
        """n bytes as a memoryview into the input (no copy)."""
        p = self._take(n)
        return self.data[p:p + n]

    def _pull_len(self, size):
        if size == 1:
            return self.pull_uint8()
        if size == 2:
            return self.pull_uint16()
        return self.pull_uint24()

    def pull_vector(self, size, minimum=0, maximum=None):
        """An opaque vector with a `size`-byte length prefix, bounds checked."""
        n = self._pull_len(size)
        if n < minimum or (maximum is not None and n > maximum):
            raise DecodeError("vector length out of range")
        return self.pull_bytes(n)

    def pull_block(self, size, minimum=0, maximum=None):
        """A length-prefixed block as a sub-Buffer sharing the input."""
        n = self._pull_len(size)
        if n < minimum or (maximum is not None and n > maximum):
            raise DecodeError("block length out of range")
        p = self._take(n)
        return Buffer(self.data, p, p + n)


class Writer:
    """Growable output with length-prefixed blocks patched in place."""

    __slots__ = ("buf",)

    def __init__(self):
        self.buf = bytearray()

    def push_uint8(self, v):
        self.buf.append(v & 0xFF)

    def push_uint16(self, v):
        self.buf.append((v >> 8) & 0xFF)
        self.buf.append(v & 0xFF)

    def push_uint24(self, v):
        self.buf.append((v >> 16) & 0xFF)
        self.push_uint16(v)

    def push_uint32(self, v):
        self.push_uint16(v >> 16)
        self.push_uint16(v)

    def push_bytes(self, b):
        self.buf.extend(b)

    def push_vector(self, size, b):
        n = len(b)
        if n >= (1 << (8 * size)):
            raise ValueError("vector too long")
        self.start_block(size)
        self.buf.extend(b)
        self.end_block(len(self.buf) - n, size)

    def start_block(self, size):
        """Reserve a `size`-byte length; returns the offset of the body."""
        self.buf.extend(bytes(size))
        return len(self.buf)

    def end_block(self, start, size):
        n = len(self.buf) - start
        if n >= (1 << (8 * size)):
            raise ValueError("block too long")
        for i in range(size):
            self.buf[start - 1 - i] = (n >> (8 * i)) & 0xFF

    def getvalue(self):
        return bytes(self.buf)
