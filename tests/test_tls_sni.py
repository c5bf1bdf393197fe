"""No IP literal as SNI (issue 13 item 6): RFC 6066 §3 "Literal IPv4 and IPv6
addresses are not permitted in HostName", so a server_name that is an IPv4 or
IPv6 literal is not sent; the certificate is then matched by an iPAddress
SAN (RFC 5280 §4.2.1.6; RFC 6125 §6.2.1), never by a dNSName.  A strict
server (OpenSSL through pyOpenSSL, whose servername callback aborts with
illegal_parameter on an IP-literal SNI, as independent TLS 1.3 stacks do)
must complete."""

import ipaddress

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from atls import x509
from atls.errors import AlertError
from atls.tls import handshake
from atls.tls.client import CONNECTED, ClientConfig, TLSClient
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

_TLSEXT_NAMETYPE_HOST_NAME = 0
_ILLEGAL_PARAMETER = 47


def is_ip_literal(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def strict_rfc6066(ctx, seen):
    """Make an OpenSSL context abort with illegal_parameter on an IP-literal
    SNI (RFC 6066 §3); every SNI received (None: none) goes to `seen`."""

    @_ffi.callback("int (*)(SSL *, int *, void *)")
    def callback(ssl, alert, arg):
        raw = _lib.SSL_get_servername(ssl, _TLSEXT_NAMETYPE_HOST_NAME)
        name = None if raw == _ffi.NULL else _ffi.string(raw).decode()
        seen.append(name)
        if name is not None and is_ip_literal(name):
            alert[0] = _ILLEGAL_PARAMETER
            return _lib.SSL_TLSEXT_ERR_ALERT_FATAL
        return _lib.SSL_TLSEXT_ERR_OK

    _lib.SSL_CTX_set_tlsext_servername_callback(ctx._context, callback)
    ctx._atls_strict_sni = callback  # the cffi callback lives as long as ctx
    return ctx


@pytest.fixture(scope="module")
def ca():
    return pki.make_ca("SNI CA")


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


def run(ca, leaf, server_name, seen):
    ctx = strict_rfc6066(ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build(), seen)
    server = ServerConnection(ctx)
    c = TLSClient(ClientConfig(ca_certs=[_der(ca.cert)], server_name=server_name))
    c.start(0)
    out = c.data_to_send()
    while out and c.state != CONNECTED:
        c.receive(server.feed(out))
        out = c.data_to_send()
    server.feed(out)
    return c, server


@pytest.mark.parametrize(
    "name, sent",
    [
        ("service.local", b"service.local"),
        (b"service.local", b"service.local"),
        ("127.0.0.1", None),
        ("10.1.2.3", None),
        ("::1", None),
        ("2001:db8::1", None),
        ("[2001:db8::1]", None),
        ("::ffff:192.0.2.1", None),
        (None, None),
        ("", None),
    ],
)
def test_rfc6066_s3_no_ip_literal_in_server_name(name, sent):
    assert handshake.sni(name) == sent
    c = TLSClient(ClientConfig(psk=bytes(32), psk_identity=b"d", server_name=name))
    c.start(0)
    hello = c.data_to_send()[5:]
    assert (0 in handshake.offered(hello)) == (sent is not None)
    if sent is None:
        assert b"127.0.0.1" not in hello


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_strict_rfc6066_server_completes_with_ip_san(ca, address):
    leaf = pki.make_cert("service", issuer=ca, san=[ipaddress.ip_address(address)])
    seen = []
    c, server = run(ca, leaf, address, seen)
    assert c.state == CONNECTED and server.done and seen == [None]
    assert c.exporter(b"EXPORTER-test") == server.export(b"EXPORTER-test", 32)


def test_strict_rfc6066_server_gets_the_dns_name(ca):
    leaf = pki.make_cert("service.local", issuer=ca)
    seen = []
    c, server = run(ca, leaf, "service.local", seen)
    assert c.state == CONNECTED and seen == ["service.local"]


@pytest.mark.parametrize(
    "san, address",
    [
        (["127.0.0.2"], "127.0.0.1"),
        (["127.0.0.1"], "::ffff:127.0.0.1"),  # 16 bytes are not 4 (RFC 5280 §4.2.1.6)
        ([], "127.0.0.1"),
    ],
)
def test_ip_address_must_match_an_ip_san(ca, san, address):
    leaf = pki.make_cert("service", issuer=ca, san=[ipaddress.ip_address(a) for a in san])
    with pytest.raises(AlertError) as ei:
        run(ca, leaf, address, [])
    assert ei.value.description == 42  # bad_certificate


def _dns_name_leaf(ca, name):
    """A leaf whose only SAN is dNSName `name` (pki would make an IP SAN)."""
    import datetime

    from cryptography import x509 as cx
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        cx.CertificateBuilder()
        .subject_name(cx.Name([cx.NameAttribute(cx.oid.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(cx.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(cx.SubjectAlternativeName([cx.DNSName(name)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )

    class Leaf:
        pass

    leaf = Leaf()
    leaf.cert, leaf.key = cert, key
    return leaf


def test_ip_address_never_matches_a_dns_name_san(ca):
    """RFC 6125 §6.2.1: an IP literal is compared with iPAddress SANs only."""
    leaf = _dns_name_leaf(ca, "127.0.0.1")
    with pytest.raises(AlertError) as ei:
        run(ca, leaf, "127.0.0.1", [])
    assert ei.value.description == 42


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "1::",
        "fe80::1:2",
        "2001:db8:0:0:1:0:0:1",
        "1:2:3:4:5:6:7:8",
        "::ffff:10.0.0.1",
        "64:ff9b::192.0.2.33",
    ],
)
def test_ip_address_parses_like_the_python_stdlib(text):
    assert x509.ip_address(text) == ipaddress.ip_address(text).packed


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3",
        "1.2.3.4.5",
        "256.0.0.1",
        "1..2.3",
        "01234.1.1.1",
        ":::",
        "1::2::3",
        "0x1::",
        "1:2:3:4:5:6:7:8:9",
        "12345::",
        "g::1",
        "::1.2.3",
        "a.b.c.d",
        "1:2:3:4:5:6:7",
        "",
        "010.0.0.1",  # a leading zero reads as octal elsewhere
        "1.2.3.04",
    ],
)
def test_ip_address_rejects_what_is_not_an_address(text):
    assert x509.ip_address(text) is None
