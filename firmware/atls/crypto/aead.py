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

AESCCM = ccm.CCM
AESGCM = gcm.GCM

if backend.FAST:  # CPython: the host's `cryptography` (backend.native)
    AESCCM = backend.native.AESCCM
    AESGCM = backend.native.AESGCM


def new(suite, key):
    """The AEAD of a TLS 1.3 suite (atls.protocol) with `key`, for the record
    layer and the export-key channel alike.  Only that suite's module is
    imported (pure classes on MicroPython, `cryptography` when backend.FAST)."""
    from atls.protocol import TLS_AES_128_GCM_SHA256, suite_tag_len

    tag = suite_tag_len(suite)  # ValueError for a suite the device does not speak
    if backend.FAST:
        return AESGCM(key) if suite == TLS_AES_128_GCM_SHA256 else AESCCM(key, tag)
    if suite == TLS_AES_128_GCM_SHA256:
        from atls.crypto.gcm import GCM

        return GCM(key)
    from atls.crypto.ccm import CCM

    return CCM(key, tag)
