"""The OpenSSL context of the service's TLS engine (service.tls_engine):
`ServerConfig(...).build()` returns a TLS 1.3-only OpenSSL.SSL.Context with
the service's callbacks, for ServerConnection.

* Server authentication is either a certificate (cert_chain + key; OpenSSL
  picks the CertificateVerify scheme, rsa_pss_rsae_* for RSA keys) or an
  external PSK (RFC 8446 §4.2.11, SHA-256 suites only; the callback is in
  tls_hooks).  SSL_OP_ALLOW_NO_DHE_KEX stays off, so a PSK handshake is
  always psk_dhe_ke (§4.2.9) with a key share.
* Client certificates (client_ca) are also checked by a verify callback
  against the policy of OpenSSL's default security level (cert_policy_ok),
  since CCM_8's "@SECLEVEL=0" (below) would lift key-size and digest checks.
* Cipher suites are set with SSL_CTX_set_ciphersuites, in server preference
  order (SSL_OP_CIPHER_SERVER_PREFERENCE).  TLS_AES_128_CCM_8_SHA256 has a
  64-bit tag, which OpenSSL rates at 64 security bits: it is only offered at
  security level 0, so when (and only when) CCM_8 is configured the TLS 1.2
  cipher string gets "@SECLEVEL=0" (which also lifts key-size limits on peer
  certificates; cert_policy_ok puts them back for client chains).
* Groups go through SSL_CTX_set1_curves_list (= SSL_CTX_set1_groups_list,
  not exported under that name).  A client whose key share is for a group we
  do not support gets a HelloRetryRequest (§4.1.4).
* The certificate chain is sent exactly as given (SSL_MODE_NO_AUTO_CHAIN):
  otherwise OpenSSL completes a one-certificate chain from the verify store,
  i.e. from the client_ca certificates.
* tickets=0: the session cache is off and SSL_OP_NO_TICKET is set, so the
  tickets OpenSSL still writes (ServerConnection drops them) are its cheaper
  stateful ones.  The message callback (tls_hooks) is installed only with
  certificates or tickets; a PSK-only context goes without it (tls_engine).
"""

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _lib

from host_tools.service import tls_hooks
from host_tools.service.tls_names import GROUPS, SHA256_SUITES, SUITES

__all__ = ["ServerConfig", "cert_policy_ok"]

_SSL_MODE_NO_AUTO_CHAIN = 0x8  # openssl/ssl.h; not exported by the binding


