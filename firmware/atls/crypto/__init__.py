"""Device crypto core: the primitives TLS 1.3 and the channel need.

Pure algorithms (HMAC, HKDF, X25519, AES-CCM, AES-GCM, ...) are written once
on top of three low-level primitives chosen in :mod:`atls.crypto.backend`
(AES-ECB block encryption, SHA-256, a random source).  On MicroPython those
come from ``cryptolib``, ``hashlib`` and ``os``; on CPython from
``cryptography`` and ``hashlib``.
"""
