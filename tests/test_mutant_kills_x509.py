"""atls.x509 checks that `make mutants` (tests/mutants/) found no test
pinning down (RFC 5280 §4.1.2.7 with RFC 8017 §A.1.1; §4.2.1.6), and atls.der's
length and time bounds (X.690 §10.1, RFC 5280 §4.1.2.5)."""

import datetime

import pytest
from cryptography import x509 as cx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from atls import der, x509
from atls.errors import AlertError, DecodeError

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


def cert(key, san=None):
    n = cx.Name([cx.NameAttribute(NameOID.COMMON_NAME, "t")])
    b = (
        cx.CertificateBuilder()
        .subject_name(n)
        .issuer_name(n)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(T0)
        .not_valid_after(T0 + datetime.timedelta(days=30))
    )
    if san:
        b = b.add_extension(cx.SubjectAlternativeName([cx.DNSName(s) for s in san]), False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rsa_der():
    return cert(rsa.generate_private_key(65537, 2048))


def test_rsa_key_with_even_exponent_or_even_modulus_is_bad_certificate_42(rsa_der):
    """RFC 8017 §3.1: n is odd (a product of odd primes), e is odd and >= 3."""
    assert x509.Certificate(rsa_der).public_key[1] == 65537
    e = b"\x02\x03\x01\x00\x01"  # INTEGER 65537 ends the RSAPublicKey
    assert rsa_der.count(e) == 1
    i = rsa_der.index(e)
    for bad in (
        rsa_der[:i] + b"\x02\x03\x01\x00\x02" + rsa_der[i + 5 :],  # e even, n odd
        rsa_der[: i - 1] + bytes([rsa_der[i - 1] ^ 1]) + rsa_der[i:],  # n even, e odd
        rsa_der[:i] + b"\x02\x03\x00\x00\x01" + rsa_der[i + 5 :],  # e = 1 (not minimal: 50)
    ):
        with pytest.raises(AlertError) as ei:
            x509.Certificate(bad)
        assert ei.value.description in (42, 50)
    with pytest.raises(AlertError) as ei:  # e even: exactly bad_certificate
        x509.Certificate(rsa_der[:i] + b"\x02\x03\x01\x00\x02" + rsa_der[i + 5 :])
    assert ei.value.description == 42
    with pytest.raises(AlertError) as ei:  # n even: exactly bad_certificate
        x509.Certificate(rsa_der[: i - 1] + bytes([rsa_der[i - 1] ^ 1]) + rsa_der[i:])
    assert ei.value.description == 42


def test_dns_names_are_printable_ascii_0x21_to_0x7e():
    key = ec.generate_private_key(ec.SECP256R1())
    c = x509.Certificate(cert(key, san=["!a.example", "b~.example"]))
    assert c.san_dns == ["!a.example", "b~.example"]
    good = cert(key, san=["ab.example"])
    for ch in (0x20, 0x7F):  # space and DEL, same length as "b"
        bad = good.replace(b"ab.example", bytes([0x61, ch]) + b".example")
        with pytest.raises(AlertError) as ei:
            x509.Certificate(bad)
        assert ei.value.description == 42


def test_hostname_matches_refuses_empty_names():
    assert x509.hostname_matches("a.example", "a.example")
    assert not x509.hostname_matches("a.example", "")
    assert not x509.hostname_matches("", "a.example")
    assert not x509.hostname_matches(".", "a.example")
    assert not x509.hostname_matches("a.example", ".")


def test_ip_address_accepts_bracketed_ipv6():
    want = bytes.fromhex("20010db8000000000000000000000001")
    assert x509.ip_address("2001:db8::1") == want
    assert x509.ip_address("[2001:db8::1]") == want
    assert x509.ip_address("[2001:db8::1") is None


def test_rsa_exponent_3_is_accepted():
    assert x509.Certificate(cert(rsa.generate_private_key(3, 2048))).public_key[1] == 3


def test_rsa_modulus_below_min_rsa_bits_is_unsupported_43():
    with pytest.raises(AlertError) as ei:
        x509.Certificate(cert(rsa.generate_private_key(65537, x509.MIN_RSA_BITS - 8)))
    assert ei.value.description == 43
    assert x509.Certificate(cert(rsa.generate_private_key(65537, x509.MIN_RSA_BITS))).rsa_len == (
        x509.MIN_RSA_BITS // 8
    )


def test_max_san_names_are_accepted_one_more_is_unsupported_43():
    key = ec.generate_private_key(ec.SECP256R1())
    names = ["n%d.example" % i for i in range(x509.MAX_SAN + 1)]
    assert x509.Certificate(cert(key, san=names[:-1])).san_dns == names[:-1]
    with pytest.raises(AlertError) as ei:
        x509.Certificate(cert(key, san=names))
    assert ei.value.description == 43


def test_ec_key_on_another_curve_is_unsupported_43():
    """RFC 5480 §2.1.1: the curve is the parameters' OID; secp256k1 has the
    same 65-byte point format as P-256 and must not pass for it."""
    for curve in (ec.SECP384R1(), ec.SECP256K1()):
        with pytest.raises(AlertError) as ei:
            x509.Certificate(cert(ec.generate_private_key(curve)))
        assert ei.value.description == 43, curve.name


def test_an_rsa_signature_algorithm_under_a_non_rsa_issuer_is_bad_certificate_42(rsa_der):
    issuer = x509.Certificate(cert(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(AlertError) as ei:
        x509.verify_signed_by(x509.Certificate(rsa_der), issuer)
    assert ei.value.description == 42


def _tlv(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + ln + body


def _children(data):
    from atls import der

    r, out = der.Reader(data), []
    while not r.eof():
        s, e = r.read_raw()
        out.append(bytes(data[s:e]))
    return out


def _body(tlv):
    from atls import der

    _, s, e = der.Reader(tlv).read_tlv()
    return bytes(tlv[s:e])


def test_v3_unique_identifiers_are_skipped():
    """RFC 5280 §4.1.2.8: issuerUniqueID [1] and subjectUniqueID [2] may
    follow the key in a v2/v3 certificate; they are skipped, the extensions
    after them still read."""
    key = ec.generate_private_key(ec.SECP256R1())
    good = cert(key, san=["u.example"])
    outer = _children(_body(good))  # tbsCertificate, signatureAlgorithm, signature
    tbs = _children(_body(outer[0]))
    assert tbs[0][0] == 0xA0 and tbs[7][0] == 0xA3  # version, ..., extensions
    ids = _tlv(0x81, b"\x00\xaa") + _tlv(0x82, b"\x00\xbb")
    new_tbs = _tlv(0x30, b"".join(tbs[:7]) + ids + tbs[7])
    c = x509.Certificate(_tlv(0x30, new_tbs + b"".join(outer[1:])))
    assert c.version == 3 and c.san_dns == ["u.example"]


def test_tbs_is_a_view_into_the_callers_buffer():
    data = cert(ec.generate_private_key(ec.SECP256R1()))
    c = x509.Certificate(data)
    assert isinstance(c.tbs, memoryview) and c.tbs.obj is data


def test_a_san_entry_that_is_not_a_general_name_is_decode_error_50():
    key = ec.generate_private_key(ec.SECP256R1())
    good = cert(key, san=["ab.example"])
    assert good.count(b"\x82\x0aab.example") == 1
    bad = good.replace(b"\x82\x0aab.example", b"\x04\x0aab.example")  # OCTET STRING
    with pytest.raises(AlertError) as ei:
        x509.Certificate(bad)
    assert ei.value.description == 50


def test_max_extensions_are_accepted_one_more_is_unsupported_43():
    from cryptography.x509.oid import ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    n = cx.Name([cx.NameAttribute(NameOID.COMMON_NAME, "t")])

    def with_extensions(count):
        b = (
            cx.CertificateBuilder()
            .subject_name(n)
            .issuer_name(n)
            .public_key(key.public_key())
            .serial_number(7)
            .not_valid_before(T0)
            .not_valid_after(T0 + datetime.timedelta(days=30))
        )
        for i in range(count):
            oid = ObjectIdentifier("1.3.6.1.4.1.55555.%d" % i)
            b = b.add_extension(cx.UnrecognizedExtension(oid, b"\x05\x00"), False)
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    x509.Certificate(with_extensions(x509.MAX_EXTENSIONS))
    with pytest.raises(AlertError) as ei:
        x509.Certificate(with_extensions(x509.MAX_EXTENSIONS + 1))
    assert ei.value.description == 43


def test_rsa_pss_key_without_parameters_is_a_pss_only_rsa_key(rsa_der):
    """RFC 4055 §3.1: an id-RSASSA-PSS public key may omit its parameters
    (any PSS hash then); it is an RSA key usable for PSS only."""
    outer = _children(_body(rsa_der))
    tbs = _children(_body(outer[0]))
    spki = _children(_body(tbs[6]))
    pss = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a864886f70d01010a")))  # no parameters
    tbs[6] = _tlv(0x30, pss + spki[1])
    c = x509.Certificate(_tlv(0x30, _tlv(0x30, b"".join(tbs)) + b"".join(outer[1:])))
    assert c.key_type == "rsa" and c.rsa_pss_only


def _tbs_parts(data):
    outer = _children(_body(data))  # tbsCertificate, signatureAlgorithm, signature
    return _children(_body(outer[0])), outer[1:]


def _rebuild(tbs, rest):
    return _tlv(0x30, _tlv(0x30, b"".join(tbs)) + b"".join(rest))


def _with_spki(data, alg, key):
    """data with its SubjectPublicKeyInfo replaced (alg: the AlgorithmIdentifier
    TLV, key: the BIT STRING's octets after the unused-bits octet)."""
    tbs, rest = _tbs_parts(data)
    tbs[6] = _tlv(0x30, alg + _tlv(0x03, b"\x00" + key))
    return _rebuild(tbs, rest)


def _alert(data):
    with pytest.raises(AlertError) as ei:
        x509.Certificate(data)
    return ei.value.description


_RSA_ALG = _tlv(0x06, bytes.fromhex("2a864886f70d010101"))
_PSS_ALG = _tlv(0x06, bytes.fromhex("2a864886f70d01010a"))


def test_p256_key_must_be_an_uncompressed_65_byte_point():
    """RFC 5480 §2.2: the P-256 key is the uncompressed point (0x04, 65
    bytes); a hybrid-form point (0x06, also 65 bytes) is unsupported (43)."""
    good = cert(ec.generate_private_key(ec.SECP256R1()))
    assert x509.Certificate(good).key_type == "p256"
    assert good.count(b"\x03\x42\x00\x04") == 1
    assert _alert(good.replace(b"\x03\x42\x00\x04", b"\x03\x42\x00\x06")) == 43


def test_rsa_key_parameters_must_be_null_and_pss_parameters_known(rsa_der):
    """RFC 3279 §2.3.1: rsaEncryption's parameters MUST be NULL; RFC 4055
    §3.1: id-RSASSA-PSS keys carry absent or RSASSA-PSS-params (NULL is
    neither); a key of an algorithm we do not know (X25519, RFC 8410) is 43."""
    tbs, _ = _tbs_parts(rsa_der)
    key = _body(_children(_body(tbs[6]))[1])[1:]  # RSAPublicKey
    assert (
        x509.Certificate(_with_spki(rsa_der, _tlv(0x30, _RSA_ALG + b"\x05\x00"), key)).key_type
        == "rsa"
    )
    assert _alert(_with_spki(rsa_der, _tlv(0x30, _RSA_ALG), key)) == 43  # parameters absent
    assert _alert(_with_spki(rsa_der, _tlv(0x30, _PSS_ALG + b"\x05\x00"), key)) == 43
    x25519 = _tlv(0x30, _tlv(0x06, b"\x2b\x65\x6e"))
    assert _alert(_with_spki(rsa_der, x25519, bytes(range(32)))) == 43


def test_rsa_modulus_of_max_rsa_bits_is_accepted(rsa_der):
    """RSA keys of MIN_RSA_BITS..MAX_RSA_BITS are supported (module doc);
    4096 bits, the top of the range, parses (a bigger one cannot: 50)."""
    n = (1 << (x509.MAX_RSA_BITS - 1)) | 0x10001  # odd, exactly MAX_RSA_BITS bits
    rsa_key = _tlv(
        0x30,
        _tlv(0x02, b"\x00" + n.to_bytes(x509.MAX_RSA_BITS // 8, "big"))
        + _tlv(0x02, b"\x01\x00\x01"),
    )
    c = x509.Certificate(_with_spki(rsa_der, _tlv(0x30, _RSA_ALG + b"\x05\x00"), rsa_key))
    assert c.rsa_len == x509.MAX_RSA_BITS // 8 and c.public_key[0] == n
    big = _tlv(
        0x30,
        _tlv(0x02, b"\x00" + (2 * n).to_bytes(x509.MAX_RSA_BITS // 8 + 1, "big"))
        + _tlv(0x02, b"\x03"),
    )
    assert _alert(_with_spki(rsa_der, _tlv(0x30, _RSA_ALG + b"\x05\x00"), big)) == 50


def test_every_rdn_of_a_name_is_a_nonempty_set_of_two_element_attributes():
    """RFC 5280 §4.1.2.4: RelativeDistinguishedName ::= SET SIZE (1..MAX) OF
    AttributeTypeAndValue ::= SEQUENCE {type, value}: an empty SET or an
    attribute with a third element is not DER of that type (decode_error)."""
    good = cert(ec.generate_private_key(ec.SECP256R1()))
    tbs, rest = _tbs_parts(good)
    cn = _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, b"t")
    for issuer, want in (
        (_tlv(0x30, _tlv(0x31, _tlv(0x30, cn))), None),
        (_tlv(0x30, _tlv(0x31, _tlv(0x30, cn)) + _tlv(0x31, b"")), 50),
        (_tlv(0x30, _tlv(0x31, _tlv(0x30, cn) + _tlv(0x30, cn + _tlv(0x0C, b"u")))), 50),
    ):
        tbs[3] = issuer
        if want is None:
            assert x509.Certificate(_rebuild(tbs, rest)).issuer_raw == issuer
        else:
            assert _alert(_rebuild(tbs, rest)) == want


def test_a_name_of_max_name_len_bytes_is_accepted_one_more_is_43():
    """MAX_NAME_LEN bounds the whole issuer/subject Name TLV (module doc)."""
    good = cert(ec.generate_private_key(ec.SECP256R1()))
    tbs, rest = _tbs_parts(good)
    for size, want in ((x509.MAX_NAME_LEN, None), (x509.MAX_NAME_LEN + 1, 43)):
        value = b"x" * (size - 21)  # four long-form headers and the OID: 21 bytes
        tbs[3] = _tlv(0x30, _tlv(0x31, _tlv(0x30, _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, value))))
        assert len(tbs[3]) == size
        if want is None:
            assert len(x509.Certificate(_rebuild(tbs, rest)).issuer_raw) == size
        else:
            assert _alert(_rebuild(tbs, rest)) == want


def test_a_v1_certificate_has_no_unique_identifiers():
    """RFC 5280 §4.1.2.8: unique identifiers MUST NOT appear in a version 1
    certificate; one there is data after the last field (decode_error)."""
    good = cert(ec.generate_private_key(ec.SECP256R1()))
    tbs, rest = _tbs_parts(good)
    assert x509.Certificate(_rebuild(tbs[1:7], rest)).version == 1
    assert _alert(_rebuild(tbs[1:7] + [_tlv(0x81, b"\x00\xaa")], rest)) == 50


def test_dns_names_are_1_to_253_bytes():
    """RFC 5280 §4.2.1.6 / RFC 1034 §3.1: an empty dNSName is not a name,
    and a name is at most 253 characters (bad_certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    longest = ".".join(["a" * 63] * 3) + "." + "b" * 61
    assert len(longest) == 253
    assert x509.Certificate(cert(key, san=[longest])).san_dns == [longest]
    assert _alert(cert(key, san=[longest + "c"])) == 42
    one = cert(key, san=["z"])
    assert one.count(b"\x82\x01z") == 1
    tbs, rest = _tbs_parts(one)
    tbs[7] = _tlv(
        0xA3,
        _tlv(0x30, _tlv(0x30, _tlv(0x06, b"\x55\x1d\x11") + _tlv(0x04, _tlv(0x30, b"\x82\x00")))),
    )
    assert _alert(_rebuild(tbs, rest)) == 42


def test_registered_id_is_the_last_general_name_choice():
    """RFC 5280 §4.2.1.6: GeneralName is [0]..[8]; registeredID [8] is
    skipped like the other forms we do not use, a [9] is not a GeneralName."""
    from cryptography.x509.oid import ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    n = cx.Name([cx.NameAttribute(NameOID.COMMON_NAME, "t")])
    san = cx.SubjectAlternativeName(
        [cx.DNSName("r.example"), cx.RegisteredID(ObjectIdentifier("1.2.3.4"))]
    )
    good = (
        cx.CertificateBuilder()
        .subject_name(n)
        .issuer_name(n)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(T0)
        .not_valid_after(T0 + datetime.timedelta(days=30))
        .add_extension(san, False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert x509.Certificate(good).san_dns == ["r.example"]
    assert good.count(b"\x88\x03\x2a\x03\x04") == 1
    assert _alert(good.replace(b"\x88\x03\x2a\x03\x04", b"\x89\x03\x2a\x03\x04")) == 50


def test_key_usage_reads_decipher_only_from_the_second_octet():
    """RFC 5280 §4.2.1.3: KeyUsage bit 8 (decipherOnly) is in the BIT
    STRING's second octet; key_usage holds it as 1 << 8."""
    key = ec.generate_private_key(ec.SECP256R1())
    n = cx.Name([cx.NameAttribute(NameOID.COMMON_NAME, "t")])
    ku = cx.KeyUsage(True, False, False, False, True, False, False, False, True)
    data = (
        cx.CertificateBuilder()
        .subject_name(n)
        .issuer_name(n)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(T0)
        .not_valid_after(T0 + datetime.timedelta(days=30))
        .add_extension(ku, True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert x509.Certificate(data).key_usage == 0x01 | 0x10 | 0x100


def test_a_der_reader_over_bytes_reads_views_not_copies():
    """atls.der: a Reader wraps bytes in a memoryview, so the values it
    returns are views into the caller's buffer (no copy per field: RAM)."""
    from atls import der

    data = b"\x04\x03abc"
    r = der.Reader(data)
    assert isinstance(r.buf, memoryview) and r.buf.obj is data


# -- atls.der (X.690 §10.1 lengths; RFC 5280 §4.1.2.5 times) ---------------------------------
def test_long_form_lengths_of_up_to_four_octets_are_read():
    """_MAX_LEN_BYTES: four length octets are accepted (a 16 MiB value, in
    a window that holds it), five are DecodeError whatever the window."""
    value = bytes(1 << 24)
    r = der.Reader(b"\x04\x84\x01\x00\x00\x00" + value)
    assert r.read_tlv(0x04) == (0x04, 6, 6 + len(value))
    with pytest.raises(DecodeError):
        der.Reader(b"\x04\x85\x00\x01\x00\x00\x00" + value).read_tlv(0x04)


@pytest.mark.parametrize("year", [b"A0", b"0A", b"/0", b"0/"])
def test_every_character_of_a_time_is_a_digit(year):
    """§4.1.2.5.1: YYMMDDHHMMSSZ, digits only: a character just above '9'
    or below '0' in either place of a pair is DecodeError, also in the year,
    where no range check follows (":0" or "A0" would read as 100 or 170)."""
    good = der.read_time(der.Reader(b"\x17\x0d" + b"70" + b"0101000000Z"))
    assert good == 0  # 1970-01-01T00:00:00Z
    with pytest.raises(DecodeError):
        der.read_time(der.Reader(b"\x17\x0d" + year + b"0101000000Z"))
