"""atls.x509_chain checks that `make mutants` (tests/mutants/) found no test
pinning down: a signature verifies only under the algorithm its certificate
names and a key of that algorithm (RFC 5280 §4.1.1.2, RFC 8446 §4.4.2.4: no
algorithm confusion), a trust anchor is its name *and* key (RFC 5280 §6.1.1
(d)), and the text form of an IPv4 address (RFC 6125 §6.2.1)."""

import datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from test_x509 import T0, make

from atls import der, x509, x509_chain
from atls.errors import AlertError

_ECDSA_ALG = bytes.fromhex("300a06082a8648ce3d040302")  # ecdsa-with-SHA256, no parameters
_ED25519_ALG = bytes.fromhex("300506032b6570")
_RSA_ALG = bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption
KU = ("digital_signature", "cert_sign")
NOW = int((T0 + datetime.timedelta(days=1)).timestamp())


def _tlv(tag, body):
    n = len(body)
    ln = (
        bytes([n])
        if n < 0x80
        else bytes([0x81, n])
        if n < 0x100
        else bytes([0x82, n >> 8, n & 0xFF])
    )
    return bytes([tag]) + ln + body


def _relabelled(data, old_alg, sign, new_alg=_ECDSA_ALG):
    """data with both signature AlgorithmIdentifiers set to new_alg and a
    signature made by `sign` over the new tbsCertificate."""
    tbs = bytes(x509.Certificate(data).tbs)
    _, s, e = der.Reader(tbs).read_tlv(0x30)
    assert tbs[s:e].count(old_alg) == 1
    tbs = _tlv(0x30, tbs[s:e].replace(old_alg, new_alg))
    return _tlv(0x30, tbs + new_alg + _tlv(0x03, b"\x00" + sign(tbs)))


def test_a_valid_signature_under_another_algorithm_name_is_bad_certificate_42():
    """A certificate that says ecdsa_sha256 but carries a valid Ed25519 or
    RSA PKCS#1 signature of its issuer does not verify: the algorithm must
    fit the issuer's key type."""
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_issuer = x509.Certificate(make("ed", ed, ca=True))
    leaf = make("leaf", ec.generate_private_key(ec.SECP256R1()), issuer="ed", ikey=ed)
    x509_chain.verify_signed_by(x509.Certificate(leaf), ed_issuer)  # as issued: verifies
    forged = x509.Certificate(_relabelled(leaf, _ED25519_ALG, ed.sign))
    assert forged.sig_alg == "ecdsa_sha256" and len(forged.signature) == 64
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_signed_by(forged, ed_issuer)
    assert ei.value.description == 42

    rk = rsa.generate_private_key(65537, 2048)
    rsa_issuer = x509.Certificate(make("rsa", rk, ca=True))
    leaf = make("leaf", ec.generate_private_key(ec.SECP256R1()), issuer="rsa", ikey=rk)
    x509_chain.verify_signed_by(x509.Certificate(leaf), rsa_issuer)

    def pkcs1(tbs):
        return rk.sign(tbs, padding.PKCS1v15(), hashes.SHA256())

    forged = x509.Certificate(_relabelled(leaf, _RSA_ALG, pkcs1))
    assert forged.sig_alg == "ecdsa_sha256" and len(forged.signature) == rsa_issuer.rsa_len
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_signed_by(forged, rsa_issuer)
    assert ei.value.description == 42


def test_a_trust_anchor_matches_by_subject_and_key_together():
    """RFC 5280 §6.1.1 (d): the anchor is a name and a public key.  A
    self-signed certificate with the anchor's name but another key (42: its
    signature does not verify under the anchor), or the anchor's key under
    another name (48: no anchor issued it), is not the anchor."""
    ka = ec.generate_private_key(ec.SECP256R1())
    anchor = make("root", ka, ca=True, ku=KU)
    assert x509_chain.verify_chain([anchor], anchors=[anchor], now=NOW).view("spki")
    same_name = make("root", ec.generate_private_key(ec.SECP256R1()), ca=True, ku=KU)
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_chain([same_name], anchors=[anchor], now=NOW)
    assert ei.value.description == 42
    same_key = make("other", ka, ca=True, ku=KU)
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_chain([same_key], anchors=[anchor], now=NOW)
    assert ei.value.description == 48


def test_an_ipv4_part_is_at_most_three_digits():
    """RFC 6125 §6.2.1 / RFC 3986 §3.2.2 dec-octet: 1 to 3 decimal digits.
    str.isdigit() also takes other scripts' digits, which int() reads: four
    of them (leading Arabic-Indic zeros, not caught as a leading "0") are
    still refused by the length bound."""
    assert x509_chain.ip_address("1.2.3.4") == b"\x01\x02\x03\x04"
    assert x509_chain.ip_address("\u0660\u0660\u0660\u0661.2.3.4") is None


def test_ipv6_with_seven_groups_and_a_double_colon_is_an_address():
    """RFC 4291 §2.2: "::" stands for one or more groups of zeros, so seven
    groups and "::" make an address; eight groups and "::" do not."""
    assert x509_chain.ip_address("1:2:3:4:5:6:7::") == bytes.fromhex(
        "00010002000300040005000600070000"
    )
    assert x509_chain.ip_address("1::2:3:4:5:6:7") == bytes.fromhex(
        "00010000000200030004000500060007"
    )
    assert x509_chain.ip_address("1:2:3:4:5:6:7:8::") is None


def test_a_hostname_with_an_empty_first_label_matches_nothing():
    """RFC 6125 §6.4.1: the reference identity is a DNS domain name; one that
    starts with a dot (an empty label) is not, and matches no presented name,
    not even the same text."""
    assert x509_chain.hostname_matches("a.example", "a.example")
    assert not x509_chain.hostname_matches(".a.example", ".a.example")


def test_a_valid_ecdsa_signature_under_the_ed25519_name_is_bad_certificate_42():
    """The same confusion the other way: a P-256 issuer's valid ECDSA
    signature in a certificate that names Ed25519."""
    pk = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Certificate(make("p", pk, ca=True))
    leaf = make("leaf", ec.generate_private_key(ec.SECP256R1()), issuer="p", ikey=pk)

    def ecdsa(tbs):
        return pk.sign(tbs, ec.ECDSA(hashes.SHA256()))

    x509_chain.verify_signed_by(x509.Certificate(_relabelled(leaf, _ECDSA_ALG, ecdsa)), issuer)
    forged = x509.Certificate(_relabelled(leaf, _ECDSA_ALG, ecdsa, _ED25519_ALG))
    assert forged.sig_alg == "ed25519"
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_signed_by(forged, issuer)
    assert ei.value.description == 42


def test_a_certificate_valid_up_to_the_time_floor_passes_it():
    """time_floor (a clock the device trusts to be no earlier): a certificate
    whose notAfter is the floor itself is not yet expired; one second later
    is certificate_expired (45)."""
    anchor = make("root", ec.generate_private_key(ec.SECP256R1()), ca=True, ku=KU)
    end = x509.Certificate(anchor).not_after
    x509_chain.verify_chain([anchor], anchors=[anchor], time_floor=end)
    with pytest.raises(AlertError) as ei:
        x509_chain.verify_chain([anchor], anchors=[anchor], time_floor=end + 1)
    assert ei.value.description == 45
