"""Small PKI helpers for tests, the simulator and provisioning (CPython only).

Everything is built with the `cryptography` package, in memory:

    ca   = make_ca("Test CA", key_type="p256")                  # self-signed root
    sub  = make_cert("Issuing CA", issuer=ca, is_ca=True)        # intermediate
    leaf = make_cert("service.local", issuer=sub, key_type="rsa2048")
    dev  = make_cert("device-1", issuer=ca, client=True)         # TLS client cert
    ident, key = make_psk(b"device-1")                           # external PSK

Each call returns a `Credential` with `.key` (private key), `.cert` (the
certificate), `.chain` (this certificate followed by its intermediate issuers,
the self-signed root excluded: what a TLS peer sends; for a root it is just
the root) and `.issuer`.

Key types (RFC 8446 §4.2.3 names of the signature each key produces in TLS):
  "p256"     ECDSA on secp256r1; certificates it signs use ecdsa-with-SHA256,
             TLS CertificateVerify uses ecdsa_secp256r1_sha256.
  "rsa2048"  RSA-2048; certificates it signs use sha256WithRSAEncryption
             (PKCS#1 v1.5, RFC 4055); TLS 1.3 CertificateVerify uses
             rsa_pss_rsae_sha256 (RFC 8446 §4.2.3: PKCS#1 v1.5 is not allowed
             there, the TLS stack picks PSS by itself).
  "ed25519"  Ed25519 (RFC 8410 certificates, TLS scheme ed25519).

Extensions (RFC 5280 §4.2.1): basicConstraints (critical; cA and the optional
pathLenConstraint), keyUsage (critical; CA: keyCertSign+cRLSign, leaf:
digitalSignature), extendedKeyUsage on leaves (serverAuth, or clientAuth when
client=True), subjectAltName on leaves (DNS names, IP addresses),
subjectKeyIdentifier and authorityKeyIdentifier.  Serial numbers are random
(positive, < 2**159, RFC 5280 §4.1.2.2); notBefore is five minutes in the past
to tolerate clock skew.

`pem(x)` / `der(x)` serialise a certificate, a list of certificates, a
Credential (its certificate) or a private key (PKCS#8, unencrypted: these
helpers are for tests and provisioning images, never for secrets at rest).
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("p256", "rsa2048", "ed25519")

__all__ = ["Credential", "KEY_TYPES", "make_ca", "make_cert", "make_key", "make_psk", "pem", "der"]


class Credential:
    """A private key with its certificate (and the issuing Credential)."""

    def __init__(self, key, cert, issuer=None, chain=None):
        self.key = key
        self.cert = cert
        self.issuer = issuer  # None for a self-signed root
        self.chain = chain if chain is not None else [cert]

    @property
    def is_root(self):
        return self.issuer is None

    def __repr__(self):
        return "Credential(%s)" % self.cert.subject.rfc4514_string()


def make_key(key_type="p256"):
    """A fresh private key of one of KEY_TYPES."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError("key_type must be one of %s, not %r" % (", ".join(KEY_TYPES), key_type))


def _sign_hash(key):
    """The digest for signing certificates with `key` (None for Ed25519)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()  # ECDSA: ecdsa-with-SHA256; RSA: PKCS#1 v1.5 + SHA-256


def _name(common_name):
    if not isinstance(common_name, str) or not common_name:
        raise ValueError("common name must be a non-empty str")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(value):
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _build(subject_cn, key, issuer, is_ca, path_len, san, days, client):
    if not isinstance(days, int) or days < 1:
        raise ValueError("days must be a positive int")
    if path_len is not None and (not is_ca or path_len < 0):
        raise ValueError("path_len needs is_ca=True and must be >= 0")
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = _name(subject_cn)
    issuer_name = issuer.cert.subject if issuer is not None else subject
    signer = issuer.key if issuer is not None else key
    pub = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(pub)
        .serial_number(int.from_bytes(os.urandom(20), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    if is_ca:
        usage = dict(digital_signature=True, key_cert_sign=True, crl_sign=True)
    else:
        usage = dict(digital_signature=True, key_cert_sign=False, crl_sign=False)
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage,
        ),
        critical=True,
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if not is_ca:
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        names = [subject_cn] if san is None else list(san)
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
            )
    elif san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in san]), critical=False
        )
    return builder.sign(signer, _sign_hash(signer))


def make_ca(name, key_type="p256", path_len=None, days=3650):
    """A self-signed root CA (basicConstraints cA=TRUE, optional pathLen)."""
    key = make_key(key_type)
    cert = _build(name, key, None, True, path_len, None, days, False)
    return Credential(key, cert)


def make_cert(
    name, issuer, key_type="p256", is_ca=False, san=None, days=365, client=False, path_len=None
):
    """A certificate for a fresh key, signed by `issuer` (a Credential).

    is_ca=True makes an intermediate CA (optionally with path_len).  For a
    leaf, `san` lists DNS names / IP addresses (default: [name]; [] for none)
    and client=True sets extendedKeyUsage clientAuth instead of serverAuth.
    """
    if not isinstance(issuer, Credential):
        raise TypeError("issuer must be a Credential from make_ca/make_cert")
    key = make_key(key_type)
    cert = _build(name, key, issuer, is_ca, path_len, san, days, client)
    chain = [cert] + ([] if issuer.is_root else list(issuer.chain))
    return Credential(key, cert, issuer=issuer, chain=chain)


def make_psk(identity=b"device-1", length=32):
    """An external PSK (RFC 8446 §4.2.11): returns (identity, random key).

    length is the key size in bytes (16..64; 32 matches the SHA-256 hash
    that external PSKs default to).
    """
    if isinstance(identity, str):
        identity = identity.encode()
    if not isinstance(identity, (bytes, bytearray)) or not 1 <= len(identity) <= 0xFFFF:
        raise ValueError("identity must be 1..65535 bytes")
    if not isinstance(length, int) or not 16 <= length <= 64:
        raise ValueError("PSK length must be 16..64 bytes")
    return bytes(identity), os.urandom(length)


def _items(obj):
    if isinstance(obj, Credential):
        return [obj.cert]
    if isinstance(obj, (list, tuple)):
        out = []
        for item in obj:
            out.extend(_items(item))
        return out
    return [obj]


def _encode(obj, encoding):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(encoding)
    if isinstance(obj, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        return obj.private_bytes(
            encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    if isinstance(obj, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        return obj.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
    raise TypeError("cannot serialise %r" % type(obj).__name__)


def pem(obj):
    """PEM bytes of a certificate, key, Credential (its certificate) or a list
    of them (concatenated, in order)."""
    return b"".join(_encode(o, serialization.Encoding.PEM) for o in _items(obj))


def der(obj):
    """DER bytes of one certificate, key or Credential (its certificate)."""
    items = _items(obj)
    if len(items) != 1:
        raise ValueError("der() takes exactly one object (DER has no concatenation)")
    return _encode(items[0], serialization.Encoding.DER)
