"""AEAD vector rows for tests/test_aead.py, checked the same way under
CPython (pure classes, or the facade) and MicroPython (the facade).
Rows are read with `lean_rows` (vecrun.rows holds two copies of each line);
results are tallied with vecrun.Tally.

Row (hex fields, "-" = empty; "@<n>.<seed>" = expand(seed, n), see below):
  kind key nonce aad msg tag_len out verdict mode
    kind     "ccm" or "gcm"
    out      expected ciphertext||tag (mode "full"), or its SHA-256 (mode
             "sha"; long rows would not fit a 32 KiB heap)
    verdict  "valid": seal must give `out`, open must give msg back (for
             messages up to 256 bytes also with bytearray / memoryview
             arguments, the view at an offset into a larger buffer);
             "invalid": constructing, or opening `out`, must raise AuthError
             or KeyLengthError and return nothing.
"""

from binascii import unhexlify
from hashlib import sha256

from atls.errors import AuthError, KeyLengthError


def expand(seed, n):
    """n bytes: SHA-256(seed || counter) blocks (long messages, short rows)."""
    out = bytearray(n)
    for i in range(0, n, 32):
        d = sha256(seed + i.to_bytes(4, "big")).digest()
        out[i : i + 32] = d[: n - i]
    return bytes(out)


def field(s):
    if s == "-":
        return b""
    if s[0] == "@":
        n, seed = s[1:].split(".")
        return expand(unhexlify(seed), int(n))
    return unhexlify(s)


def lean_rows(path):
    """Like vecrun.rows, minus its strip() copy, and without holding the
    line while a row is checked (rows with 500-byte messages, 32K heap)."""
    with open(path) as fh:
        i = 0
        while True:
            line = fh.readline()
            if not line:
                return
            f = line.split()
            line = None
            if f:
                yield i, f
                i += 1


def make(kind, key, tag_len, ccm_cls, gcm_cls):
    return gcm_cls(key) if kind == "gcm" else ccm_cls(key, tag_len)


def check_row(f, ccm_cls, gcm_cls):
    """None if the row holds, else a short reason."""
    verdict = f[7]
    try:
        a = make(f[0], field(f[1]), int(f[5]), ccm_cls, gcm_cls)
        nonce, aad, out = field(f[2]), field(f[3]), field(f[6])
        if verdict == "invalid":
            return "invalid accepted: %d bytes" % len(a.open(nonce, aad, out))
        msg = field(f[4])
        f[3] = f[4] = f[6] = None  # drop the hex text (the caller's row list)
        sealed = a.seal(nonce, aad, msg)
        if f[8] == "sha":
            if sha256(sealed).digest() != out:
                return "seal (digest)"
        elif sealed != out:
            return "seal"
        out = None  # long rows: keep at most msg, sealed and one result alive
        if a.open(nonce, aad, sealed) != msg:
            return "open"
        if len(msg) <= 256:  # other argument types (long ones: CPython covers them)
            mv = memoryview(bytearray(b"\x00" + sealed))[1:]  # a view at an offset
            if a.open(bytearray(nonce), memoryview(aad), mv) != msg:
                return "open(memoryview)"
            if a.seal(memoryview(nonce), bytearray(aad), memoryview(msg)) != sealed:
                return "seal(memoryview)"
    except (AuthError, KeyLengthError) as e:
        return None if verdict == "invalid" else "raised " + type(e).__name__
    except Exception as e:  # noqa: BLE001  (anything else escaping is a bug)
        return "escaped %s %s" % (type(e).__name__, e)
    return None
