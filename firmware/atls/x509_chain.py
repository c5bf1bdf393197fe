"""X.509 chain validation for the TLS 1.3 client (RFC 5280 §6.1 subset,
RFC 8446 §4.4.2) on certificates parsed by atls.x509; the names are also
read as atls.x509.<name> (verify_chain, verify_signed_by, spki_sha256,
hostname_matches, ip_address).

Chain validation, `verify_chain` (RFC 5280 §6.1 subset, RFC 8446 §4.4.2):
the chain is leaf first and in issuing order; certificates after the point
where trust is reached are ignored, unparsed.  Names chain by raw DER
equality (issuer of one == subject of the next).  Trust is reached at the
first certificate that (a) has a pinned SPKI SHA-256, (b) equals an anchor
(same subject and SPKI), or (c) is correctly signed by an anchor whose
subject is its issuer.  Every issuer (intermediate or anchor) must be a CA
(basicConstraints cA), have keyCertSign when keyUsage is present, and
respect pathLenConstraint (self-issued certificates do not count).  The leaf
needs digitalSignature when keyUsage is present (RFC 8446 §4.4.2.2) and
serverAuth or anyExtendedKeyUsage when extKeyUsage is present; it need not
be a CA.  Alerts: more than max_depth certificates, bad signature, name
mismatch, unusable issuer, hostname mismatch: 42 bad_certificate; no trust
reached: 48 unknown_ca; outside validity: 45 certificate_expired; empty
chain: 50 decode_error (RFC 8446 §4.4.2.4).

Validity dates -- the device has no trusted clock: with `now=None` (the
default) validity periods are NOT checked.  Pass `now` (seconds since
1970-01-01 UTC) only from a trusted time source; notBefore <= now <= notAfter
is then required of every certificate used, anchors included (alert 45).
Without a trusted clock, pass `time_floor`, a lower bound on the current time
such as the firmware build time: a certificate whose notAfter is before it is
rejected (45); notBefore is not checked against it.

Hostnames (RFC 6125 §6.4): matched against dNSName SANs only, never the
subject CN; ASCII case-insensitive; one trailing dot ignored; a wildcard only
as the whole left-most label of a name with at least two more labels
("*.example.com" matches "a.example.com", not "example.com" nor
"a.b.example.com").  A hostname that is an IP literal (a colon: IPv6, RFC 4291
§2.2 text forms, an embedded IPv4 tail included; only digits and dots:
IPv4 dotted quad) is matched against iPAddress SANs instead, byte for byte
(RFC 5280 §4.2.1.6, RFC 6125 §6.2.1 and §1.7.2: never a dNSName); a
literal that does not parse matches nothing.

RAM (unix port, 64-bit): chain checks need the signature modules too:
minimum heaps measured 52K (P-256, two certificates), 48K (Ed25519), 40K
(RSA-2048) (tests/test_x509.py).
"""

from atls.errors import AlertError, ATLSError, DecodeError, UsageError
from atls.x509 import Certificate

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# RFC 8446 §6.2 alert descriptions.
_BAD_CERTIFICATE = const(42)
_CERTIFICATE_EXPIRED = const(45)
_UNKNOWN_CA = const(48)
# keyUsage flags: 1 << bit number of RFC 5280 §4.2.1.3 (Certificate.key_usage).
_KU_DIGITAL_SIGNATURE = const(0x01)
_KU_KEY_CERT_SIGN = const(0x20)
# Certificate.ext_key_usage flags: serverAuth, anyExtendedKeyUsage (§4.2.1.12).
_EKU_SERVER_AUTH = const(1)
_EKU_ANY = const(2)


def spki_sha256(cert):
    """SHA-256 of the DER SubjectPublicKeyInfo (the usual SPKI pin)."""
    from atls.crypto.backend import sha256

    return sha256(cert.view("spki")).digest()


def verify_signed_by(cert, issuer):
    """Check cert's signature with issuer's public key (alert 42 if not)."""
    alg = cert.sig_alg
    kt = issuer.key_type
    sig = cert.signature
    tbs = cert.tbs
    try:
        if alg == "ecdsa_sha256" and kt == "p256":
            # p256 parses the Ecdsa-Sig-Value (RFC 5480 §2.2) as strict DER
            from atls.crypto import p256

            p256.ecdsa_verify(issuer.public_key, tbs, sig)
        elif alg == "ed25519" and kt == "ed25519" and len(sig) == 64:
            from atls.crypto import ed25519

            ed25519.verify(issuer.public_key, tbs, sig)
        elif (
            kt == "rsa"
            and len(sig) == issuer.rsa_len
            and (alg == "rsa_pss_sha256" or (alg == "rsa_pkcs1_sha256" and not issuer.rsa_pss_only))
        ):
            from atls.crypto import rsa

            n, e = issuer.public_key
            if alg == "rsa_pss_sha256":
                rsa.verify_pss_sha256(n, e, tbs, sig)
            else:
                rsa.verify_pkcs1_sha256(n, e, tbs, sig)
        else:
            raise AlertError(_BAD_CERTIFICATE)  # key and signature algorithm do not fit
    except (ATLSError, UsageError):
        raise AlertError(_BAD_CERTIFICATE)  # bad certificate signature


def hostname_matches(pattern, hostname):
    """RFC 6125 §6.4 dNSName match (rules in the module docstring)."""
    p = pattern.lower()
    h = hostname.lower()
    if p.endswith("."):
        p = p[:-1]
    if h.endswith("."):
        h = h[:-1]
    if not h or not p or "*" in h or ".." in h or h[0] == "." or ".." in p:
        return False
    if p.startswith("*."):
        p = p[2:]
        dot = h.find(".")
        if "*" in p or "." not in p or dot <= 0:
            return False
        h = h[dot + 1 :]
    return "*" not in p and p == h


