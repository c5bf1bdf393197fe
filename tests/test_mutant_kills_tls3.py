"""atls.tls.record / auth / messages behaviour that `make mutants`
(tests/mutants/) found no test pinning down: the inner plaintext's padding
and size (RFC 8446 §5.2, §5.4), the Certificate list bound (§4.4.2), which
anchors a named server may chain to, ed25519 CertificateVerify (§4.4.3),
supported_versions in a ServerHello (§4.2.1) and the extension count bound.
Records are sealed with the RFC 8448 §3 server application traffic secret;
handshakes run against the OpenSSL service engine with the project's PKI."""

import pytest
from cryptography.hazmat.primitives import serialization
from rfc8448 import Trace
from test_mutant_kills_tls2 import _hex, s3

from atls import x509
from atls.buffer import Buffer
from atls.errors import AlertError
from atls.protocol import TLS_AES_128_GCM_SHA256
from atls.tls.auth import pull_certificate
from atls.tls.client import CLOSED, CONNECTED, ClientConfig, TLSClient
from atls.tls.messages import pull_extensions
from atls.tls.record import RecordProtection
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

_SECRET = _hex(Trace(3), 'derive secret "tls13 s ap traffic"', "expanded")


def _open(record):
    """(content_type, content) of `record`, opened as the first record under
    the RFC 8448 §3 server application traffic secret."""
    rp = RecordProtection(TLS_AES_128_GCM_SHA256, _SECRET)
    ct, content = rp.open(record[:5], record[5:])
    return ct, bytes(content)


def _seal(inner):
    """A record whose TLSInnerPlaintext is exactly `inner`: seal() appends a
    content type, so a trailing zero is passed as the type."""
    rp = RecordProtection(TLS_AES_128_GCM_SHA256, _SECRET)
    assert inner[-1] == 0
    return rp.seal(0, inner[:-1], 16)


def _record_alert(record):
    with pytest.raises(AlertError) as ei:
        _open(record)
    return ei.value.description


def test_padding_zeros_are_stripped_up_to_the_content_type():
    """§5.4: the receiver scans from the end for the first non-zero octet, the
    content type; zeros after it are padding, zeros before it are content."""
    assert _open(_seal(b"a\x00b\x00\x17" + bytes(40))) == (23, b"a\x00b\x00")
    assert _open(_seal(b"\x00\x00\x16\x00")) == (22, b"\x00\x00")


def test_empty_content_is_allowed_but_an_all_zero_inner_plaintext_is_10():
    """§5.4: a record of just a content type (zero-length application data) is
    valid; an inner plaintext of only zeros has no content type:
    unexpected_message (10), whatever its length."""
    assert _open(_seal(b"\x17\x00\x00")) == (23, b"")
    rp = RecordProtection(TLS_AES_128_GCM_SHA256, _SECRET)
    assert _open(rp.seal(23, b"", 16)) == (23, b"")
    for n in (1, 2, 17):
        assert _record_alert(_seal(bytes(n))) == 10, n


def test_content_of_2_14_bytes_is_accepted_one_more_is_record_overflow_22():
    """§5.2/§5.4: TLSInnerPlaintext.content is at most 2^14 bytes (padding
    aside): 2^14 is opened, 2^14 + 1 is record_overflow (22)."""
    top = 2**14
    rp = RecordProtection(TLS_AES_128_GCM_SHA256, _SECRET)
    assert _open(rp.seal(23, b"\x01" * top, 16)) == (23, b"\x01" * top)
    assert _open(_seal(b"\x01" * top + b"\x16" + bytes(200)))[0] == 22
    rp = RecordProtection(TLS_AES_128_GCM_SHA256, _SECRET)
    assert _record_alert(rp.seal(23, b"\x01" * (top + 1), 16)) == 22


def _certificate_body(entries, context=b""):
    lst = b"".join(len(c).to_bytes(3, "big") + c + b"\x00\x00" for c in entries)
    return bytes((len(context),)) + context + len(lst).to_bytes(3, "big") + lst


def test_a_certificate_list_is_bounded_before_each_entry_is_parsed():
    """§4.4.2: at most max_entries CertificateEntry are taken; one more is
    bad_certificate (42) before it is parsed (an empty cert_data there, which
    would be decode_error, and the context are not looked at)."""
    ctx, certs = pull_certificate(_certificate_body([b"a", b"bc"]), 2)
    assert ctx == b"" and [bytes(c) for c in certs] == [b"a", b"bc"]
    for extra in (b"d", b""):
        with pytest.raises(AlertError) as ei:
            pull_certificate(_certificate_body([b"a", b"bc", extra], b"x"), 2)
        assert ei.value.description == 42, extra


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki3():
    ca = pki.make_ca("Tls3 CA")
    sub1 = pki.make_cert("Tls3 Sub 1", issuer=ca, is_ca=True)
    sub2 = pki.make_cert("Tls3 Sub 2", issuer=sub1, is_ca=True)
    leaf = pki.make_cert("service.local", issuer=sub2)
    other = pki.make_cert("other.local", issuer=ca)
    return ca, sub1, sub2, leaf, other


