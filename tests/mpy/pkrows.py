"""Row fields for the public-key tests (test_p256/test_ed25519/test_rsa):
a field is hex as in vecrun, or "@path" naming a binary side file, used for
values too long to sit in one row line under a small heap (Wycheproof's
4 KiB DER signatures, RFC 8032 TEST 1024).

Side files are read into one buffer reserved up front with reserve(n), before
the heap fragments, and returned as a memoryview that is only valid until
the next "@" field is read."""

from vecrun import unhex

_buf = None


def reserve(n):
    global _buf
    _buf = bytearray(n)


def field(s):
    global _buf
    if s[:1] == "@":
        with open(s[1:], "rb") as f:
            n = f.seek(0, 2)
            f.seek(0)
            if _buf is None or len(_buf) < n:
                _buf = None
                _buf = bytearray(n)
            mv = memoryview(_buf)[:n]
            f.readinto(mv)
        return mv
    return unhex(s)
