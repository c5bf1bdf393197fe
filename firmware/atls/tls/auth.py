"""Key exchange and authentication pieces of the TLS 1.3 client.

Key shares (RFC 8446 §4.2.8): x25519 (32-byte u-coordinate) and secp256r1
(65-byte uncompressed point); the peer's share is validated by the curve code
and a bad one is illegal_parameter.  CertificateVerify (§4.4.3) is checked
for ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256 and ed25519, and produced
with ecdsa_secp256r1_sha256 for a device certificate.
"""
from atls.errors import AlertError, CryptoError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# §4.2.7 NamedGroup
X25519 = const(0x001D)
SECP256R1 = const(0x0017)
GROUP_NAMES = {X25519: "x25519", SECP256R1: "secp256r1"}

# §4.2.3 SignatureScheme
ECDSA_SECP256R1_SHA256 = const(0x0403)
RSA_PSS_RSAE_SHA256 = const(0x0804)
ED25519 = const(0x0807)
RSA_PKCS1_SHA256 = const(0x0401)  # certificates only, never CertificateVerify
# what we advertise in signature_algorithms (also covers certificate signatures)
SIGNATURE_SCHEMES = (ECDSA_SECP256R1_SHA256, RSA_PSS_RSAE_SHA256, ED25519, RSA_PKCS1_SHA256)

_CV_PAD = b"\x20" * 64
SERVER_CV_CONTEXT = b"TLS 1.3, server CertificateVerify\x00"
CLIENT_CV_CONTEXT = b"TLS 1.3, client CertificateVerify\x00"


class KeyShare:
    """One ephemeral key pair for `group`; `rng(n)` gives the private bytes."""

    def __init__(self, group, rng):
        self.group = group
        if group == X25519:
            from atls.crypto.x25519 import x25519_base

            self._priv = rng(32)
            self.public = x25519_base(self._priv)
        elif group == SECP256R1:
            from atls.crypto import p256

            while True:  # rejection sampling: a scalar in [1, n-1]
                priv = rng(32)
                try:
                    self.public = p256.public_key(priv)
                    break
                except (CryptoError, ValueError):
                    continue
            self._priv = priv
        else:
            raise ValueError("unsupported group")

    def shared_secret(self, peer):
        try:
            if self.group == X25519:
                from atls.crypto.x25519 import x25519

                return x25519(self._priv, peer)
            from atls.crypto import p256

            return p256.ecdh(self._priv, peer)
        except (CryptoError, ValueError):
            raise AlertError(47, "bad key share from peer")
        finally:
            self._priv = None  # ephemeral: used exactly once


def cv_content(context, transcript_hash):
    return _CV_PAD + context + transcript_hash


def verify_certificate_verify(leaf, scheme, signature, transcript_hash):
    """Check the server's CertificateVerify against the leaf certificate's key;
    decrypt_error on a bad signature, illegal_parameter on a scheme that does
    not fit the key or was not offered."""
    msg = cv_content(SERVER_CV_CONTEXT, transcript_hash)
    kt = leaf.key_type
    try:
        if scheme == ECDSA_SECP256R1_SHA256 and kt == "p256":
            from atls.crypto import p256

            p256.ecdsa_verify(leaf.public_key, msg, signature)
        elif scheme == RSA_PSS_RSAE_SHA256 and kt == "rsa" and not leaf.rsa_pss_only:
            # an id-RSASSA-PSS key would need rsa_pss_pss_sha256, which we do not offer
            from atls.crypto import rsa

            n, e = leaf.public_key
            rsa.verify_pss_sha256(n, e, msg, signature)
        elif scheme == ED25519 and kt == "ed25519":
            from atls.crypto import ed25519

            ed25519.verify(leaf.public_key, msg, signature)
        else:
            raise AlertError(47, "signature scheme does not match the certificate")
    except (CryptoError, ValueError):
        raise AlertError(51, "bad CertificateVerify signature")


def sign_certificate_verify(private_key, transcript_hash):
    """Our CertificateVerify signature with the device's P-256 key."""
    from atls.crypto import p256

    return p256.ecdsa_sign(private_key, cv_content(CLIENT_CV_CONTEXT, transcript_hash))
