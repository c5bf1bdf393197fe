"""Public AEAD facade: AESCCM (RFC 3610 / SP 800-38C) and AESGCM (SP 800-38D).

  AESCCM(key, tag_len=16).seal(nonce, aad, plaintext) -> ciphertext || tag
  AESCCM(key, tag_len=16).open(nonce, aad, ciphertext || tag) -> plaintext
  AESGCM(key).seal / .open, same shapes, 12-byte nonce, 16-byte tag.

Keys are 16 bytes (AES-128; 32 also accepted).  Caller mistakes (key,
nonce or tag length) raise KeyLengthError, over-long input UsageError, a
bad tag AuthError (no plaintext is ever returned then).

On MicroPython (and on CPython with ATLS_PURE_CRYPTO=1) the names are the
pure classes ccm.CCM and gcm.GCM themselves, so a call costs nothing extra.
When backend.FAST, they wrap ``cryptography``'s AESCCM/AESGCM after
checking lengths with the same rules (ccm/gcm.check_*), mapping InvalidTag
to AuthError and the host's own size limits to UsageError.
"""
from atls.crypto import backend, ccm, gcm
from atls.errors import AuthError, UsageError

AESCCM = ccm.CCM
AESGCM = gcm.GCM

if backend.FAST:  # CPython with the native host backend
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import aead as _native

    class _Native:
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

    class AESCCM(_Native):  # noqa: F811
        def __init__(self, key, tag_len=16):
            ccm.check_key(key, tag_len)
            self._m = tag_len
            self._check = ccm.check_nonce
            self._c = _native.AESCCM(bytes(key), tag_len)

    class AESGCM(_Native):  # noqa: F811
        def __init__(self, key):
            gcm.check_key(key)
            self._m = 16
            self._check = gcm.check_nonce
            self._c = _native.AESGCM(bytes(key))
