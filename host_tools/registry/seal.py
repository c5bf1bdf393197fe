"""PSKs at rest: sealed with the service master key (AES-256-GCM).

The master key is 32 random bytes in a key file beside the database
(`<db>.key` unless configured), created with mode 0600 on first use.  A
sealed PSK is nonce (12) || ciphertext || tag (16); the device id is the
associated data, so a sealed key copied onto another device row does not
open.  Whoever can read the key file and the database can read the PSKs:
the file modes are what protects them, the seal keeps a copied or backed-up
database without its key file useless.
"""

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MasterKey", "SealError"]

_KEY_LEN = 32
_NONCE_LEN = 12


class SealError(Exception):
    """A sealed value does not open with this master key (or the key file is bad)."""


def _create_0600(path, data):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class MasterKey:
    """The service master key read from (or created in) `path`."""

    def __init__(self, path, create=True):
        self.path = str(path)
        if not os.path.exists(self.path):
            if not create:
                raise SealError("master key file %s is missing" % self.path)
            _create_0600(self.path, os.urandom(_KEY_LEN))
        with open(self.path, "rb") as f:
            key = f.read()
        if len(key) != _KEY_LEN:
            raise SealError("master key file %s must hold %d bytes" % (self.path, _KEY_LEN))
        self._aead = AESGCM(key)

    def seal(self, device_id, secret):
        nonce = os.urandom(_NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, bytes(secret), device_id.encode())

    def open(self, device_id, sealed):
        sealed = bytes(sealed)
        try:
            return self._aead.decrypt(sealed[:_NONCE_LEN], sealed[_NONCE_LEN:], device_id.encode())
        except Exception:
            raise SealError("sealed secret of %r does not open with this master key" % device_id)
