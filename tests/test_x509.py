"""atls.x509: certificate fields and chain validation (RFC 5280 §4.1, §4.2,
§6.1 subset; RFC 8446 §4.4.2; RFC 6125 §6.4 host names).

Certificates are generated here with `cryptography` (P-256 CA -> intermediate
-> leaf; RSA-2048 with PKCS#1 v1.5 and PSS; Ed25519; mixes), parsed by
atls.x509 and compared field by field with what `cryptography` reports; a
few are built from raw DER (`_raw_cert`) for cases `cryptography` will not
write (v1, duplicate extensions, explicit DEFAULT values).  Parsing and chain
checks run under CPython and under the MicroPython unix port (firmware as
mpy-cross .mpy, as deployed); the fuzz tests check that nothing but
atls.errors.AlertError escapes.
"""

import datetime
import hashlib
import random
import subprocess
from pathlib import Path

import pytest
from conftest import TESTS
from cryptography import x509 as cx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from mpycross import compiled
from x509_eval import digest, fuzz, summary

from atls import x509
from atls.crypto import ed25519 as a_ed25519
from atls.crypto import p256 as a_p256
from atls.errors import AlertError, DecodeError, UsageError

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 1, 1, tzinfo=UTC)
NOW = int((T0 + datetime.timedelta(days=10)).timestamp())
PSS32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def name(cn):
    return cx.Name(
        [
            cx.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            cx.NameAttribute(NameOID.ORGANIZATION_NAME, "atls test"),
            cx.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_of(cert):
    return cert.public_bytes(Encoding.DER)


def make(
    subject,
    key,
    issuer=None,
    ikey=None,
    ca=False,
    path_len=None,
    ku="auto",
    eku=("server",),
    san=None,
    nb=T0,
    na=None,
    pss=False,
    hash_alg=None,
    extra=(),
    bc=True,
    bc_critical=True,
):
    """One certificate from `cryptography`; issuer defaults to self-signed."""
    issuer = issuer or subject
    ikey = ikey or key
    b = (
        cx.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(cx.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na or nb + datetime.timedelta(days=365))
    )
    if bc:
        b = b.add_extension(cx.BasicConstraints(ca=ca, path_length=path_len), critical=bc_critical)
    if ku == "auto":
        ku = ("cert_sign", "crl_sign") if ca else ("digital_signature",)
    if ku is not None:
        flags = dict.fromkeys(
            [
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        for k in ku:
            flags["key_cert_sign" if k == "cert_sign" else k] = True
        b = b.add_extension(cx.KeyUsage(**flags), critical=True)
    if san:
        b = b.add_extension(
            cx.SubjectAlternativeName([cx.DNSName(s) if isinstance(s, str) else s for s in san]),
            critical=False,
        )
    if eku and not ca:
        oids = {
            "server": ExtendedKeyUsageOID.SERVER_AUTH,
            "client": ExtendedKeyUsageOID.CLIENT_AUTH,
            "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        }
        b = b.add_extension(cx.ExtendedKeyUsage([oids[e] for e in eku]), critical=False)
    b = b.add_extension(cx.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    for ext, crit in extra:
        b = b.add_extension(ext, critical=crit)
    if isinstance(ikey, ed25519.Ed25519PrivateKey):
        return der_of(b.sign(ikey, None))
    h = hash_alg or hashes.SHA256()
    if pss:
        return der_of(b.sign(ikey, h, rsa_padding=PSS32 if pss is True else pss))
    return der_of(b.sign(ikey, h))


@pytest.fixture(scope="module")
def keys():
    return {
        "p256_root": ec.generate_private_key(ec.SECP256R1()),
        "p256_inter": ec.generate_private_key(ec.SECP256R1()),
        "p256_leaf": ec.generate_private_key(ec.SECP256R1()),
        "p256_other": ec.generate_private_key(ec.SECP256R1()),
        "rsa_root": rsa.generate_private_key(65537, 2048),
        "rsa_leaf": rsa.generate_private_key(65537, 2048),
        "ed_root": ed25519.Ed25519PrivateKey.generate(),
        "ed_leaf": ed25519.Ed25519PrivateKey.generate(),
    }


SAN = ["device.example.com", "*.example.org", "Mixed.Example.NET"]


@pytest.fixture(scope="module")
def pki(keys):
    k = keys
    c = {}
    c["root"] = make("root", k["p256_root"], ca=True)
    c["inter"] = make("inter", k["p256_inter"], "root", k["p256_root"], ca=True, path_len=0)
    c["leaf"] = make("leaf", k["p256_leaf"], "inter", k["p256_inter"], san=SAN)
    c["leaf_root"] = make("leaf", k["p256_leaf"], "root", k["p256_root"], san=SAN)
    c["other_root"] = make("root", k["p256_other"], ca=True)  # same name, other key
    c["rsa_root"] = make("rsa root", k["rsa_root"], ca=True, path_len=2)
    c["rsa_root_pss"] = make("rsa root", k["rsa_root"], ca=True, pss=True)
    c["rsa_leaf_pkcs1"] = make("rsa leaf", k["rsa_leaf"], "rsa root", k["rsa_root"], san=SAN)
    c["rsa_leaf_pss"] = make(
        "rsa leaf", k["rsa_leaf"], "rsa root", k["rsa_root"], san=SAN, pss=True
    )
    c["ed_root"] = make("ed root", k["ed_root"], ca=True)
    c["ed_leaf"] = make("ed leaf", k["ed_leaf"], "ed root", k["ed_root"], san=SAN)
    # mixed algorithms: a P-256 leaf under the RSA root, an Ed25519 leaf under P-256
    c["p256_under_rsa"] = make("leaf", k["p256_leaf"], "rsa root", k["rsa_root"], san=SAN)
    c["ed_under_p256"] = make("ed leaf", k["ed_leaf"], "root", k["p256_root"], san=SAN)
    c["rsa_under_ed"] = make("rsa leaf", k["rsa_leaf"], "ed root", k["ed_root"], san=SAN, eku=None)
    c["inter_via_rsa"] = make("inter", k["p256_inter"], "rsa root", k["rsa_root"], ca=True)
    # dates on both sides of 2050: UTCTime vs GeneralizedTime (RFC 5280 §4.1.2.5)
    c["far_dates"] = make(
        "far",
        k["p256_leaf"],
        "root",
        k["p256_root"],
        san=SAN,
        nb=datetime.datetime(1955, 3, 1, 12, 30, 5, tzinfo=UTC),
        na=datetime.datetime(2061, 2, 28, 23, 59, 59, tzinfo=UTC),
    )
    c["selfsigned"] = make("device", k["p256_leaf"], san=SAN)
    c["no_ext_ku"] = make(
        "bare", k["p256_leaf"], "root", k["p256_root"], ku=None, eku=None, bc=False
    )
    return c


# ---- field-by-field comparison with `cryptography` -----------------------

_SIG = {
    "1.2.840.10045.4.3.2": "ecdsa_sha256",
    "1.2.840.113549.1.1.11": "rsa_pkcs1_sha256",
    "1.2.840.113549.1.1.10": "rsa_pss_sha256",
    "1.3.101.112": "ed25519",
}
_KU = [
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
]


def _ext(cc, cls):
    try:
        return cc.extensions.get_extension_for_class(cls).value
    except cx.ExtensionNotFound:
        return None


def expected_fields(data):
    """Every field as `cryptography` sees it, in x509_eval.summary's layout."""
    cc = cx.load_der_x509_certificate(data)
    pub = cc.public_key()
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    if isinstance(pub, ec.EllipticCurvePublicKey):
        kt, pk = "p256", sha(pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    elif isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        kt = "rsa"
        pk = sha(nums.n.to_bytes((pub.key_size + 7) // 8, "big")) + ":" + str(nums.e)
    else:
        kt, pk = "ed25519", sha(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))
    bc = _ext(cc, cx.BasicConstraints)
    ku = _ext(cc, cx.KeyUsage)
    kubits = None
    if ku is not None:
        kubits = 0
        for i, f in enumerate(_KU):
            if f in ("encipher_only", "decipher_only") and not ku.key_agreement:
                continue
            if getattr(ku, f):
                kubits |= 1 << i
    eku = _ext(cc, cx.ExtendedKeyUsage)
    ekubits = None
    if eku is not None:
        ekubits = (1 if ExtendedKeyUsageOID.SERVER_AUTH in eku else 0) | (
            2 if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku else 0
        )
    san = _ext(cc, cx.SubjectAlternativeName)
    dns = san.get_values_for_type(cx.DNSName) if san is not None else []
    spki = pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    f = [
        cc.version.value + 1,
        cc.serial_number,
        _SIG[cc.signature_algorithm_oid.dotted_string],
        kt,
        pk,
        int(cc.not_valid_before_utc.timestamp()),
        int(cc.not_valid_after_utc.timestamp()),
        int(bool(bc and bc.ca)),
        bc.path_length if bc else None,
        kubits,
        ekubits,
        ",".join(dns) or "-",
        sha(cc.tbs_certificate_bytes),
        sha(cc.signature),
        sha(cc.issuer.public_bytes()),
        sha(cc.subject.public_bytes()),
        sha(spki),
    ]
    return "|".join(str(x) for x in f)


FIELD_CERTS = [
    "root",
    "inter",
    "leaf",
    "rsa_root",
    "rsa_root_pss",
    "rsa_leaf_pkcs1",
    "rsa_leaf_pss",
    "ed_root",
    "ed_leaf",
    "p256_under_rsa",
    "ed_under_p256",
    "rsa_under_ed",
    "far_dates",
    "no_ext_ku",
]


@pytest.mark.parametrize("which", FIELD_CERTS)
def test_rfc5280_s4_1_fields_match_cryptography(pki, which):
    data = pki[which]
    c = x509.Certificate(data)
    assert summary(c) == expected_fields(data)
    assert digest(c) == hashlib.sha256(summary(c).encode()).hexdigest()  # as MicroPython checks
    cc = cx.load_der_x509_certificate(data)
    # raw values, not only their hashes
    assert bytes(c.tbs) == cc.tbs_certificate_bytes
    assert c.signature == cc.signature
    assert c.issuer_raw == cc.issuer.public_bytes()
    assert c.subject_raw == cc.subject.public_bytes()
    spki = cc.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert c.spki == spki and x509.spki_sha256(c) == hashlib.sha256(spki).digest()


@pytest.mark.parametrize("which", FIELD_CERTS)
def test_rebuild_public_key_and_check_signature_over_parsed_tbs(pki, which):
    """Rebuild: the parsed key re-encodes to the same SPKI in `cryptography`,
    and the parsed signature verifies over the parsed TBS with the issuer key."""
    c = x509.Certificate(pki[which])
    if c.key_type == "p256":
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), c.public_key)
    elif c.key_type == "rsa":
        pub = rsa.RSAPublicNumbers(c.public_key[1], c.public_key[0]).public_key()
    else:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(c.public_key)
    assert pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == c.spki
    cc = cx.load_der_x509_certificate(pki[which])
    issuer = [
        x
        for x in pki.values()
        if cx.load_der_x509_certificate(x).subject == cc.issuer
        and _verifies(cx.load_der_x509_certificate(x).public_key(), c)
    ]
    assert issuer, "no issuer in the fixture verifies the parsed signature"


def _verifies(pub, c):
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(c.signature, bytes(c.tbs), ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pad = PSS32 if c.sig_alg == "rsa_pss_sha256" else padding.PKCS1v15()
            pub.verify(c.signature, bytes(c.tbs), pad, hashes.SHA256())
        else:
            pub.verify(c.signature, bytes(c.tbs))
        return True
    except Exception:  # noqa: BLE001
        return False


def test_rfc5280_s4_1_2_5_times_across_2050(pki):
    c = x509.Certificate(pki["far_dates"])
    assert c.not_before == int(datetime.datetime(1955, 3, 1, 12, 30, 5, tzinfo=UTC).timestamp())
    assert c.not_after == int(datetime.datetime(2061, 2, 28, 23, 59, 59, tzinfo=UTC).timestamp())
    assert b"\x18\x0f20610228235959Z" in pki["far_dates"]  # GeneralizedTime really used


def test_rfc8448_certificate_needs_min_rsa_bits_1024(monkeypatch):
    """The RFC 8448 §3 server certificate (RSA-1024) is refused with the
    default MIN_RSA_BITS = 2048 (alert 43) and parses when it is lowered."""
    from rfc8448 import Trace

    msg = Trace(3).value("construct a Certificate handshake message", "Certificate")
    # Certificate message (RFC 8446 §4.4.2): type, len(3), ctx len 0, list len(3), cert len(3)
    data = msg[11 : 11 + int.from_bytes(msg[8:11], "big")]
    monkeypatch.setattr(x509, "MIN_RSA_BITS", 2048)  # other tests may have lowered it
    with pytest.raises(AlertError) as ei:
        x509.Certificate(data)
    assert ei.value.description == 43
    monkeypatch.setattr(x509, "MIN_RSA_BITS", 1024)
    c = x509.Certificate(data)
    assert summary(c) == expected_fields(data)
    assert c.key_type == "rsa" and c.rsa_len == 128 and c.san_dns == []


# ---- raw DER builder for what `cryptography` will not write --------------


def _enc(tag, body):
    n = len(body)
    ln = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + ln + body


def _int(v):
    return _enc(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


ECDSA_SHA256 = _enc(0x30, _enc(0x06, bytes.fromhex("2a8648ce3d040302")))


def _ext_der(oid_hex, value, critical=False):
    return _enc(
        0x30,
        _enc(0x06, bytes.fromhex(oid_hex))
        + (b"\x01\x01\xff" if critical else b"")
        + _enc(0x04, value),
    )


def _raw_cert(
    key, ikey, exts=(), version=2, serial=7, subject="raw", issuer="root", crit_false=False
):
    """TBSCertificate assembled by hand (RFC 5280 §4.1) and signed ECDSA-SHA256."""
    tbs = b""
    if version is not None:
        tbs += _enc(0xA0, _int(version))
    tbs += _int(serial) + ECDSA_SHA256 + name(issuer).public_bytes()
    tbs += _enc(0x30, _enc(0x17, b"240101000000Z") + _enc(0x17, b"250101000000Z"))
    tbs += name(subject).public_bytes()
    tbs += key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if exts:
        tbs += _enc(0xA3, _enc(0x30, b"".join(exts)))
    tbs = _enc(0x30, tbs)
    sig = ikey.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _enc(0x30, tbs + ECDSA_SHA256 + _enc(0x03, b"\x00" + sig))


BC_CA = "551d13", _enc(0x30, b"\x01\x01\xff")


def test_raw_builder_rebuilds_cryptography_layout(keys, pki):
    """Sanity of the raw builder: parse -> pieces -> rebuild gives the same DER."""
    c = x509.Certificate(pki["leaf"])
    cc = cx.load_der_x509_certificate(pki["leaf"])
    rebuilt = _enc(0x30, bytes(c.tbs) + ECDSA_SHA256 + _enc(0x03, b"\x00" + c.signature))
    assert rebuilt == pki["leaf"]
    assert cc.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"


def test_rfc5280_s4_1_2_1_version1_certificate(keys):
    data = _raw_cert(keys["p256_leaf"], keys["p256_root"], version=None)
    c = x509.Certificate(data)
    assert c.version == 1 and not c.is_ca and c.san_dns == [] and c.key_usage is None
    assert c.serial == 7 == cx.load_der_x509_certificate(data).serial_number


@pytest.mark.parametrize(
    "case",
    [
        "v1_explicit",
        "v4",
        "dup_ext",
        "bc_false_explicit",
        "crit_false_explicit",
        "pathlen_no_ca",
        "empty_exts",
        "ku_empty",
        "trailing_in_tbs",
        "long_serial",
    ],
)
def test_rfc5280_structural_rejections(keys, case):
    k, ik = keys["p256_leaf"], keys["p256_root"]
    ku = _ext_der("551d0f", _enc(0x03, b"\x07\x80"), True)
    want = 50
    if case == "v1_explicit":
        data = _raw_cert(k, ik, version=0)  # DEFAULT v1 must be omitted (X.690 §11.5)
    elif case == "v4":
        data = _raw_cert(k, ik, version=3)
    elif case == "dup_ext":
        data, want = _raw_cert(k, ik, exts=[ku, ku]), 42  # §4.2: at most one instance
    elif case == "bc_false_explicit":
        data = _raw_cert(k, ik, exts=[_ext_der("551d13", _enc(0x30, b"\x01\x01\x00"))])
    elif case == "crit_false_explicit":
        data = _raw_cert(
            k,
            ik,
            exts=[
                _enc(0x30, bytes.fromhex("0603551d0f010100") + _enc(0x04, _enc(0x03, b"\x07\x80")))
            ],
        )
    elif case == "pathlen_no_ca":
        data, want = _raw_cert(k, ik, exts=[_ext_der("551d13", _enc(0x30, _int(1)))]), 42
    elif case == "empty_exts":
        data = _raw_cert(k, ik, exts=[b""])
    elif case == "ku_empty":
        data, want = _raw_cert(k, ik, exts=[_ext_der("551d0f", _enc(0x03, b"\x00"))]), 42
    elif case == "trailing_in_tbs":
        bc_trailing = _enc(0x30, b"\x01\x01\xff") + b"\x05\x00"  # bytes after the SEQUENCE
        data = _raw_cert(k, ik, exts=[_ext_der("551d13", bc_trailing)])
    elif case == "long_serial":
        data = _raw_cert(k, ik, serial=1 << 170)  # §4.1.2.2: at most 20 octets
    with pytest.raises(AlertError) as ei:
        x509.Certificate(data)
    assert ei.value.description == want


def test_negative_serial_and_ip_san_tolerated(keys):
    """§4.1.2.2 asks users to handle negative serials gracefully; URI SANs
    are skipped, dNSName and iPAddress are kept (§4.2.1.6)."""
    san = _ext_der(
        "551d11",
        _enc(
            0x30,
            _enc(0x87, bytes([10, 0, 0, 1])) + _enc(0x86, b"https://x") + _enc(0x82, b"a.example"),
        ),
    )
    data = _raw_cert(keys["p256_leaf"], keys["p256_root"], serial=-5, exts=[san])
    c = x509.Certificate(data)
    assert c.serial == -5 and c.san_dns == ["a.example"]
    assert c.san_ip == [bytes([10, 0, 0, 1])]


@pytest.mark.parametrize("n", [0, 3, 5, 8, 15, 32])
def test_rfc5280_s4_2_1_6_ip_san_is_4_or_16_octets(keys, n):
    """§4.2.1.6: in subjectAltName an iPAddress is 4 (IPv4) or 16 (IPv6)
    octets; 8 and 32 are the name-constraints form, anything else is
    malformed: bad_certificate (42)."""
    ok = _ext_der("551d11", _enc(0x30, _enc(0x87, bytes(range(16))) + _enc(0x87, b"\x7f\0\0\1")))
    c = x509.Certificate(_raw_cert(keys["p256_leaf"], keys["p256_root"], exts=[ok]))
    assert c.san_ip == [bytes(range(16)), b"\x7f\0\0\1"] and c.san_dns == []
    bad = _ext_der("551d11", _enc(0x30, _enc(0x87, bytes(n))))
    with pytest.raises(AlertError) as ei:
        x509.Certificate(_raw_cert(keys["p256_leaf"], keys["p256_root"], exts=[bad]))
    assert ei.value.description == 42


@pytest.mark.parametrize(
    "case,want",
    [
        ("p384_key", 43),
        ("ecdsa_sha384", 43),
        ("rsa_sha384", 43),
        ("pss_salt20", 43),
        ("rsa_1024", 43),
        ("critical_unknown_ext", 43),
        ("too_many_san", 43),
        ("too_big", 43),
    ],
)
def test_unsupported_certificates_alert_43(keys, case, want, monkeypatch):
    monkeypatch.setattr(x509, "MIN_RSA_BITS", 2048)  # the defaults, whatever ran before
    monkeypatch.setattr(x509, "MAX_SAN", 16)
    monkeypatch.setattr(x509, "MAX_CERT_SIZE", 2048)
    k = keys
    if case == "p384_key":
        data = make("x", ec.generate_private_key(ec.SECP384R1()), "root", k["p256_root"])
    elif case == "ecdsa_sha384":
        data = make("x", k["p256_leaf"], "root", k["p256_root"], hash_alg=hashes.SHA384())
    elif case == "rsa_sha384":
        data = make("x", k["rsa_leaf"], "rsa root", k["rsa_root"], hash_alg=hashes.SHA384())
    elif case == "pss_salt20":
        data = make(
            "x",
            k["rsa_leaf"],
            "rsa root",
            k["rsa_root"],
            pss=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20),
        )
    elif case == "rsa_1024":
        data = make("x", rsa.generate_private_key(65537, 1024), "root", k["p256_root"])
    elif case == "critical_unknown_ext":  # RFC 5280 §4.2
        ext = cx.UnrecognizedExtension(cx.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
        data = make("x", k["p256_leaf"], "root", k["p256_root"], extra=[(ext, True)])
    elif case == "too_many_san":
        data = make(
            "x",
            k["p256_leaf"],
            "root",
            k["p256_root"],
            san=["h%d.example" % i for i in range(x509.MAX_SAN + 1)],
        )
    elif case == "too_big":
        data = make(
            "x", k["p256_leaf"], "root", k["p256_root"], san=["%s.example.com" % ("a" * 200)] * 12
        )
        assert len(data) > x509.MAX_CERT_SIZE
    with pytest.raises(AlertError) as ei:
        x509.Certificate(data)
    assert ei.value.description == want
    assert isinstance(ei.value, x509.UnsupportedCertificate)


def test_noncritical_unknown_extension_skipped(keys):
    ext = cx.UnrecognizedExtension(cx.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    data = make("x", keys["p256_leaf"], "root", keys["p256_root"], san=SAN, extra=[(ext, False)])
    assert summary(x509.Certificate(data)) == expected_fields(data)


def test_bounds_are_adjustable(pki):
    with pytest.raises(x509.UnsupportedCertificate):
        x509.Certificate(pki["leaf"], max_size=100)
    assert x509.Certificate(pki["leaf"], max_size=len(pki["leaf"])).san_dns == SAN


# ---- chain validation -----------------------------------------------------


def chain(pki, *names):
    return [pki[n] for n in names]


def anchors(pki, *names):
    return [x509.Certificate(pki[n]) for n in names]


@pytest.fixture(params=["native", "pure"])
def backend_mode(request, monkeypatch):
    """Chain checks with the host's signature code and with the pure code."""
    if request.param == "pure":
        monkeypatch.setattr(a_p256, "native", None)
        monkeypatch.setattr(a_ed25519, "native", None)
    return request.param


@pytest.mark.parametrize(
    "names,anchor",
    [
        (("leaf_root",), "root"),  # length 1, anchor not sent
        (("leaf", "inter"), "root"),  # length 2
        (("leaf", "inter", "root"), "root"),  # length 3, anchor sent too
        (("selfsigned",), "selfsigned"),  # a self-signed server certificate as anchor
        (("rsa_leaf_pkcs1",), "rsa_root"),
        (("rsa_leaf_pss",), "rsa_root"),
        (("rsa_leaf_pss", "rsa_root_pss"), "rsa_root"),
        (("ed_leaf",), "ed_root"),
        (("p256_under_rsa",), "rsa_root"),
        (("ed_under_p256",), "root"),
        (("leaf", "inter_via_rsa"), "rsa_root"),
    ],
)
def test_rfc5280_s6_1_good_chains(pki, backend_mode, names, anchor):
    leaf = x509.verify_chain(chain(pki, *names), anchors=anchors(pki, anchor), now=NOW)
    assert leaf.subject_raw == x509.Certificate(pki[names[0]]).subject_raw


def test_anchors_as_der_and_several_anchors(pki):
    leaf = x509.verify_chain(
        chain(pki, "leaf", "inter"), anchors=[pki["ed_root"], pki["other_root"], pki["root"]]
    )
    assert leaf.san_dns == SAN


def test_same_name_other_key_anchor_is_bad_signature(pki):
    """An anchor with the issuer's name but another key: the signature fails (42)."""
    with pytest.raises(AlertError) as ei:
        x509.verify_chain(chain(pki, "leaf_root"), anchors=anchors(pki, "other_root"))
    assert ei.value.description == 42


def test_spki_pins(pki):
    leaf_pin = x509.spki_sha256(x509.Certificate(pki["leaf"]))
    inter_pin = x509.spki_sha256(x509.Certificate(pki["inter"]))
    assert x509.verify_chain(chain(pki, "leaf"), pins=[leaf_pin]).san_dns == SAN
    assert x509.verify_chain(chain(pki, "leaf", "inter"), pins=[inter_pin]).san_dns == SAN
    with pytest.raises(AlertError) as ei:  # pinned intermediate not sent
        x509.verify_chain(chain(pki, "leaf"), pins=[inter_pin])
    assert ei.value.description == 48
    with pytest.raises(AlertError) as ei:
        x509.verify_chain(chain(pki, "leaf", "inter"), pins=[b"\x00" * 32])
    assert ei.value.description == 48


def test_unknown_ca_alert_48(pki):
    for names, anchor in [
        (("leaf", "inter"), "rsa_root"),
        (("leaf",), "root"),
        (("ed_leaf",), "root"),
    ]:
        with pytest.raises(AlertError) as ei:
            x509.verify_chain(chain(pki, *names), anchors=anchors(pki, anchor))
        assert ei.value.description == 48, names


@pytest.mark.parametrize(
    "which,where",
    [
        ("leaf", -1),
        ("leaf", -20),
        ("inter", -3),
        ("rsa_leaf_pss", -1),
        ("rsa_leaf_pkcs1", -100),
        ("ed_leaf", -1),
        ("ed_leaf", -40),
        ("leaf", "tbs"),
    ],
)
def test_tampered_signature_or_tbs_alert_42(pki, backend_mode, which, where):
    data = bytearray(pki[which])
    if where == "tbs":
        subject = x509.Certificate(bytes(data)).subject_raw
        data[bytes(data).index(subject) + len(subject) - 1] ^= 0x01  # last char of the CN
    else:
        data[where] ^= 0x01
    names = {
        "leaf": ["inter"],
        "rsa_leaf_pss": [],
        "rsa_leaf_pkcs1": [],
        "ed_leaf": [],
        "inter": [],
    }[which]
    anchor = {
        "leaf": "root",
        "inter": "root",
        "rsa_leaf_pss": "rsa_root",
        "rsa_leaf_pkcs1": "rsa_root",
        "ed_leaf": "ed_root",
    }[which]
    if which == "inter":
        ch = [pki["leaf"], bytes(data)]
    else:
        ch = [bytes(data)] + chain(pki, *names)
    with pytest.raises(AlertError) as ei:
        x509.verify_chain(ch, anchors=anchors(pki, anchor))
    assert ei.value.description == 42


def test_wrong_issuer_name_alert_42(pki):
    # leaf_root names "root" as issuer but the chain sends "inter" next
    with pytest.raises(AlertError) as ei:
        x509.verify_chain(chain(pki, "leaf_root", "inter"), anchors=anchors(pki, "rsa_root"))
    assert ei.value.description == 42


def test_intermediate_not_ca_alert_42(keys):
    k = keys
    root = make("root", k["p256_root"], ca=True)
    for inter in [
        make("inter", k["p256_inter"], "root", k["p256_root"], ca=False),
        make("inter", k["p256_inter"], "root", k["p256_root"], bc=False),
        make(
            "inter",
            k["p256_inter"],
            "root",
            k["p256_root"],
            ca=True,
            ku=("digital_signature", "crl_sign"),
        ),
    ]:
        leaf = make("leaf", k["p256_leaf"], "inter", k["p256_inter"], san=SAN)
        with pytest.raises(AlertError) as ei:
            x509.verify_chain([leaf, inter], anchors=[root])
        assert ei.value.description == 42
    # keyUsage absent on a CA is fine (§4.2.1.3 applies only when present)
    inter = make("inter", k["p256_inter"], "root", k["p256_root"], ca=True, ku=None)
    leaf = make("leaf", k["p256_leaf"], "inter", k["p256_inter"], san=SAN)
    assert x509.verify_chain([leaf, inter], anchors=[root]).san_dns == SAN


def test_path_len_rfc5280_s4_2_1_9(keys):
    k = keys
    sub_key = ec.generate_private_key(ec.SECP256R1())
    root0 = make("root", k["p256_root"], ca=True, path_len=0)
    root1 = make("root", k["p256_root"], ca=True, path_len=1)
    inter = make("inter", k["p256_inter"], "root", k["p256_root"], ca=True)
    inter0 = make("inter", k["p256_inter"], "root", k["p256_root"], ca=True, path_len=0)
    sub = make("sub", sub_key, "inter", k["p256_inter"], ca=True)
    leaf = make("leaf", k["p256_leaf"], "inter", k["p256_inter"], san=SAN)
    leaf_sub = make("leaf", k["p256_leaf"], "sub", sub_key, san=SAN)
    ok = x509.verify_chain([leaf, inter], anchors=[root1])
    assert ok.san_dns == SAN
    with pytest.raises(AlertError) as ei:  # root pathLen 0 cannot sign a CA under which...
        x509.verify_chain([leaf, inter], anchors=[root0])
    assert ei.value.description == 42
    with pytest.raises(AlertError) as ei:  # inter pathLen 0, one more CA below it
        x509.verify_chain([leaf_sub, sub, inter0], anchors=[root1], max_depth=4)
    assert ei.value.description == 42
    with pytest.raises(AlertError) as ei:  # root pathLen 1 with two CAs below
        x509.verify_chain([leaf_sub, sub, inter], anchors=[root1], max_depth=4)
    assert ei.value.description == 42
    assert (
        x509.verify_chain(
            [leaf_sub, sub, inter],
            anchors=[x509.Certificate(make("root", k["p256_root"], ca=True))],
        ).san_dns
        == SAN
    )
    # depth: four certificates exceed the default max_depth 3 (42) ...
    root = make("root", k["p256_root"], ca=True)
    with pytest.raises(AlertError) as ei:
        x509.verify_chain([leaf_sub, sub, inter, root], anchors=[root])
    assert ei.value.description == 42
    # ... and pass with max_depth=4
    assert x509.verify_chain([leaf_sub, sub, inter, root], anchors=[root], max_depth=4)


def test_leaf_key_usage_and_eku_rfc8446_s4_4_2_2(keys):
    k = keys
    root = x509.Certificate(make("root", k["p256_root"], ca=True))
    for bad in [
        make("leaf", k["p256_leaf"], "root", k["p256_root"], ku=("key_encipherment",)),
        make("leaf", k["p256_leaf"], "root", k["p256_root"], eku=("client",)),
    ]:
        with pytest.raises(AlertError) as ei:
            x509.verify_chain([bad], anchors=[root])
        assert ei.value.description == 42
    for good in [
        make("leaf", k["p256_leaf"], "root", k["p256_root"], eku=("any",)),
        make("leaf", k["p256_leaf"], "root", k["p256_root"], eku=None, ku=None),
        make("leaf", k["p256_leaf"], "root", k["p256_root"], eku=("client", "server")),
    ]:
        x509.verify_chain([good], anchors=[root])


def test_validity_only_with_now(keys, pki):
    k = keys
    root = x509.Certificate(pki["root"])
    old = make(
        "leaf",
        k["p256_leaf"],
        "root",
        k["p256_root"],
        san=SAN,
        nb=T0 - datetime.timedelta(days=800),
        na=T0 - datetime.timedelta(days=400),
    )
    new = make(
        "leaf",
        k["p256_leaf"],
        "root",
        k["p256_root"],
        san=SAN,
        nb=T0 + datetime.timedelta(days=400),
    )
    for data in (old, new):
        x509.verify_chain([data], anchors=[root])  # no trusted clock: not checked
        with pytest.raises(AlertError) as ei:
            x509.verify_chain([data], anchors=[root], now=NOW)
        assert ei.value.description == 45
    c = x509.Certificate(pki["leaf_root"])
    for edge in (c.not_before, c.not_after):  # inclusive bounds (§4.1.2.5)
        x509.verify_chain([pki["leaf_root"]], anchors=[root], now=edge)
    for edge in (c.not_before - 1, c.not_after + 1):
        with pytest.raises(AlertError):
            x509.verify_chain([pki["leaf_root"]], anchors=[root], now=edge)
    # expired intermediate and expired anchor count too
    exp_root = x509.Certificate(
        make("root", k["p256_root"], ca=True, na=T0 + datetime.timedelta(days=5))
    )
    with pytest.raises(AlertError) as ei:
        x509.verify_chain([pki["leaf_root"]], anchors=[exp_root], now=NOW)
    assert ei.value.description == 45
    # time_floor: notAfter before the floor is rejected, notBefore ignored
    x509.verify_chain([new], anchors=[root], time_floor=NOW)
    with pytest.raises(AlertError) as ei:
        x509.verify_chain([old], anchors=[root], time_floor=NOW)
    assert ei.value.description == 45


@pytest.mark.parametrize(
    "host,ok",
    [
        ("device.example.com", True),
        ("DEVICE.example.COM", True),
        ("device.example.com.", True),
        ("a.example.org", True),
        ("xn--bcher-kva.example.org", True),
        ("example.org", False),
        ("a.b.example.org", False),
        (".example.org", False),
        ("mixed.example.net", True),
        ("other.example.com", False),
        ("example.com", False),
        ("*.example.org", False),
        ("", False),
        ("device.example.com..", False),
    ],
)
def test_rfc6125_s6_4_hostnames(pki, host, ok):
    root = anchors(pki, "root")
    if ok:
        x509.verify_chain(chain(pki, "leaf_root"), anchors=root, hostname=host)
    else:
        with pytest.raises(AlertError) as ei:
            x509.verify_chain(chain(pki, "leaf_root"), anchors=root, hostname=host)
        assert ei.value.description == 42


@pytest.mark.parametrize(
    "pattern,host,ok",
    [
        ("*.com", "example.com", False),  # wildcard needs two labels after it
        ("f*.example.com", "foo.example.com", False),  # partial wildcards not accepted
        ("*oo.example.com", "foo.example.com", False),
        ("a.*.example.com", "a.b.example.com", False),
        ("*.*.example.com", "a.b.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.Example.Com.", "A.EXAMPLE.com", True),
        ("example.com", "example.com", True),
        ("*", "localhost", False),
        ("*.", "a.", False),
    ],
)
def test_rfc6125_s6_4_3_wildcard_rules(pattern, host, ok):
    assert x509.hostname_matches(pattern, host) is ok


def test_hostname_without_san_alert_42(pki):
    with pytest.raises(AlertError) as ei:
        x509.verify_chain(chain(pki, "no_ext_ku"), anchors=anchors(pki, "root"), hostname="bare")
    assert ei.value.description == 42  # the CN is never used


def test_chain_misuse(pki):
    with pytest.raises(DecodeError):  # RFC 8446 §4.4.2.4
        x509.verify_chain([], anchors=anchors(pki, "root"))
    with pytest.raises(UsageError):
        x509.verify_chain(chain(pki, "leaf"))


# ---- fuzz -----------------------------------------------------------------


def _chain_fn(pki, which):
    leaf, inter = pki["leaf"], pki["inter"]
    roots = anchors(pki, {"rsa_leaf_pss": "rsa_root", "ed_leaf": "ed_root"}.get(which, "root"))
    x509.verify_chain(  # the genuine chain verifies, so every refusal below is the mutant's
        [leaf, inter], anchors=anchors(pki, "root"), hostname="device.example.com", now=NOW
    )

    def run(mutant):
        if which in ("rsa_leaf_pss", "ed_leaf"):
            ch = [mutant]
        else:
            ch = [mutant, inter] if which == "leaf" else [leaf, mutant]
        x509.verify_chain(ch, anchors=roots, hostname="device.example.com", now=NOW)

    run(pki[which])
    return run


@pytest.mark.parametrize("which", ["leaf", "inter", "rsa_leaf_pss", "ed_leaf"])
def test_fuzz_truncations_and_mutations_only_alerts(pki, backend_mode, which):
    """Every cut and three xor mutations at every offset, each parsed and
    put through verify_chain (pure and native signature code).  Acceptance
    property: a mutant that verifies is never byte-identical to the genuine
    certificate, so any that verifies fails the test (fuzz() lists it in
    `escaped`).  No mutation is canonically equivalent here: DER has one
    encoding per value and the signature covers every byte of the TBS."""
    parsed, rejected, escaped = fuzz(
        pki[which], step=1, xors=(0x01, 0x80, 0xFF), chain_fn=_chain_fn(pki, which), chain_step=1
    )
    assert escaped == []
    assert rejected > len(pki[which])  # every truncation at least is refused
    assert parsed > 0  # some mutations (e.g. in a signature or a name) still parse


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_alerts(data):
    for d in (data, b"\x30\x82" + len(data).to_bytes(2, "big") + data):
        try:
            x509.Certificate(d)
        except AlertError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_splices_only_alerts(pki, data):
    base = pki[data.draw(st.sampled_from(["leaf", "rsa_leaf_pkcs1", "ed_leaf", "inter"]))]
    i = data.draw(st.integers(0, len(base)))
    j = data.draw(st.integers(i, min(len(base), i + 40)))
    junk = data.draw(st.binary(max_size=40))
    d = base[:i] + junk + base[j:]
    try:
        x509.verify_chain([d, pki["inter"]], anchors=anchors(pki, "root"))
    except AlertError:
        return
    # acceptance property: only the genuine leaf verifies under inter/root
    assert d == pki["leaf"], "a spliced certificate verified"


# ---- MicroPython ------------------------------------------------------------
# Firmware compiled by mpy-cross (tests/mpy/mpycross.py), as deployed:
# compiling x509.py from source alone needs about 80K of heap.  Certificates
# travel in side files ("@path", read by pkrows.field) to keep rows short.

MPY_MODULES = [
    "atls/der.py",
    "atls/x509.py",
    "atls/x509_chain.py",
    "atls/crypto/p256.py",
    "atls/crypto/sha512.py",
    "atls/crypto/ed25519.py",
    "atls/crypto/rsa.py",
]
FUZZ_HEAP = "72K"  # measured minimum 56K (P-256 chain checks on mutants)


@pytest.fixture(scope="module")
def mpyc(mpy, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpyc")
    m = compiled(mpy, out, MPY_MODULES)
    subprocess.run(
        [
            str(Path(mpy.binary).with_name("mpy-cross")),
            "-o",
            str(out / "x509_eval.mpy"),
            str(TESTS / "mpy" / "x509_eval.py"),
        ],
        check=True,
    )
    m.side = out
    return m


def _files(mpyc, *certs):
    """Side files for certificates; the row field is "@path,@path,..."."""
    names = []
    for c in certs:
        path = mpyc.side / ("c%s.der" % hashlib.sha256(c).hexdigest()[:16])
        path.write_bytes(c)
        names.append("@" + str(path))
    return ",".join(names)


# Largest module first and a collection after each import: the free heap is
# then less fragmented.  Rows carry the SHA-256 of the expected summary line.
FIELDS_SCRIPT = """
import gc
from atls import x509
gc.collect()
from x509_eval import digest, summary
gc.collect()
from vecrun import rows, Tally
from pkrows import field, reserve
gc.collect()
reserve(2048)
t = Tally()
for i, f in rows():
    gc.collect()
    c = x509.Certificate(field(f[0]))
    ok = digest(c) == f[1]
    t.check(i, ok, "" if ok else summary(c))
    c = None
t.report()
"""


def test_fields_micropython_32k(mpyc, pki):
    rows = [
        (_files(mpyc, pki[w]), hashlib.sha256(expected_fields(pki[w]).encode()).hexdigest())
        for w in FIELD_CERTS
    ]
    assert mpyc.run_rows(FIELDS_SCRIPT, rows, heapsize="32K") == {"ok": len(rows), "failed": []}


CHAIN_SCRIPT = """
import gc
from vecrun import rows, Tally
from pkrows import field
from atls import x509
from atls.errors import AlertError
t = Tally()
for i, f in rows():
    gc.collect()
    ch = [bytes(field(x)) for x in f[0].split(",")]  # field() reuses one buffer
    anchors = [x509.Certificate(bytes(field(x))) for x in f[1].split(",")]
    host = None if f[2] == "-" else f[2]
    try:
        x509.verify_chain(ch, anchors=anchors, hostname=host, now=int(f[4]))
        got = "ok"
    except AlertError as e:
        got = str(e.description)
    ch = anchors = None
    t.check(i, got == f[3], got)
t.report()
"""


def _chain_rows(mpyc, pki):
    p = pki
    tampered = bytearray(p["leaf"])
    tampered[-1] ^= 1
    f = lambda *c: _files(mpyc, *c)  # noqa: E731
    return {
        "p256": [
            (f(p["leaf"], p["inter"]), f(p["root"]), "device.example.com", "ok", NOW),
            (f(p["leaf"], p["inter"], p["root"]), f(p["root"]), "-", "ok", NOW),
            (f(p["leaf_root"]), f(p["root"]), "a.example.org", "ok", NOW),
            (f(bytes(tampered), p["inter"]), f(p["root"]), "-", "42", NOW),
            (f(p["leaf"], p["inter"]), f(p["other_root"]), "-", "42", NOW),
            (f(p["leaf"], p["inter"]), f(p["root"]), "x.example.com", "42", NOW),
            (f(p["leaf"], p["inter"]), f(p["root"]), "-", "45", NOW + 10**9),
            (f(p["leaf"], p["inter"], p["root"], p["root"]), f(p["root"]), "-", "42", NOW),
            (f(p["leaf_root"], p["inter"]), f(p["root"]), "-", "ok", NOW),  # extra cert ignored
        ],
        "rsa": [
            (f(p["rsa_leaf_pkcs1"]), f(p["rsa_root"]), "a.example.org", "ok", NOW),
            (f(p["rsa_leaf_pss"]), f(p["rsa_root"]), "-", "ok", NOW),
            (f(p["rsa_leaf_pss"], p["rsa_root_pss"]), f(p["rsa_root"]), "-", "ok", NOW),
            (f(p["rsa_leaf_pss"]), f(p["root"]), "-", "48", NOW),
        ],
        "ed25519": [
            (f(p["ed_leaf"]), f(p["ed_root"]), "-", "ok", NOW),
            (f(p["ed_leaf"]), f(p["ed_root"]), "-", "45", 0),
        ],
        "mixed": [
            (f(p["ed_under_p256"]), f(p["root"]), "-", "ok", NOW),
            (f(p["p256_under_rsa"]), f(p["rsa_root"]), "-", "ok", NOW),
            (f(p["rsa_under_ed"]), f(p["ed_root"]), "-", "ok", NOW),
            (f(p["leaf"], p["inter_via_rsa"]), f(p["rsa_root"]), "-", "ok", NOW),
            (f(p["leaf"], p["inter"]), f(p["rsa_root"]), "-", "48", NOW),
        ],
    }


# Measured minimum heaps (unix port, firmware .mpy loaded into RAM, which a
# frozen build does not need): P-256 two-certificate chain 52K, one
# certificate 48K; RSA-2048 40K; Ed25519 48K; all three modules at once 66K.
# The signature modules' code is most of it (p256 ~13K, ed25519+sha512 ~11K,
# x509+der+errors ~16K).  Each family runs with 8K or more to spare.
CHAIN_HEAP = {"p256": "60K", "rsa": "48K", "ed25519": "56K", "mixed": "80K"}


@pytest.mark.parametrize("family", sorted(CHAIN_HEAP))
def test_chains_micropython(mpyc, pki, family):
    rows = _chain_rows(mpyc, pki)[family]
    assert mpyc.run_rows(CHAIN_SCRIPT, rows, heapsize=CHAIN_HEAP[family]) == {
        "ok": len(rows),
        "failed": [],
    }


FUZZ_SCRIPT = """
from vecrun import rows, Tally
from pkrows import field
from x509_eval import fuzz
from atls import x509
t = Tally()
for i, f in rows():
    inter = bytes(field(f[1]))  # field() reuses one buffer
    root = x509.Certificate(bytes(field(f[2])))
    def chain_fn(leaf):
        x509.verify_chain([leaf, inter], anchors=[root])
    parsed, rejected, esc = fuzz(field(f[0]), step=int(f[3]), xors=(0x01, 0xFF),
                                 chain_fn=chain_fn, chain_step=int(f[4]))
    t.check(i, not esc and parsed > 0 and rejected > 0, repr(esc[:3]))
t.report()
"""


def test_fuzz_subset_micropython(mpyc, pki):
    """Every 3rd/5th offset truncated and mutated; chain checks on some."""
    p = pki
    rows = [
        (_files(mpyc, p["leaf"]), _files(mpyc, p["inter"]), _files(mpyc, p["root"]), 3, 45),
        (_files(mpyc, p["rsa_leaf_pss"]), _files(mpyc, p["inter"]), _files(mpyc, p["root"]), 5, 0),
        (_files(mpyc, p["ed_leaf"]), _files(mpyc, p["inter"]), _files(mpyc, p["root"]), 3, 0),
    ]
    assert mpyc.run_rows(FUZZ_SCRIPT, rows, heapsize=FUZZ_HEAP, timeout=600) == {
        "ok": len(rows),
        "failed": [],
    }


MUTANT_SCRIPT = """
import gc
from atls import x509
from atls.errors import AlertError
gc.collect()
from x509_eval import digest
gc.collect()
from vecrun import rows, Tally
from pkrows import field, reserve
gc.collect()
reserve(2048)
t = Tally()
for i, f in rows():
    gc.collect()
    try:
        got = digest(x509.Certificate(field(f[0])))
    except AlertError as e:
        got = "alert%d" % e.description
    t.check(i, got == f[1], got)
t.report()
"""


def test_random_mutations_same_answer_cpython_and_micropython_32k(mpyc, pki):
    """Random multi-byte mutations and cuts: both interpreters accept or
    reject alike (same fields, same alert) and MicroPython raises nothing else."""
    rnd = random.Random(8446)
    rows = []
    for _ in range(150):
        base = bytearray(pki[rnd.choice(["leaf", "ed_leaf", "rsa_leaf_pss", "inter"])])
        for _ in range(rnd.randrange(1, 4)):
            base[rnd.randrange(len(base))] = rnd.randrange(256)
        d = bytes(base[: rnd.randrange(len(base) // 2, len(base) + 1)])
        try:
            want = digest(x509.Certificate(d))
        except AlertError as e:
            want = "alert%d" % e.description
        rows.append((_files(mpyc, d), want))
    assert mpyc.run_rows(MUTANT_SCRIPT, rows, heapsize="32K") == {"ok": len(rows), "failed": []}
