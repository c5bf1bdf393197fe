"""atls.tls.client behaviour that `make mutants` (tests/mutants/) found no
test pinning down: the PSK length bounds, close() by state (RFC 8446 §6.1),
and TLS application data after the handshake (ignored: ATLS uses the
exporter only).  Splits of handshake messages across records are in
tests/test_tls_failures.py (it has the man in the middle that re-seals)."""

import pytest

from atls.errors import AlertError, UsageError
from atls.protocol import TLS_AES_128_CCM_SHA256
from atls.tls.client import CLOSED, CONNECTED, START, ClientConfig, TLSClient
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
CLOSE_NOTIFY = b"\x15\x03\x03\x00\x02\x01\x00"  # §6.1 warning close_notify, plaintext


def connected(tickets=2):
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start()
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}, tickets=tickets).build())
    c.receive(s.feed(c.data_to_send()))
    c.receive(s.feed(c.data_to_send()))  # the server's NewSessionTickets
    assert c.state == CONNECTED and s.done
    return c, s


def test_psk_is_16_to_64_bytes():
    for n in (16, 64):
        ClientConfig(psk=bytes(n), psk_identity=b"d")
    for n in (15, 65):
        with pytest.raises(UsageError):
            ClientConfig(psk=bytes(n), psk_identity=b"d")


def test_close_sends_close_notify_only_from_a_started_open_client():
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    assert c.state == START
    c.close()
    assert c.data_to_send() == b"" and c.state == CLOSED
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start()
    c.data_to_send()
    c.close()
    assert c.data_to_send() == CLOSE_NOTIFY and c.state == CLOSED
    c.close()  # already closed: nothing more
    assert c.data_to_send() == b""
    c, _ = connected()
    c.close()
    out = c.data_to_send()
    assert out[:3] == b"\x17\x03\x03" and len(out) > 7  # sealed with the application keys


def test_application_data_after_the_handshake_is_ignored():
    c, s = connected()
    c.receive(s.send(b"not for ATLS"))
    assert c.state == CONNECTED and c.data_to_send() == b""
    c.receive(s.close())  # then close_notify ends it quietly
    assert c.state == CLOSED


def test_no_alert_is_sent_back_for_the_peers_own_alert():
    """§6.2: a fatal alert from the server closes the client; answering it
    with an alert of our own would only talk to a closed peer."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start()
    c.data_to_send()
    with pytest.raises(AlertError) as ei:
        c.receive(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure
    assert ei.value.description == 40 and c.state == CLOSED
    assert c.data_to_send() == b""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start()
    c.data_to_send()
    with pytest.raises(AlertError) as ei:  # our own failure: the alert goes out
        c.receive(b"\x63\x03\x03\x00\x01\x00")  # unknown content type: 10
    assert c.data_to_send() == b"\x15\x03\x03\x00\x02\x02" + bytes((ei.value.description,))
