"""Public AEAD facade: AESCCM (RFC 3610 / SP 800-38C) and AESGCM (SP 800-38D).

  AESCCM(key, tag_len=16).seal(nonce, aad, plaintext) -> ciphertext || tag
  AESCCM(key, tag_len=16).open(nonce, aad, ciphertext || tag) -> plaintext
  AESGCM(key).seal / .open, same shapes, 12-byte nonce, 16-byte tag.
  new(suite, key) the AEAD of a TLS 1.3 suite, for the record layer and the
                  export-key channel alike.

Keys are 16 bytes (AES-128; 32 also accepted).  Caller mistakes (key,
nonce or tag length) raise KeyLengthError, over-long input UsageError, a
bad tag AuthError (no plaintext is ever returned then).

On MicroPython (and on CPython with ATLS_PURE_CRYPTO=1) the names are the
pure classes ccm.CCM and gcm.GCM themselves, so a call costs nothing extra;
each is imported on first use (module __getattr__, PEP 562), so a device
that speaks CCM_8 never loads the GCM module.  When backend.FAST, they are
backend.native's wrappers of ``cryptography``'s AESCCM/AESGCM, which check
lengths with the same rules (ccm/gcm.check_*), map InvalidTag to AuthError
and the host's own size limits to UsageError.
"""

from atls.crypto import backend

if backend.FAST:  # CPython: the host's `cryptography` (backend.native)
    AESCCM = backend.native.AESCCM
    AESGCM = backend.native.AESGCM
else:

    def __getattr__(name):
        if name == "AESCCM":
            from atls.crypto.ccm import CCM

            return CCM
        if name == "AESGCM":
            from atls.crypto.gcm import GCM

            return GCM
        raise AttributeError(name)


def new(suite, key):
    """The AEAD of a TLS 1.3 suite (atls.protocol) with `key`.  Only that
    suite's module is imported (pure classes on MicroPython, `cryptography`
    when backend.FAST); ValueError for a suite the device does not speak."""
    from atls.protocol import TLS_AES_128_GCM_SHA256, suite_tag_len

    tag = suite_tag_len(suite)
    if backend.FAST:
        return AESGCM(key) if suite == TLS_AES_128_GCM_SHA256 else AESCCM(key, tag)
    if suite == TLS_AES_128_GCM_SHA256:
        from atls.crypto.gcm import GCM

        return GCM(key)
    from atls.crypto.ccm import CCM

    return CCM(key, tag)
