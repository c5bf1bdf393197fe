"""The release key (Ed25519).  The private key stays with whoever builds
releases (`make release`); the service and the gateway never need it, and
`make provision` gives devices the public key only."""

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

DEFAULT_KEY = "build/release/release.key"


class ReleaseKeyError(ValueError):
    """A release key that is missing, unreadable or unsafe."""


def public_path(key_path):
    return Path(str(key_path) + ".pub")


def generate(path=DEFAULT_KEY, force=False):
    """Create the release key: PEM private key (0600, folder 0700) and
    `<path>.pub` (public key, 64 hex digits).  Returns the public key bytes."""
    path = Path(path)
    if path.exists() and not force:
        raise ReleaseKeyError("release key %s exists: keep it (force replaces it)" % path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(str(path) + ".tmp", path)
    pub = public_bytes(key)
    public_path(path).write_text(pub.hex() + "\n")
    return pub


def load_private(path=DEFAULT_KEY):
    path = Path(path)
    try:
        if path.stat().st_mode & 0o077:
            raise ReleaseKeyError("release key %s is readable by others: chmod 600 it" % path)
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except OSError as e:
        raise ReleaseKeyError(
            "release key %s: %s (create one with `make release-key`)" % (path, e.strerror or e)
        )
    except ValueError as e:
        raise ReleaseKeyError("release key %s is unreadable: %s" % (path, e))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ReleaseKeyError("release key %s is not an Ed25519 key" % path)
    return key


def public_bytes(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public(path):
    """32 bytes from a `.pub` file (hex) or from a private key file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ReleaseKeyError("release public key %s: %s" % (path, e.strerror or e))
    if b"PRIVATE KEY" in text:
        return public_bytes(load_private(path))
    try:
        pub = bytes.fromhex(text.decode().strip())
    except ValueError:
        pub = b""
    if len(pub) != 32:
        raise ReleaseKeyError("release public key %s: want 64 hex digits" % path)
    return pub
