"""The backend seam: the only place that knows which interpreter runs us.

Exports:
  IS_MICROPYTHON   True on MicroPython (device or unix port).
  FAST             True when the host's ``cryptography`` package may replace a
                   pure algorithm by a native one (CPython only, and not when
                   ATLS_PURE_CRYPTO=1 is set, which the differential tests use).
  native           the CPython backend module atls.crypto.cpython when FAST,
                   else None: x25519, p256, ed25519 and aead take their native
                   implementations from it, never import it themselves.
  sha256(data=b"") a hashlib-style SHA-256 object (update/digest).
  aes_ecb(key)     an object whose encrypt(src[, dst]) encrypts whole 16-byte
                   blocks in ECB mode (cryptolib semantics on both sides).
  aes_cbc(key, iv) a one-shot CBC encryptor (cryptolib mode 2), used for the
                   CBC-MAC of CCM so the chaining runs in C.
  random_bytes(n)  n random bytes: os.urandom, or the generator that
                   install_random() put in its place.
  install_random(fn)  serve random_bytes from fn(n) from now on (the device
                   does this at boot with its seeded HMAC_DRBG, atls.entropy);
                   None goes back to os.urandom.  Returns the previous source.
                   Host tools never call it: on CPython random_bytes stays
                   os.urandom unless a caller installs a generator explicitly.
Every caller (ECDHE keys, ClientHello randoms, pairing nonces, P-256 blinding)
goes through random_bytes, also those that imported the name: the function
stays, the source behind it changes.
MicroPython: cryptolib, hashlib and os.urandom.  CPython: hashlib, os.urandom
and `cryptography` (AES, and the native algorithms) via atls.crypto.cpython,
a module that is never part of a device build.
"""

import sys
from hashlib import sha256  # noqa: F401  (MicroPython and CPython both have it)
from os import urandom as _urandom

IS_MICROPYTHON = sys.implementation.name == "micropython"
_source = _urandom


def random_bytes(n):
    return _source(n)


def install_random(fn):
    global _source
    prev = _source
    _source = fn or _urandom
    return prev


if IS_MICROPYTHON:
    import cryptolib

    FAST = False
    native = None

    def aes_ecb(key):
        return cryptolib.aes(key, 1)

    def aes_cbc(key, iv):
        """One-shot CBC encryptor (MicroPython cryptolib mode 2)."""
        return cryptolib.aes(key, 2, iv)

else:  # CPython: the host's `cryptography`
    from atls.crypto import cpython as _host

    FAST = _host.FAST
    native = _host if FAST else None
    aes_ecb = _host.aes_ecb
    aes_cbc = _host.aes_cbc
