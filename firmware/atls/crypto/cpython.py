"""The CPython crypto backend: the host's ``cryptography`` package.

atls.crypto.backend imports this module on CPython only; on MicroPython it
is never imported, and a device build leaves it out (boards/manifest_common.py
freezes every module but this one; `make mpy` skips it too).  It provides
  FAST                  False when ATLS_PURE_CRYPTO=1 (differential tests);
  aes_ecb, aes_cbc      cryptolib.aes(key, 1) / (key, 2, iv) look-alikes;
and, used through backend.native only when FAST, arithmetic on inputs the
pure code has already validated:
  x25519, x25519_base   (atls.crypto.x25519: length checks here, all-zero
                        result -> InvalidPointError);
  P256                  public_key, ecdh, verify_digest, sign (p256.native);
  Ed25519               verify (ed25519.native);
  AESCCM, AESGCM        the AEAD facade's classes when FAST (atls.crypto.aead).
"""

import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import x25519 as _cx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers import aead as _aead
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from atls.errors import AuthError, InvalidPointError, KeyLengthError, UsageError

FAST = os.environ.get("ATLS_PURE_CRYPTO", "") not in ("1", "true", "yes")


class _Cipher:
    """cryptolib.aes look-alike: encrypt(src[, dst]) over whole blocks."""

    def __init__(self, mode, key):
        self._enc = Cipher(algorithms.AES(bytes(key)), mode).encryptor()

    def encrypt(self, src, dst=None):
        out = self._enc.update(bytes(src))
        if dst is None:
            return out
        dst[: len(out)] = out
        return None


def aes_ecb(key):
    return _Cipher(modes.ECB(), key)


def aes_cbc(key, iv):
    """One-shot CBC encryptor (chains across encrypt() calls)."""
    return _Cipher(modes.CBC(bytes(iv)), key)


def x25519(scalar, u):
    """X25519(k, u) -> 32 bytes (RFC 7748 §5) via `cryptography`."""
    if len(scalar) != 32 or len(u) != 32:
        raise KeyLengthError("X25519 input != 32 bytes")
    priv = _cx.X25519PrivateKey.from_private_bytes(bytes(scalar))
    try:
        return priv.exchange(_cx.X25519PublicKey.from_public_bytes(bytes(u)))
    except ValueError:  # cryptography rejects an all-zero result
        raise InvalidPointError("X25519 all-zero shared secret")


def x25519_base(scalar):
    """Public key X25519(k, 9) via `cryptography`."""
    if len(scalar) != 32:
        raise KeyLengthError("X25519 scalar != 32 bytes")
    priv = _cx.X25519PrivateKey.from_private_bytes(bytes(scalar))
    return priv.public_key().public_bytes_raw()


class P256:
    """Arithmetic only: every input was already validated in pure code."""

    def public_key(k):
        pk = ec.derive_private_key(k, ec.SECP256R1()).public_key()
        return pk.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def ecdh(k, pub):
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(pub))
        return ec.derive_private_key(k, ec.SECP256R1()).exchange(ec.ECDH(), peer)

    def verify_digest(pub, digest, r, s):
        pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(pub))
        try:
            pk.verify(
                encode_dss_signature(r, s), bytes(digest), ec.ECDSA(Prehashed(hashes.SHA256()))
            )
        except InvalidSignature:
            return False
        return True

    def sign(d, message):
        sk = ec.derive_private_key(d, ec.SECP256R1())
        return sk.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


class Ed25519:
    def verify(pub, message, sig):
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(sig, message)
        except InvalidSignature:
            return False
        return True


class _AEAD:
    """The pure classes' length checks, then `cryptography` does the work."""

    def seal(self, nonce, aad, plaintext):
        self._check(nonce, len(plaintext))
        try:
            return self._c.encrypt(bytes(nonce), bytes(plaintext), bytes(aad))
        except (ValueError, OverflowError) as e:  # host limits (2^31 bytes)
            raise UsageError(str(e)) from None

    def open(self, nonce, aad, data):
        n = len(data) - self._m
        self._check(nonce, n if n > 0 else 0)
        if n < 0:
            raise AuthError("AEAD input shorter than the tag")
        try:
            return self._c.decrypt(bytes(nonce), bytes(data), bytes(aad))
        except InvalidTag:
            raise AuthError("AEAD tag mismatch") from None
        except (ValueError, OverflowError) as e:
            raise UsageError(str(e)) from None


class AESCCM(_AEAD):
    def __init__(self, key, tag_len=16):
        from atls.crypto import ccm

        ccm.check_key(key, tag_len)
        self._m = tag_len
        self._check = ccm.check_nonce
        self._c = _aead.AESCCM(bytes(key), tag_len)


class AESGCM(_AEAD):
    def __init__(self, key):
        from atls.crypto import gcm

        gcm.check_key(key)
        self._m = 16
        self._check = gcm.check_nonce
        self._c = _aead.AESGCM(bytes(key))