def _handshake(cfg, chain, key):
    """The client's final state, or the alert it raised."""
    c = TLSClient(cfg)
    c.start(0)
    server = ServerConnection(ServerConfig(cert_chain=chain, key=key).build())
    try:
        out = c.data_to_send()
        while out and c.state != CONNECTED:
            c.receive(server.feed(out))
            out = c.data_to_send()
    except AlertError as exc:
        assert c.state == CLOSED
        return exc.description
    return c.state


def test_a_chain_of_max_chain_certificates_connects_one_more_is_42(pki3):
    """§4.4.2 / ClientConfig.max_chain (3): leaf + two intermediates + the
    root is four certificates, one too many (bad_certificate); without the
    root the same chain verifies to the CA anchor."""
    ca, sub1, sub2, leaf, _ = pki3
    cfg = dict(ca_certs=[_der(ca.cert)], server_name="service.local")
    assert ClientConfig(**cfg).max_chain == 3
    chain = [leaf.cert, sub2.cert, sub1.cert]
    assert _handshake(ClientConfig(**cfg), chain, leaf.key) == CONNECTED
    assert _handshake(ClientConfig(**cfg), chain + [ca.cert], leaf.key) == 42


def test_with_a_name_to_check_the_ca_authenticates_besides_the_pins(pki3):
    """ca_certs + spki_pins + server_name: a CA vouches for names, so a
    certificate it issued for the checked name connects even when no pin
    matches; the pins alone would refuse it (unknown_ca, 48)."""
    ca, sub1, sub2, leaf, other = pki3
    pin = x509.spki_sha256(x509.Certificate(_der(other.cert)))
    chain = [leaf.cert, sub2.cert, sub1.cert]
    both = ClientConfig(ca_certs=[_der(ca.cert)], spki_pins=[pin], server_name="service.local")
    assert _handshake(both, chain, leaf.key) == CONNECTED
    pins = ClientConfig(spki_pins=[pin], server_name="service.local")
    assert _handshake(pins, chain, leaf.key) == 48


def test_an_ed25519_certificate_verify_is_checked_with_the_leaf_key():
    """§4.4.3 / §4.2.3: an ed25519 leaf signs with scheme ed25519 (0x0807),
    which the client offers and verifies: the handshake completes."""
    ca = pki.make_ca("Tls3 Ed CA", key_type="ed25519")
    leaf = pki.make_cert("ed.local", issuer=ca, key_type="ed25519")
    cfg = ClientConfig(ca_certs=[_der(ca.cert)], server_name="ed.local")
    assert _handshake(cfg, [leaf.cert], leaf.key) == CONNECTED


def _with_supported_versions(sh_record, data):
    """The RFC 8448 §3 ServerHello record with supported_versions' data
    replaced by `data` (the lengths fixed up)."""
    old = b"\x00\x2b\x00\x02\x03\x04"
    assert sh_record.count(old) == 1
    new = b"\x00\x2b" + len(data).to_bytes(2, "big") + data
    grow = len(new) - len(old)
    msg = bytearray(sh_record[5:].replace(old, new))
    msg[1:4] = (int.from_bytes(msg[1:4], "big") + grow).to_bytes(3, "big")
    at = 4 + 2 + 32 + 1 + 2 + 1  # header, version, random, session id, suite, compression
    msg[at : at + 2] = (int.from_bytes(msg[at : at + 2], "big") + grow).to_bytes(2, "big")
    return sh_record[:3] + len(msg).to_bytes(2, "big") + bytes(msg)


def test_supported_versions_must_be_exactly_two_bytes_of_0x0304():
    """§4.2.1: a ServerHello's supported_versions holds selected_version,
    0x0304; any other version, or trailing bytes, is illegal_parameter (47)."""
    for data in (b"\x03\x03", b"\x03\x04\x00", b"\x03", b"\x7f\x1c"):
        c, sh, enc, _ = s3()
        with pytest.raises(AlertError) as ei:
            c.receive(_with_supported_versions(sh, data) + enc)
        assert ei.value.description == 47, data
    assert _with_supported_versions(sh, b"\x03\x04") == sh  # the rewrite itself is exact


def _extensions(types):
    block = b"".join(t.to_bytes(2, "big") + b"\x00\x00" for t in types)
    return Buffer(len(block).to_bytes(2, "big") + block)


def test_at_most_32_extensions_in_one_block_one_more_is_47():
    """A bound on parser state (hostile input): 32 distinct extensions are
    taken, a 33rd is illegal_parameter (47) like a duplicate (§4.2)."""
    assert sorted(pull_extensions(_extensions(range(100, 132)))) == list(range(100, 132))
    for types in (range(100, 133), (100, 101, 100)):
        with pytest.raises(AlertError) as ei:
            pull_extensions(_extensions(types))
        assert ei.value.description == 47