class ServerConfig:
    """Server settings; build() returns a TLS 1.3-only OpenSSL.SSL.Context.

    psks        {identity bytes: key bytes (16..64)}: external PSKs (psk_dhe_ke).
                Consulted live: the service may add/remove entries of this
                dict (or pass any object with .get(identity)) after build().
                None disables PSK; {} enables it with no identity yet.
    cert_chain  [leaf, intermediates...] (cryptography certificates)
    key         the leaf's private key
    client_ca   [CA certs]: request and require a client certificate
                verified against these (not in PSK/resumed handshakes:
                RFC 8446 §4.3.2 forbids CertificateRequest there)
    suites      TLS 1.3 suites, server preference order
    groups      key-exchange groups, preference order
    tickets     NewSessionTickets after each handshake (0: no resumption)
    verify_depth  max client chain depth (client_ca mode)
    session_id_context  bytes binding tickets to this service
    hide_unknown_psk  an unknown PSK identity gets a stand-in key, so it fails
                exactly like a wrong binder (decrypt_error) and never falls
                back to a certificate or ticket: identities cannot be probed
                (the service sets it)
    compat_ccs  pass on the dummy change_cipher_spec OpenSSL sends after
                ServerHello/HRR (RFC 8446 §D.4 middlebox compatibility; sent
                even when the client's legacy_session_id is empty).  False
                (default) drops those records from the output.
    """

    def __init__(
        self,
        psks=None,
        cert_chain=None,
        key=None,
        client_ca=None,
        suites=("TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"),
        groups=("x25519", "secp256r1"),
        tickets=0,
        verify_depth=4,
        session_id_context=b"atls-service",
        compat_ccs=False,
        hide_unknown_psk=False,
    ):
        self.psks = psks
        self.cert_chain = list(cert_chain) if cert_chain else []
        self.key = key
        self.client_ca = list(client_ca) if client_ca else []
        self.suites = tuple(suites)
        self.groups = tuple(groups)
        self.tickets = tickets
        self.verify_depth = verify_depth
        self.session_id_context = session_id_context
        self.compat_ccs = bool(compat_ccs)
        self.hide_unknown_psk = bool(hide_unknown_psk)
        self._check()

    def _check(self):
        if self.psks is not None:
            if not callable(getattr(self.psks, "get", None)):
                raise TypeError("psks must be a dict (or have .get(identity))")
            for ident, key in getattr(self.psks, "items", dict().items)():
                if not isinstance(ident, bytes) or not 1 <= len(ident) <= 0xFFFF:
                    raise ValueError("PSK identities must be 1..65535 bytes")
                if not tls_hooks.valid_psk(key):
                    raise ValueError("PSK keys must be 16..64 bytes")
        if bool(self.cert_chain) != (self.key is not None):
            raise ValueError("cert_chain and key go together")
        if self.psks is None and not self.cert_chain:
            raise ValueError("need psks and/or cert_chain+key")
        if not all(isinstance(c, x509.Certificate) for c in self.cert_chain + self.client_ca):
            raise TypeError("certificates must be cryptography x509.Certificate objects")
        if not self.suites or any(s not in SUITES for s in self.suites):
            raise ValueError("suites must be from %s" % ", ".join(SUITES))
        if self.psks is not None and not any(s in SHA256_SUITES for s in self.suites):
            raise ValueError("external PSKs (SHA-256) need a SHA-256 suite")
        if not self.groups or any(g not in GROUPS for g in self.groups):
            raise ValueError("groups must be from %s" % ", ".join(GROUPS))
        if not isinstance(self.tickets, int) or not 0 <= self.tickets <= 2:
            raise ValueError("tickets must be 0..2 (OpenSSL sends 2; fewer are withheld)")
        if (
            not isinstance(self.session_id_context, bytes)
            or not 1 <= len(self.session_id_context) <= 32
        ):
            raise ValueError("session_id_context must be 1..32 bytes")

    def build(self):
        self._check()
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
        ctx.set_mode(_SSL_MODE_NO_AUTO_CHAIN)  # send cert_chain exactly, no store lookup
        if "TLS_AES_128_CCM_8_SHA256" in self.suites:
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # CCM_8: 64-bit tag
        ctx.set_tls13_ciphersuites(":".join(self.suites).encode())
        groups = ":".join(GROUPS[g] for g in self.groups).encode()
        if _lib.SSL_CTX_set1_curves_list(ctx._context, groups) != 1:
            raise ValueError("OpenSSL rejected groups %r" % (self.groups,))
        ctx.set_session_id(self.session_id_context)
        if self.cert_chain:
            ctx.use_certificate(self.cert_chain[0])
            for cert in self.cert_chain[1:]:
                ctx.add_extra_chain_cert(cert)
            ctx.use_privatekey(self.key)
            ctx.check_privatekey()
        if self.client_ca:
            store = ctx.get_cert_store()
            for ca in self.client_ca:
                store.add_cert(crypto.X509.from_cryptography(ca))
                ctx.add_client_ca(ca)
            # the chain policy of OpenSSL's default security level, whatever
            # the suites: CCM_8's @SECLEVEL=0 would accept RSA-1024 or SHA-1
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_policy)
            ctx.set_verify_depth(self.verify_depth)
        if not self.tickets:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            ctx.set_options(SSL.OP_NO_TICKET)  # see the module doc
        messages = bool(self.cert_chain or self.client_ca or self.tickets)
        ctx._atls_keepalive = tls_hooks.install(
            ctx, self.psks, self.hide_unknown_psk, messages
        )  # cffi callbacks live with ctx
        ctx._atls_config = self
        ctx._atls_messages = messages
        ctx._atls_direct = None  # ServerConnection decides on first use
        return ctx


def cert_policy_ok(cert):
    """True if a certificate meets OpenSSL's default security level (2,
    112 bits): RSA/DSA keys >= 2048 bits, EC keys >= 224 bits, no MD5/SHA-1
    signature (except a self-signed trust anchor's, which is not checked)."""
    try:
        key = cert.public_key()
        if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < 2048:
            return False
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 224:
            return False
        if cert.issuer != cert.subject:
            h = cert.signature_hash_algorithm
            if h is not None and h.name in ("md5", "sha1"):
                return False
        return True
    except Exception:  # an algorithm cryptography does not know: refuse
        return False


def _verify_policy(conn, cert, errnum, depth, ok):
    return bool(ok) and cert_policy_ok(cert.to_cryptography())
