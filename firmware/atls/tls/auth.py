"""Certificate-mode handshake states of the TLS 1.3 client (RFC 8446 §4.3.2,
§4.4.2, §4.4.3, Appendix A.1 WAIT_CERT_CR / WAIT_CERT / WAIT_CV).

Imported only when a handshake authenticates the server with a certificate,
so PSK handshakes never load this code, atls.x509 or the signature modules.
The handlers are rows of atls.tls.handshake.TRANSITIONS and work on its
HandshakeContext: CertificateRequest is recorded (ctx.cert_request) for the
client flight; the server's chain is validated by atls.x509 (anchors, SPKI
pins, hostname or IP address; anchors only with a name to check when pins
are given) and its CertificateVerify checked against the leaf
(ctx.leaf) for ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256 or ed25519
(decrypt_error on a bad signature, illegal_parameter on a scheme that was
not offered or does not fit the key); the leaf is dropped once its
signature is checked.  `client_auth` builds our Certificate (empty without
a usable device identity) and an ecdsa_secp256r1_sha256 CertificateVerify.
"""

from atls import x509
from atls.buffer import Buffer
from atls.errors import AlertError, CryptoError
from atls.tls.messages import pull_extensions, push_handshake, vec

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# §4 HandshakeType
_CERTIFICATE = const(11)
_CERTIFICATE_VERIFY = const(15)
_EXT_SIGNATURE_ALGORITHMS = const(13)
# §4.2.3 SignatureScheme (what the client offers: see handshake._SIG_ALGS)
_ECDSA_SECP256R1_SHA256 = const(0x0403)
_RSA_PSS_RSAE_SHA256 = const(0x0804)
_ED25519 = const(0x0807)
# §6 AlertDescription
_ILLEGAL_PARAMETER = const(47)
_DECODE_ERROR = const(50)
_DECRYPT_ERROR = const(51)
_MISSING_EXTENSION = const(109)
_BAD_CERTIFICATE = const(42)

# §4.4.3: 64 spaces, the context string, a zero byte, then the transcript hash
_CV_PAD = const(b"                                                                ")
_SERVER_CV_CONTEXT = const(b"TLS 1.3, server CertificateVerify\x00")
_CLIENT_CV_CONTEXT = const(b"TLS 1.3, client CertificateVerify\x00")


def certificate_request(ctx, msg):
    """WAIT_CERT_CR + CertificateRequest (§4.3.2): remember its context and
    signature schemes for our Certificate (sent with our Finished)."""
    b = Buffer(msg[4:])
    context = b.pull_vector(1)
    sa = pull_extensions(b).get(_EXT_SIGNATURE_ALGORITHMS)
    if sa is None:
        raise AlertError(_MISSING_EXTENSION)  # certificate_request without signature_algorithms
    lst = sa.pull_block(2, 2)
    sa.expect_end()
    schemes = []
    while not lst.eof():
        schemes.append(lst.pull_uint(2))
    ctx.cert_request = (context, schemes)
    ctx.th.update(msg)


def certificate(ctx, msg):
    """WAIT_CERT_CR or WAIT_CERT + Certificate (§4.4.2): validate the server's
    chain (atls.x509) and keep the leaf for its CertificateVerify."""
    cfg = ctx.config
    context, certs = pull_certificate(msg[4:], cfg.max_chain + 1)
    if context != b"":
        raise AlertError(_ILLEGAL_PARAMETER)  # certificate_request_context
    if not certs:
        raise AlertError(_DECODE_ERROR)  # empty server certificate; §4.4.2.4
    hostname = cfg.server_name if cfg.check_hostname else None
    ctx.leaf = x509.verify_chain(
        certs,
        # a CA vouches for names: with no name to check (spki_pins and
        # check_hostname=False, or no server_name) only the pins authenticate
        anchors=cfg.ca_certs if hostname or not cfg.spki_pins else (),
        pins=cfg.spki_pins,
        now=cfg.now,
        max_depth=cfg.max_chain,
        hostname=hostname,
        time_floor=cfg.time_floor,
    )
    ctx.th.update(msg)


