"""X.509 certificate reader for the TLS 1.3 client (an RFC 5280 subset
sized for devices); chain validation is atls.x509_chain.

Public names: Certificate, UnsupportedCertificate, the bounds below, and
verify_chain, verify_signed_by, spki_sha256 and hostname_matches, which live
in atls.x509_chain and are read here on first use (module __getattr__, PEP
562): a device that only parses (or a PSK handshake) never loads them.

Parsing: `Certificate(der)` walks the DER once (atls.der) and keeps offsets
into the caller's buffer, not copies: `.tbs` is a memoryview; `.signature`,
`.issuer_raw`, `.subject_raw`, `.spki` and `.public_key` are sliced on each
access.  The buffer must not change afterwards.

Supported algorithms (anything else: UnsupportedCertificate, alert 43):
  signatures   ecdsa-with-SHA256 (RFC 5758 §3.2, parameters absent);
               sha256WithRSAEncryption (RFC 4055 §5, NULL or absent);
               id-RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 and the
               default trailer (RFC 4055 §3.1; hash parameters both NULL or
               both absent; every other parameter set is rejected);
               Ed25519 (RFC 8410 §3, parameters absent).
  public keys  id-ecPublicKey on prime256v1 (named curve, uncompressed point,
               RFC 5480); rsaEncryption (NULL parameters) and id-RSASSA-PSS
               keys (which then verify only PSS) of MIN_RSA_BITS..MAX_RSA_BITS
               bits; Ed25519 (RFC 8410).
Extensions understood: basicConstraints, keyUsage, subjectAltName (dNSName
and iPAddress kept, other GeneralName forms skipped), extKeyUsage.  Unknown extensions
are skipped when non-critical; an unknown critical one rejects the
certificate with alert 43 (RFC 5280 §4.2).  A repeated known one: 42.

Strict DER (atls.der, alert 50), including DEFAULT values that DER forbids
encoding: an explicit v1 version, critical FALSE or cA FALSE is rejected.
Also checked: the inner and outer signature AlgorithmIdentifiers are equal
(§4.1.1.2, else 42), serial at most 20 octets (§4.1.2.2; negative accepted),
pathLenConstraint only with cA (42), keyUsage not empty (42).

Bounds (module variables, adjustable): MAX_CERT_SIZE bytes per certificate
(also `max_size=`), MAX_NAME_LEN bytes per issuer/subject Name,
MAX_EXTENSIONS, MAX_SAN GeneralNames (each exceeded: 43), MIN_RSA_BITS
(2048; the RFC 8448 trace's RSA-1024 certificate needs 1024), MAX_RSA_BITS;
dNSName at most 253 printable ASCII octets, iPAddress 4 or 16 octets
(RFC 5280 §4.2.1.6) (else 42).

RAM (unix port, 64-bit): this module with atls.der and atls.errors holds
about 16K of bytecode when loaded as .mpy (nothing when frozen); a parsed
certificate keeps about 0.7K besides its DER; parsing runs in a 32K heap
(tests/test_x509.py).  Chain checks (atls.x509_chain) need the signature
modules too: see there.
"""

from atls import der
from atls.errors import AlertError, DecodeError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# RFC 8446 §6.2 alert descriptions.
_BAD_CERTIFICATE = const(42)
_UNSUPPORTED_CERTIFICATE = const(43)
# DER tags (X.680 §8.4; context tags of RFC 5280 §4.1).
_BOOLEAN = const(0x01)
_INTEGER = const(0x02)
_OCTET_STRING = const(0x04)
_OID = const(0x06)
_SEQUENCE = const(0x30)
_SET = const(0x31)
_DNS_NAME = const(0x82)  # GeneralName dNSName [2] IA5String, §4.2.1.6
_IP_ADDRESS = const(0x87)  # GeneralName iPAddress [7] OCTET STRING, §4.2.1.6
# Certificate._span: (start, end) offsets in .der, two entries per field.
_TBS = const(0)
_SIG = const(2)
_ISS = const(4)
_SUB = const(6)
_SPKI = const(8)
_KEY = const(10)

# Bounds (adjustable).
MAX_CERT_SIZE = 2048
MAX_NAME_LEN = 512
MAX_EXTENSIONS = 16
MAX_SAN = 16
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
_MAX_DNS_LEN = const(253)

# extKeyUsage flags (RFC 5280 §4.2.1.12; only the purposes we look at),
# Certificate.ext_key_usage (atls.x509_chain reads them).
_EKU_SERVER_AUTH = const(1)
_EKU_ANY = const(2)

