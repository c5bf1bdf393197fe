"""Certificate mode needs a name (issue 13 item 5): a CA vouches for names,
so ca_certs without a server_name to check would accept any certificate the
CA issued, i.e. anyone certified by it could impersonate the service.
ClientConfig refuses that (UsageError), atls.app.tls_config turns the device
configuration's version into a ConfigError; SPKI pins alone need no name."""

import pytest
from cryptography.hazmat.primitives import serialization

from atls import app
from atls.errors import AlertError, UsageError
from atls.tls.client import CONNECTED, ClientConfig, TLSClient
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection


@pytest.fixture(scope="module")
def certs():
    ca = pki.make_ca("Config CA")
    return ca, pki.make_cert("service.local", issuer=ca), pki.make_cert("mallory.local", issuer=ca)


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


def _pin(leaf):
    from atls import x509

    return x509.spki_sha256(x509.Certificate(_der(leaf.cert)))


def handshake(cfg, leaf):
    c = TLSClient(cfg)
    c.start(0)
    server = ServerConnection(ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build())
    out = c.data_to_send()
    while out and c.state != CONNECTED:
        c.receive(server.feed(out))
        out = c.data_to_send()
    return c


@pytest.mark.parametrize(
    "kw, message",
    [
        ({}, "ca_certs need server_name"),
        ({"check_hostname": True}, "ca_certs need server_name"),
        ({"check_hostname": False}, "ca_certs need server_name"),
        ({"server_name": "", "check_hostname": True}, "ca_certs need server_name"),
    ],
)
def test_ca_certs_without_a_server_name_are_refused(certs, kw, message):
    with pytest.raises(UsageError, match=message):
        ClientConfig(ca_certs=[_der(certs[0].cert)], **kw)


def test_check_hostname_without_server_name_is_refused_even_with_pins(certs):
    ca, leaf, _ = certs
    with pytest.raises(UsageError, match="check_hostname needs server_name"):
        ClientConfig(ca_certs=[_der(ca.cert)], spki_pins=[_pin(leaf)], check_hostname=True)


def test_a_certificate_for_another_name_from_the_same_ca_is_refused(certs):
    ca, _, mallory = certs
    c = TLSClient(ClientConfig(ca_certs=[_der(ca.cert)], server_name="service.local"))
    c.start(0)
    server = ServerConnection(ServerConfig(cert_chain=[mallory.cert], key=mallory.key).build())
    with pytest.raises(AlertError) as ei:
        c.receive(server.feed(c.data_to_send()))
    assert ei.value.description == 42  # bad_certificate: hostname mismatch


def test_pins_alone_need_no_name(certs):
    _, leaf, _ = certs
    c = handshake(ClientConfig(spki_pins=[_pin(leaf)]), leaf)
    assert c.state == CONNECTED and c.mode == "cert"


def test_without_a_name_checked_only_the_pins_authenticate(certs):
    """ca_certs + spki_pins, no name checked: the CA alone no longer lets
    one of its certificates in; the pinned key does."""
    ca, leaf, mallory = certs
    cfg = dict(ca_certs=[_der(ca.cert)], spki_pins=[_pin(leaf)], check_hostname=False)
    assert handshake(ClientConfig(**cfg), leaf).state == CONNECTED
    c = TLSClient(ClientConfig(**cfg))
    c.start(0)
    server = ServerConnection(ServerConfig(cert_chain=[mallory.cert], key=mallory.key).build())
    with pytest.raises(AlertError) as ei:
        c.receive(server.feed(c.data_to_send()))
    assert ei.value.description == 48  # unknown_ca: not pinned


def _device(**tls):
    return {"device_id": "dev-01", "tls": tls}


def test_app_tls_config_ca_without_server_name_is_a_config_error(certs):
    ca = _der(certs[0].cert).hex()
    with pytest.raises(app.ConfigError, match="tls.ca needs tls.server_name"):
        app.tls_config(_device(ca=ca))
    cfg = app.tls_config(_device(ca=ca, server_name="service.local"))
    assert cfg.server_name == "service.local" and cfg.check_hostname is True


def test_app_tls_config_turns_client_config_errors_into_config_errors():
    with pytest.raises(app.ConfigError, match="psk must be 16..64 bytes"):
        app.tls_config(_device(psk="00" * 8))