def certificate_verify(ctx, msg):
    """WAIT_CV + CertificateVerify (§4.4.3): the leaf's signature over the
    transcript; the leaf is dropped afterwards."""
    b = Buffer(msg[4:])
    scheme = b.pull_uint(2)
    sig = b.pull_vector(2, 1, 600)
    b.expect_end()
    verify_certificate_verify(ctx.leaf, scheme, sig, ctx.th.digest())
    ctx.leaf = None
    ctx.th.update(msg)


def pull_certificate(body, max_entries):
    """Certificate (§4.4.2) -> (context, [cert_data, ...]); entry extensions
    (OCSP, SCT) are skipped.  cert_data are memoryviews into `body` (no
    copies: atls.x509 keeps offsets into them), so `body` must not change."""
    b = Buffer(body)
    context = b.pull_vector(1)
    certs = []
    lst = b.pull_block(3)
    b.expect_end()
    while not lst.eof():
        if len(certs) >= max_entries:
            raise AlertError(_BAD_CERTIFICATE)  # certificate chain too long
        c = lst.pull_block(3, 1)  # opaque cert_data<1..2^24-1>
        certs.append(c.data[c.pos : c.end])
        lst.pull_block(2)  # CertificateEntry.extensions, ignored
    return context, certs


def verify_certificate_verify(leaf, scheme, signature, transcript_hash):
    """Check the server's CertificateVerify against the leaf certificate's key;
    decrypt_error on a bad signature, illegal_parameter on a scheme that does
    not fit the key or was not offered."""
    msg = _CV_PAD + _SERVER_CV_CONTEXT + transcript_hash
    kt = leaf.key_type
    try:
        if scheme == _ECDSA_SECP256R1_SHA256 and kt == "p256":
            from atls.crypto import p256

            p256.ecdsa_verify(leaf.public_key, msg, signature)
        elif scheme == _RSA_PSS_RSAE_SHA256 and kt == "rsa" and not leaf.rsa_pss_only:
            # an id-RSASSA-PSS key would need rsa_pss_pss_sha256, which we do not offer
            from atls.crypto import rsa

            n, e = leaf.public_key
            rsa.verify_pss_sha256(n, e, msg, signature)
        elif scheme == _ED25519 and kt == "ed25519":
            from atls.crypto import ed25519

            ed25519.verify(leaf.public_key, msg, signature)
        elif scheme in (_ECDSA_SECP256R1_SHA256, _RSA_PSS_RSAE_SHA256, _ED25519):
            raise AlertError(_ILLEGAL_PARAMETER)  # signature scheme does not match the certificate
        else:
            raise AlertError(_ILLEGAL_PARAMETER)  # signature scheme not offered
    except (CryptoError, ValueError):
        raise AlertError(_DECRYPT_ERROR)  # bad CertificateVerify signature


def client_auth(ctx):
    """Our Certificate and, with a usable device key, CertificateVerify
    (§4.4.2, §4.4.3), fed into the transcript; returns their bytes."""
    context, schemes = ctx.cert_request
    cfg = ctx.config
    usable = cfg.client_key is not None and _ECDSA_SECP256R1_SHA256 in schemes
    body = bytearray()
    for cert in cfg.client_certs if usable else ():
        body += vec(3, cert) + b"\x00\x00"  # no CertificateEntry extensions
    out = push_handshake(_CERTIFICATE, vec(1, context) + vec(3, body))
    ctx.th.update(out)
    if usable:
        from atls.crypto import p256

        sig = p256.ecdsa_sign(cfg.client_key, _CV_PAD + _CLIENT_CV_CONTEXT + ctx.th.digest())
        cv = push_handshake(_CERTIFICATE_VERIFY, b"\x04\x03" + vec(2, sig))
        ctx.th.update(cv)
        out += cv
    return out