def ip_address(text):
    """The 4 or 16 bytes of an IPv4 dotted quad or an IPv6 text address
    (RFC 4291 §2.2), or None if `text` is neither."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    if ":" not in text:
        parts = text.split(".")
        if len(parts) != 4:
            return None
        out = bytearray()
        for p in parts:
            if (
                not p
                or len(p) > 3
                or not p.isdigit()
                or int(p) > 255
                or (len(p) > 1 and p[0] == "0")
            ):
                return None  # (a leading zero reads as octal elsewhere: refused)
            out.append(int(p))
        return bytes(out)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    tail = b""
    last = text.rfind(":")
    if "." in text[last + 1 :]:  # ::ffff:192.0.2.1
        tail = ip_address(text[last + 1 :])
        if tail is None:
            return None
        text = text[: last + 1] + "0:0"
    halves = text.split("::")
    if len(halves) > 2:
        return None
    groups = []
    for half in halves:
        words = half.split(":") if half else []
        for w in words:
            if not 1 <= len(w) <= 4 or w.strip("0123456789abcdefABCDEF"):
                return None
        groups.append(words)
    n = sum(len(g) for g in groups)
    if len(halves) == 2:
        if n > 7:
            return None
        words = groups[0] + ["0"] * (8 - n) + groups[1]
    elif n != 8:
        return None
    else:
        words = groups[0]
    out = b""
    for w in words:
        out += int(w, 16).to_bytes(2, "big")
    return out[:12] + tail if tail else out


def _name_matches(leaf, hostname):
    """hostname against the leaf's SANs: iPAddress for an IP literal (see
    atls.tls.handshake.sni), dNSName otherwise."""
    if isinstance(hostname, (bytes, bytearray)):
        hostname = hostname.decode()
    if ":" in hostname or not hostname.strip("0123456789."):
        ip = ip_address(hostname)
        return ip is not None and ip in leaf.san_ip
    for name in leaf.san_dns:
        if hostname_matches(name, hostname):
            return True
    return False


def _check(cert, below, now, floor):
    """Validity (when a clock or floor is given); for an issuer (below is
    the count of non-self-issued intermediates under it) the CA rules."""
    if now is not None and (now < cert.not_before or now > cert.not_after):
        raise AlertError(_CERTIFICATE_EXPIRED)  # outside validity period
    if floor is not None and cert.not_after < floor:
        raise AlertError(_CERTIFICATE_EXPIRED)  # expired before the time floor
    if below is None:
        return
    if not cert.is_ca:
        raise AlertError(_BAD_CERTIFICATE)  # issuer not a CA; RFC 5280 §6.1.4 (k)
    if cert.key_usage is not None and not cert.key_usage & _KU_KEY_CERT_SIGN:
        raise AlertError(_BAD_CERTIFICATE)  # issuer lacks keyCertSign; §6.1.4 (n)
    if cert.path_len is not None and below > cert.path_len:
        raise AlertError(_BAD_CERTIFICATE)  # pathLenConstraint; §6.1.4 (l), (m)


def verify_chain(
    chain_der_list,
    anchors=(),
    pins=(),
    now=None,
    max_depth=3,
    hostname=None,
    time_floor=None,
    max_cert_size=None,
):
    """Validate a TLS Certificate chain (leaf first); return the leaf Certificate.

    anchors: Certificate objects (or DER); pins: 32-byte SPKI SHA-256 values.
    Raises AlertError as the module docstring says; UsageError if neither
    anchors nor pins are given.
    """
    if not anchors and not pins:
        raise UsageError("no trust anchors or pins")
    n = len(chain_der_list)
    if n == 0:
        raise DecodeError()  # RFC 8446 §4.4.2.4
    if n > max_depth:
        raise AlertError(_BAD_CERTIFICATE)  # chain too long
    anchors = [a if isinstance(a, Certificate) else Certificate(a, max_cert_size) for a in anchors]
    leaf = cur = Certificate(chain_der_list[0], max_cert_size)
    if leaf.key_usage is not None and not leaf.key_usage & _KU_DIGITAL_SIGNATURE:
        raise AlertError(_BAD_CERTIFICATE)  # leaf lacks digitalSignature
    if leaf.ext_key_usage is not None and not leaf.ext_key_usage & (_EKU_SERVER_AUTH | _EKU_ANY):
        raise AlertError(_BAD_CERTIFICATE)  # leaf not for serverAuth
    if hostname is not None and not _name_matches(leaf, hostname):
        raise AlertError(_BAD_CERTIFICATE)  # hostname mismatch
    _check(leaf, None, now, time_floor)
    below = 0  # non-self-issued intermediates under cur's issuer
    i = 0
    while True:
        if pins and spki_sha256(cur) in pins:
            return leaf
        failure = None
        for a in anchors:
            if cur.view("subject_raw") == a.view("subject_raw") and cur.view("spki") == a.view(
                "spki"
            ):
                return leaf
            if a.view("subject_raw") == cur.view("issuer_raw"):
                try:
                    _check(a, below, now, time_floor)
                    verify_signed_by(cur, a)
                    return leaf
                except AlertError as exc:
                    failure = exc
        if failure is not None:
            raise failure
        i += 1
        if i >= n:
            raise AlertError(_UNKNOWN_CA)  # no trust anchor
        nxt = Certificate(chain_der_list[i], max_cert_size)
        if nxt.view("subject_raw") != cur.view("issuer_raw"):
            raise AlertError(_BAD_CERTIFICATE)  # issuer name mismatch
        _check(nxt, below, now, time_floor)
        verify_signed_by(cur, nxt)
        if nxt.view("subject_raw") != nxt.view("issuer_raw"):
            below += 1
        cur = nxt
