"""Bounded cursor over bytes for the TLS parsers (after aioquic's Buffer).

Every pull checks the remaining length first and raises DecodeError (alert
decode_error) on truncation, so a parser built on it cannot index past its
input.  Length-prefixed blocks are read with `pull_block`, which returns a
sub-Buffer over the same memory that must be consumed exactly
(`expect_end`): trailing bytes are a decode_error too (RFC 8446 §4, "a
length-prefixed block must be consumed").  Nothing is copied except by
`pull_vector`, whose result the caller may keep.  Building is done with
plain bytes concatenation (atls.tls.messages): no writer class, fewer
functions in RAM.
"""

from atls.errors import DecodeError


class Buffer:
    def __init__(self, data, pos=0, end=None):
        self.data = data if isinstance(data, memoryview) else memoryview(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def eof(self):
        return self.pos >= self.end

    def expect_end(self):
        if self.pos != self.end:
            raise DecodeError()  # trailing bytes

    def pull(self, n):
        """The next n bytes as a memoryview into the input (no copy)."""
        p = self.pos
        if p + n > self.end:
            raise DecodeError()  # truncated
        self.pos = p + n
        return self.data[p : p + n]

    def pull_uint(self, size):
        """A big-endian unsigned integer of `size` bytes."""
        return int.from_bytes(self.pull(size), "big")

    def pull_block(self, size, minimum=0, maximum=None):
        """A block with a `size`-byte length prefix, bounds checked, as a
        sub-Buffer sharing the input."""
        n = self.pull_uint(size)
        if n < minimum or (maximum is not None and n > maximum):
            raise DecodeError()  # vector length out of range
        p = self.pos
        self.pull(n)
        return Buffer(self.data, p, p + n)

    def pull_vector(self, size, minimum=0, maximum=None):
        """An opaque vector with a `size`-byte length prefix, copied to bytes."""
        b = self.pull_block(size, minimum, maximum)
        return bytes(b.data[b.pos : b.end])
