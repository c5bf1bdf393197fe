"""Name tables of the TLS engine: cipher suites, groups and alerts as OpenSSL
and the service config spell them.

The suites the device speaks, and their code points, are atls.protocol's;
OpenSSL also speaks two more (the service may offer them to other clients).
"""

from atls import protocol

__all__ = ["SUITES", "SHA256_SUITES", "GROUPS", "GROUP_ALIASES", "ALERTS"]

# RFC 8446 §B.4: TLS 1.3 suites OpenSSL speaks and the device does not
_OPENSSL_ONLY_SUITES = {0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256"}

# name (OpenSSL's, RFC 8446 §B.4) -> code point, in code point order
SUITES = {
    name: code for code, name in sorted({**protocol.SUITE_NAMES, **_OPENSSL_ONLY_SUITES}.items())
}
# the suites whose hash is SHA-256: external PSKs (SHA-256) work with these only
SHA256_SUITES = tuple(name for name in SUITES if name.endswith("_SHA256"))

# RFC 8446 §4.2.7 group names -> OpenSSL group list names.
GROUPS = {
    "x25519": "X25519",
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
    "x448": "X448",
}
# what OpenSSL reports (lower case) -> the RFC 8446 name
GROUP_ALIASES = {
    "x25519": "x25519",
    "prime256v1": "secp256r1",
    "p-256": "secp256r1",
    "secp256r1": "secp256r1",
    "p-384": "secp384r1",
    "secp384r1": "secp384r1",
    "p-521": "secp521r1",
    "secp521r1": "secp521r1",
    "x448": "x448",
}

# RFC 8446 §6 AlertDescription.
ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
