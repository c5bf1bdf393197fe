"""Build, sign and check firmware bundles (the format: atls.ota.bundle).

build(files, version, min_version, board, key) -> bytes, where files are
(path, bytes) pairs; from_build_dir() collects a `make mpy` output folder
(every .mpy under atls/, main.py and board_config.json stay out: main.py is
the boot hook, the board config belongs to the board).  check() is what a
device does to a bundle, in CPython: for `release --verify`, the store and
the tests."""

import hashlib
from pathlib import Path

from atls.ota import format_version, parse_version
from atls.ota.bundle import SIG_LEN, BundleError, Header, bundle_id, push_header, verify


def build(files, version, min_version, board, key):
    """The signed bundle of `files` [(path, bytes)] in the given order."""
    ver = parse_version(version)
    minv = parse_version(min_version)
    if minv > ver:
        raise BundleError("min_version %s is above version %s" % (min_version, version))
    table = [(p, len(b), hashlib.sha256(b).digest()) for p, b in files]
    head = push_header(ver, minv, board, table)
    sig = key.sign(head)
    return head + sig + b"".join(b for _, b in files)


def from_build_dir(d):
    """[(path, bytes)] of every .mpy under d/atls, sorted (package files
    first in each folder, so a listing reads naturally)."""
    d = Path(d)
    paths = sorted(p.relative_to(d).as_posix() for p in (d / "atls").rglob("*.mpy"))
    if not paths:
        raise BundleError("no .mpy files under %s/atls" % d)
    return [(p, (d / p).read_bytes()) for p in paths]


class Bundle:
    """A bundle held by the host: bytes, parsed header, id.  Structure and
    hashes are checked; the signature only when a public key is given."""

    def __init__(self, data, public_key=None):
        self.data = bytes(data)
        self.header = Header(self.data)
        if len(self.data) != self.header.total:
            raise BundleError(
                "bundle is %d bytes, its header says %d" % (len(self.data), self.header.total)
            )
        self.id = bundle_id(self.data)
        pos = self.header.head + SIG_LEN
        for path, size, digest in self.header.files():
            if hashlib.sha256(self.data[pos : pos + size]).digest() != digest:
                raise BundleError("bundle: %s does not match its hash" % path)
            pos += size
        if public_key is not None:
            try:
                verify(self.data, public_key)
            except Exception:
                raise BundleError("bundle: the signature does not verify with this key")

    @property
    def version(self):
        return format_version(self.header.version)

    @property
    def min_version(self):
        return format_version(self.header.min_version)

    @property
    def board(self):
        return self.header.board

    def info(self):
        return {
            "board": self.board,
            "version": self.version,
            "min_version": self.min_version,
            "id": self.id.hex(),
            "bytes": len(self.data),
            "header_bytes": self.header.head + SIG_LEN,
            "files": self.header.count,
        }


def check(data, public_key=None):
    return Bundle(data, public_key)