# OID content octets.
_OID_EC_KEY = const(b"\x2a\x86\x48\xce\x3d\x02\x01")  # 1.2.840.10045.2.1, RFC 5480 §2.1.1
_OID_ECDSA_SHA256 = const(b"\x2a\x86\x48\xce\x3d\x04\x03\x02")  # RFC 5758 §3.2
_OID_RSA = const(b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01")  # RFC 3279 §2.3.1
_OID_RSA_SHA256 = const(b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b")  # RFC 4055 §5
_OID_RSA_PSS = const(b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a")  # RFC 4055 §3.1
_OID_ED25519 = const(b"\x2b\x65\x70")  # 1.3.101.112, RFC 8410 §3
_OID_BASIC_CONSTRAINTS = const(b"\x55\x1d\x13")  # RFC 5280 §4.2.1.9
_OID_KEY_USAGE = const(b"\x55\x1d\x0f")  # §4.2.1.3
_OID_SAN = const(b"\x55\x1d\x11")  # §4.2.1.6
_OID_EKU = const(b"\x55\x1d\x25")  # §4.2.1.12
_OID_ANY_EKU = const(b"\x55\x1d\x25\x00")
_OID_SERVER_AUTH = const(b"\x2b\x06\x01\x05\x05\x07\x03\x01")  # id-kp-serverAuth
# Parameters as raw DER: namedCurve prime256v1 (1.2.840.10045.3.1.7) and
# RSASSA-PSS-params {sha256, mgf1SHA256, saltLength 32} (RFC 4055 §3.1),
# the SHA-256 AlgorithmIdentifiers with NULL parameters, then absent.
_P256_PARAMS = const(b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07")
_PSS_PARAMS = const(
    (
        b"\x30\x34\xa0\x0f\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00"
        b"\xa1\x1c\x30\x1a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08"
        b"\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\xa2\x03\x02\x01\x20",
        b"\x30\x30\xa0\x0d\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"
        b"\xa1\x1a\x30\x18\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08"
        b"\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\xa2\x03\x02\x01\x20",
    )
)


class UnsupportedCertificate(AlertError):
    """Algorithm, critical extension or size we do not handle; always raised
    as UnsupportedCertificate(43) (unsupported_certificate)."""


def _name(t):
    """Name (§4.1.2.4): SEQUENCE OF SET SIZE(1..MAX) OF {OID, value}."""
    s, e = t.read_raw(_SEQUENCE)
    if e - s > MAX_NAME_LEN:
        raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
    n = der.Reader(t.buf, s, e).enter(_SEQUENCE)
    while not n.eof():
        rdn = n.enter(_SET)
        if rdn.eof():
            raise DecodeError()
        while not rdn.eof():
            atv = rdn.enter(_SEQUENCE)
            atv.read_tlv(_OID)
            atv.read_tlv()
            atv.expect_end()
    return s, e


def _alg(r):
    """AlgorithmIdentifier (§4.1.1.2) -> (OID octets, raw parameter octets)."""
    a = r.enter(_SEQUENCE)
    oid = der.read_oid(a)
    return oid, bytes(a.buf[a.pos : a.end])


class Certificate:
    """One parsed certificate; see the module docstring for what is checked.

    Plain attributes: version (1..3), serial (int), sig_alg, not_before and
    not_after (seconds since 1970 UTC), key_type ('p256', 'rsa', 'ed25519'),
    is_ca, path_len (None or int), san_dns (list of str), san_ip (list of
    4- or 16-byte bytes, network order), der (memoryview of
    the input), rsa_len and rsa_pss_only (RSA keys); key_usage: None when
    absent, else bit (1 << n) set for KeyUsage bit n of §4.2.1.3
    (digitalSignature 0x01, keyCertSign 0x20, cRLSign 0x40); ext_key_usage:
    None when absent, else 1 = serverAuth and 2 = anyExtendedKeyUsage present.
    Sliced on access: tbs (memoryview), signature, issuer_raw, subject_raw,
    spki (bytes), public_key (65-byte point, 32-byte key or RSA (n, e)).
    """

    def __init__(self, data, max_size=None):
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if len(mv) > (max_size or MAX_CERT_SIZE):
            raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
        # every attribute first: the instance grows once, before the garbage
        # of parsing, which keeps a small heap less fragmented
        self.der = mv
        self._span = sp = [0] * 12
        self.sig_alg = self.key_type = None
        self.version = self.serial = self.not_before = self.not_after = 0
        self.rsa_pss_only = self.is_ca = False
        self.rsa_len = self._rsa_e = 0
        self.path_len = self.key_usage = self.ext_key_usage = None
        self.san_dns = []
        self.san_ip = []
        r = der.Reader(mv)
        c = r.enter(_SEQUENCE)  # Certificate, RFC 5280 §4.1
        r.expect_end()
        sp[_TBS], sp[_TBS + 1] = c.read_raw(_SEQUENCE)
        alg = c.read_raw(_SEQUENCE)
        unused, sp[_SIG], sp[_SIG + 1] = der.read_bit_string(c)
        c.expect_end()
        if unused:
            raise DecodeError()
        oid, p = _alg(der.Reader(mv, alg[0], alg[1]))
        if oid == _OID_ECDSA_SHA256 and not p:
            self.sig_alg = "ecdsa_sha256"
        elif oid == _OID_ED25519 and not p:
            self.sig_alg = "ed25519"
        elif oid == _OID_RSA_SHA256 and p in (b"", b"\x05\x00"):
            self.sig_alg = "rsa_pkcs1_sha256"
        elif oid == _OID_RSA_PSS and p in _PSS_PARAMS:
            self.sig_alg = "rsa_pss_sha256"
        else:
            raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
        t = der.Reader(mv, sp[_TBS], sp[_TBS + 1]).enter(_SEQUENCE)
        self.version = 1  # §4.1.2.1, as the human number: v1 when absent
        if t.peek() == 0xA0:
            v = t.enter(0xA0)
            self.version = der.read_int(v, 1) + 1
            v.expect_end()
            if self.version not in (2, 3):
                raise DecodeError()  # an explicit v1 is not DER (X.690 §11.5)
        self.serial = der.read_int(t, 20)  # §4.1.2.2: at most 20 octets
        s, e = t.read_raw(_SEQUENCE)
        if mv[s:e] != mv[alg[0] : alg[1]]:
            raise AlertError(_BAD_CERTIFICATE)  # §4.1.2.3: must equal the outer one
        sp[_ISS], sp[_ISS + 1] = _name(t)
        v = t.enter(_SEQUENCE)  # Validity, §4.1.2.5
        self.not_before = der.read_time(v)
        self.not_after = der.read_time(v)
        v.expect_end()
        sp[_SUB], sp[_SUB + 1] = _name(t)
        sp[_SPKI], sp[_SPKI + 1] = t.read_raw(_SEQUENCE)
        # SubjectPublicKeyInfo (§4.1.2.7)
        k = der.Reader(mv, sp[_SPKI], sp[_SPKI + 1]).enter(_SEQUENCE)
        oid, p = _alg(k)
        unused, s, e = der.read_bit_string(k)
        k.expect_end()
        if unused:
            raise DecodeError()
        self.rsa_pss_only = oid == _OID_RSA_PSS
        if oid == _OID_EC_KEY and p == _P256_PARAMS:
            self.key_type = "p256"
            if e - s != 65 or mv[s] != 4:
                raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)  # RFC 5480 §2.2
        elif oid == _OID_ED25519 and not p:
            self.key_type = "ed25519"
            if e - s != 32:
                raise AlertError(_BAD_CERTIFICATE)
        elif (oid == _OID_RSA and p == b"\x05\x00") or (
            self.rsa_pss_only and (not p or p in _PSS_PARAMS)
        ):
            self.key_type = "rsa"
            r = der.Reader(mv, s, e).enter(_SEQUENCE)  # RSAPublicKey, RFC 8017 §A.1.1
            s, e = der.read_uint_span(r, MAX_RSA_BITS // 8)
            self._rsa_e = der.read_int(r, 4)
            r.expect_end()
            top = mv[s]
            bits = 8 * (e - s - 1)
            while top:
                bits += 1
                top >>= 1
            if bits < MIN_RSA_BITS or bits > MAX_RSA_BITS:
                raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
            if self._rsa_e < 3 or not self._rsa_e & 1 or not mv[e - 1] & 1:
                raise AlertError(_BAD_CERTIFICATE)
            self.rsa_len = e - s
        else:
            raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
        sp[_KEY], sp[_KEY + 1] = s, e
        if self.version > 1:  # unique identifiers (§4.1.2.8): skipped
            for tag in (0x81, 0x82):
                if t.peek() == tag:
                    t.read_tlv()
        if self.version == 3 and t.peek() == 0xA3:
            x = t.enter(0xA3)
            self._extensions(x.enter(_SEQUENCE))
            x.expect_end()
        t.expect_end()

    def _extensions(self, exts):
        """Extensions (§4.2), SIZE(1..MAX); each known one at most once."""
        mv = self.der
        seen = 0
        count = 0
        if exts.eof():
            raise DecodeError()
        while not exts.eof():
            count += 1
            if count > MAX_EXTENSIONS:
                raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
            x = exts.enter(_SEQUENCE)
            oid = der.read_oid(x)
            critical = False
            if x.peek() == _BOOLEAN:
                critical = der.read_bool(x)
                if not critical:
                    raise DecodeError()  # DEFAULT FALSE encoded (X.690 §11.5)
            r = x.enter(_OCTET_STRING)  # extnValue
            x.expect_end()
            if oid == _OID_BASIC_CONSTRAINTS:
                bit = 1
                b = r.enter(_SEQUENCE)
                if b.peek() == _BOOLEAN:
                    self.is_ca = der.read_bool(b)
                    if not self.is_ca:
                        raise DecodeError()
                if b.peek() == _INTEGER:
                    if not self.is_ca:
                        raise AlertError(_BAD_CERTIFICATE)  # §4.2.1.9
                    self.path_len = der.read_int(b, 4)
                    if self.path_len < 0:
                        raise DecodeError()
                b.expect_end()
            elif oid == _OID_KEY_USAGE:
                bit = 2
                _, s, e = der.read_bit_string(r)
                ku = 0
                for i in range(min(9, 8 * (e - s))):
                    if mv[s + (i >> 3)] & (0x80 >> (i & 7)):
                        ku |= 1 << i
                if not ku:
                    raise AlertError(_BAD_CERTIFICATE)  # §4.2.1.3: some bit set
                self.key_usage = ku
            elif oid == _OID_SAN:
                bit = 4  # GeneralNames: keep dNSName and iPAddress, skip the other forms
                g = r.enter(_SEQUENCE)
                n = 0
                if g.eof():
                    raise DecodeError()
                while not g.eof():
                    n += 1
                    if n > MAX_SAN:
                        raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)
                    tag, s, e = g.read_tlv()
                    if tag & 0xC0 != 0x80 or tag & 0x1F > 8:
                        raise DecodeError()  # not a GeneralName choice [0]..[8]
                    if tag == _DNS_NAME:
                        if e == s or e - s > _MAX_DNS_LEN:
                            raise AlertError(_BAD_CERTIFICATE)
                        for i in range(s, e):
                            if mv[i] < 0x21 or mv[i] > 0x7E:
                                raise AlertError(_BAD_CERTIFICATE)
                        self.san_dns.append(bytes(mv[s:e]).decode())
                    elif tag == _IP_ADDRESS:
                        if e - s not in (4, 16):
                            raise AlertError(_BAD_CERTIFICATE)  # §4.2.1.6: 4 or 16 octets
                        self.san_ip.append(bytes(mv[s:e]))
            elif oid == _OID_EKU:
                bit = 8
                k = r.enter(_SEQUENCE)
                self.ext_key_usage = 0
                if k.eof():
                    raise DecodeError()
                while not k.eof():
                    p = der.read_oid(k)
                    if p == _OID_SERVER_AUTH:
                        self.ext_key_usage |= _EKU_SERVER_AUTH
                    elif p == _OID_ANY_EKU:
                        self.ext_key_usage |= _EKU_ANY
            elif critical:
                raise UnsupportedCertificate(_UNSUPPORTED_CERTIFICATE)  # §4.2
            else:
                continue
            r.expect_end()
            if seen & bit:
                raise AlertError(_BAD_CERTIFICATE)  # §4.2: at most one instance
            seen |= bit

    def view(self, name):
        """A DER field as a memoryview into .der, without a copy: name is
        "tbs", "signature", "issuer_raw", "subject_raw" or "spki" (the chain
        checks compare names and keys this way)."""
        if name == "tbs":
            i = _TBS
        elif name == "signature":
            i = _SIG
        elif name == "issuer_raw":
            i = _ISS
        elif name == "subject_raw":
            i = _SUB
        elif name == "spki":
            i = _SPKI
        else:
            raise AttributeError(name)
        return self.der[self._span[i] : self._span[i + 1]]

    def __getattr__(self, name):
        # Byte-valued fields, sliced from the DER on each access (one function
        # rather than six properties: bytecode costs RAM when not frozen).
        # tbs: memoryview; public_key: 65-byte P-256 point, 32-byte Ed25519
        # key or RSA (n, e); signature, issuer_raw, subject_raw, spki: bytes.
        if name == "public_key":
            k = bytes(self.der[self._span[_KEY] : self._span[_KEY + 1]])
            if self.key_type == "rsa":
                return int.from_bytes(k, "big"), self._rsa_e
            return k
        if name == "tbs":
            return self.view(name)
        return bytes(self.view(name))


def __getattr__(name):
    # verify_chain, verify_signed_by, spki_sha256, hostname_matches: from
    # atls.x509_chain, loaded on first use (PEP 562)
    if name[:1] == "_":  # __path__, __all__, ...
        raise AttributeError(name)
    from atls import x509_chain

    value = getattr(x509_chain, name)
    globals()[name] = value  # later reads find it here
    return value
