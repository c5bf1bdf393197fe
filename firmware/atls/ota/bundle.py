"""The signed firmware bundle (docs/OTA.md has the byte layout and an example).

Theory of operation
-------------------
A bundle is one byte string, addressed by offset, so a transfer resumes at
any acknowledged offset:

    0      4  magic b"ATFW"
    4      1  format (1)
    5      1  flags (0; anything else is refused)
    6      2  H: length of the signed header, u16 big-endian (MIN_HEAD..MAX_HEAD)
    8      6  version: major, minor, patch (3 x u16)
    14     6  min_version: the lowest running version that may install it
    20     1  board name length B (1..32), then B bytes ASCII
    ..     2  file count N (1..MAX_FILES)
    ..        N entries: path length P (1 byte, 1..MAX_PATH), P bytes path,
              size (u32), SHA-256 of the file (32 bytes)
    H     64  Ed25519 signature by the release key over bytes [0, H)
    H+64      the files' bytes, concatenated in table order

The header must end exactly at H (trailing bytes: refused).  Paths are
relative, '/'-separated, of [A-Za-z0-9_.-] parts, never '.' or '..'.  The
bundle id (bundle_id) is SHA-256 of bytes [0, H+64) truncated to 8 bytes: it
names a transfer in OFFER and in the device's staging progress.  Nothing in a
header is trusted before verify() accepted the signature.
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAGIC = b"ATFW"
FORMAT = const(1)
FIXED = const(8)  # magic, format, flags, H
SIG_LEN = const(64)
MIN_HEAD = const(62)  # fixed part, two versions, a 1-byte board, one file of a 1-byte path
MAX_HEAD = const(8192)  # bounds the one allocation a device makes for it
MAX_FILES = const(512)
MAX_PATH = const(96)
MAX_BOARD = const(32)
MAX_FILE = const(1 << 20)
ID_LEN = const(8)


class BundleError(ValueError):
    """A malformed bundle (the device answers BAD_BUNDLE)."""


def head_len(fixed):
    """H from the first FIXED bytes; BundleError if not a bundle."""
    if len(fixed) < FIXED or bytes(fixed[:4]) != MAGIC:
        raise BundleError("not a bundle")
    if fixed[4] != FORMAT or fixed[5] != 0:
        raise BundleError("unknown bundle format")
    h = (fixed[6] << 8) | fixed[7]
    if not MIN_HEAD <= h <= MAX_HEAD:
        raise BundleError("header length out of range")
    return h


def _ascii(b):
    """Printable ASCII without spaces as str; BundleError otherwise."""
    for c in b:
        if not 33 <= c <= 126:
            raise BundleError("bad name")
    return str(b, "ascii")


def _path_ok(p):
    if not p or p[0] == "/" or p[-1] == "/":
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
        for c in part:
            if not (c.isalpha() or c.isdigit() or c in "_.-"):
                return False
    return True


class Header:
    """The parsed signed header: version, min_version (tuples), board (str),
    count and files() (path, size, sha256), head (H), total (bundle length)."""

    def __init__(self, data):
        raw = data
        data = memoryview(data)
        h = head_len(data)
        if len(data) < h:
            raise BundleError("truncated header")
        self.head = h
        self.version = struct.unpack_from(">HHH", data, 8)
        self.min_version = struct.unpack_from(">HHH", data, 14)
        i = 20
        b = data[i]
        if not 1 <= b <= MAX_BOARD or i + 1 + b > h:
            raise BundleError("bad board name")
        self.board = _ascii(bytes(data[i + 1 : i + 1 + b]))
        i += 1 + b
        if i + 2 > h:
            raise BundleError("truncated header")
        n = (data[i] << 8) | data[i + 1]
        if not 1 <= n <= MAX_FILES:
            raise BundleError("bad file count")
        # the file table is read from here (kept as given when it is bytes)
        self._data = raw if isinstance(raw, bytes) else bytes(data[:h])
        self._first = i + 2
        self.count = n
        total = h + SIG_LEN
        i += 2
        for _ in range(n):  # every entry checked once; files() then reads them again
            path, size, _, i = self._entry(i)
            total += size
        if i != h:
            raise BundleError("trailing bytes in header")
        self.total = total

    def _entry(self, i):
        data, h = self._data, self.head
        if i >= h:
            raise BundleError("truncated file table")
        p = data[i]
        if not 1 <= p <= MAX_PATH or i + 1 + p + 36 > h:
            raise BundleError("bad file entry")
        path = _ascii(data[i + 1 : i + 1 + p])
        if not _path_ok(path) or path in ("head", "prog", "prog.tmp"):
            raise BundleError("bad path")
        i += 1 + p
        size = struct.unpack_from(">I", data, i)[0]
        if size > MAX_FILE:
            raise BundleError("file too large")
        return path, size, data[i + 4 : i + 36], i + 36

    def files(self):
        """(path, size, sha256) of each file, in table (and bundle) order;
        parsed as it goes, so a long table costs no list on the heap."""
        i = self._first
        for _ in range(self.count):
            path, size, digest, i = self._entry(i)
            yield path, size, digest


def verify(head_and_sig, public_key):
    """Raise AuthError unless bytes [H, H+64) are the release key's Ed25519
    signature of bytes [0, H).  `head_and_sig` holds at least H+64 bytes."""
    import sys

    h = head_len(head_and_sig)
    if len(head_and_sig) < h + SIG_LEN:
        raise BundleError("truncated signature")
    # verification is rare: modules it loads are dropped again afterwards
    # (they are kept when something else, e.g. certificate TLS, had them)
    names = ("atls.crypto.ed25519", "atls.crypto.sha512")
    fresh = [n for n in names if n not in sys.modules]
    from atls.crypto import ed25519

    mv = memoryview(head_and_sig)
    try:
        ed25519.verify(public_key, mv[:h], mv[h : h + SIG_LEN])
    finally:
        pkg = sys.modules.get("atls.crypto")
        for n in fresh:
            sys.modules.pop(n, None)
            short = n.rpartition(".")[2]
            try:
                delattr(pkg, short)
            except (AttributeError, TypeError):
                pass
        import gc

        gc.collect()


def bundle_id(head_and_sig):
    """SHA-256 of the signed header and its signature, first 8 bytes."""
    import hashlib

    h = head_len(head_and_sig)
    return hashlib.sha256(memoryview(head_and_sig)[: h + SIG_LEN]).digest()[:ID_LEN]


def push_header(version, min_version, board, files):
    """The header bytes [0, H) for `files` [(path, size, sha256)]: the host
    signs them (docs/OTA.md); also the tests' fixture builder."""
    board_b = board.encode()
    body = bytearray(struct.pack(">HHH", *version) + struct.pack(">HHH", *min_version))
    body += bytes([len(board_b)]) + board_b + struct.pack(">H", len(files))
    for path, size, digest in files:
        p = path.encode()
        body += bytes([len(p)]) + p + struct.pack(">I", size) + bytes(digest)
    h = FIXED + len(body)
    if not MIN_HEAD <= h <= MAX_HEAD:
        raise BundleError("header length out of range")
    out = MAGIC + bytes([FORMAT, 0]) + struct.pack(">H", h) + bytes(body)
    Header(out)  # what the device would refuse is refused here too
    return out
