"""Tickets per RFC 8446 §4.6.1 (issue 13 item 8), against OpenSSL (memory
BIOs): a ticket is offered only while its age by the device clock (now_ms)
is under ticket_lifetime, only to the server name and trust anchors of the
session it came from, and at most once; a lifetime of 0 is not kept, one
over seven days is refused."""

import pytest
from cryptography.hazmat.primitives import serialization

from atls.errors import AlertError, UsageError
from atls.protocol import TLS_AES_128_GCM_SHA256
from atls.tls.client import CONNECTED, ClientConfig, TLSClient
from atls.tls.handshake import HandshakeContext
from atls.tls.tickets import new_session_ticket
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
OTHER = bytes(range(1, 33))
T0 = 1_000_000  # device clock (ms) when the first session runs


@pytest.fixture(scope="module")
def ctx():
    return ServerConfig(psks={b"dev": PSK, b"other": OTHER}, tickets=1).build()


def connect(ctx, now_ms, **kw):
    kw.setdefault("psk", PSK)
    kw.setdefault("psk_identity", b"dev")
    kw.setdefault("server_name", "service.local")
    c = TLSClient(ClientConfig(**kw))
    c.start(now_ms)
    server = ServerConnection(ctx)
    out = c.data_to_send()
    while out:
        reply = server.feed(out)
        if reply:
            c.receive(reply, now_ms)
        out = c.data_to_send()
    assert c.state == CONNECTED
    return c


def ticket(ctx):
    c = connect(ctx, T0)
    assert len(c.tickets) == 1 and 0 < c.tickets[0].lifetime <= 604800
    return c.tickets[-1]


def test_rfc8446_s4_6_1_ticket_within_lifetime_resumes_once(ctx):
    t = ticket(ctx)
    c = connect(ctx, T0 + t.lifetime * 1000 - 1, ticket=t)
    assert c.mode == "resumed" and t.used
    with pytest.raises(UsageError, match="ticket already used"):  # single use
        connect(ctx, T0 + 1, ticket=t)


AGES_MS = {
    "lifetime": lambda s: s * 1000,
    "lifetime + 1 ms": lambda s: s * 1000 + 1,
    "30 days": lambda s: 30 * 86400 * 1000,
    "clock went back": lambda s: -1,
}


@pytest.mark.parametrize("age", sorted(AGES_MS))
def test_rfc8446_s4_6_1_expired_ticket_is_not_offered(ctx, age):
    """Past its lifetime (or with a clock that went back) the ticket stays
    home: a full handshake with the external PSK instead."""
    t = ticket(ctx)
    c = connect(ctx, T0 + AGES_MS[age](t.lifetime), ticket=t)
    assert c.mode == "psk_dhe" and not t.used


def test_ticket_without_a_clock_is_not_offered(ctx):
    t = ticket(ctx)
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", server_name="service.local", ticket=t))
    c.start()  # no now_ms: the age is unknown
    assert not t.used


@pytest.mark.parametrize(
    "kw",
    [
        {"server_name": "other.local"},
        {"server_name": None},
        {"psk": OTHER, "psk_identity": b"other"},
    ],
)
def test_rfc8446_s4_6_1_ticket_is_bound_to_server_name_and_anchors(ctx, kw):
    t = ticket(ctx)
    c = connect(ctx, T0 + 1, ticket=t, **kw)
    assert c.mode == "psk_dhe" and not t.used


def test_ticket_is_bound_to_ca_anchors():
    ca, other = pki.make_ca("Ticket CA"), pki.make_ca("Other CA")
    leaf = pki.make_cert("service.local", issuer=ca)
    der = [c.cert.public_bytes(serialization.Encoding.DER) for c in (ca, other)]
    sctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key, tickets=1).build()
    kw = dict(psk=None, psk_identity=None, max_ticket=2048)
    c = connect(sctx, T0, ca_certs=[der[0]], **kw)
    t = c.tickets[-1]
    c = TLSClient(ClientConfig(ca_certs=[der[1]], server_name="service.local", ticket=t))
    c.start(T0 + 1)
    assert not t.used  # another CA: not offered (and that CA then fails the chain)
    assert connect(sctx, T0 + 1, ca_certs=[der[0]], ticket=t, **kw).mode == "resumed"


def test_ticket_only_configuration_needs_a_usable_ticket(ctx):
    t = ticket(ctx)
    with pytest.raises(UsageError, match="ticket expired or not for this server"):
        TLSClient(ClientConfig(server_name="service.local", ticket=t)).start(T0 + t.lifetime * 1000)
    assert not t.used
    c = connect(ctx, T0 + 5, psk=None, psk_identity=None, ticket=t)
    assert c.mode == "resumed"


def _nst(lifetime):
    body = lifetime.to_bytes(4, "big") + bytes(4) + b"\x01\x00" + b"\x00\x02ab" + b"\x00\x00"
    return b"\x04" + len(body).to_bytes(3, "big") + body


def _connected_ctx():
    hc = HandshakeContext(ClientConfig(psk=PSK, psk_identity=b"dev"), None, None)
    hc.res_master, hc.suite, hc.now_ms = bytes(32), TLS_AES_128_GCM_SHA256, T0
    return hc


def test_rfc8446_s4_6_1_lifetime_zero_is_discarded_and_over_seven_days_refused():
    hc = _connected_ctx()
    new_session_ticket(hc, _nst(0))  # "the ticket should be discarded immediately"
    assert hc.tickets == []
    new_session_ticket(hc, _nst(604800))  # seven days: the maximum
    assert len(hc.tickets) == 1
    with pytest.raises(AlertError) as ei:  # "Servers MUST NOT use any value greater"
        new_session_ticket(hc, _nst(604801))
    assert ei.value.description == 47
