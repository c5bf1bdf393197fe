"""The client's state machine (atls.tls.handshake, RFC 8446 Appendix A.1):
the transition table, the trace of a real handshake against OpenSSL (memory
BIOs), unexpected_message for everything else (§6.2), caller errors that
reach the caller, and which modules a handshake loads under MicroPython."""

import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from tls_replay import CounterRng

from atls.errors import AlertError, UsageError
from atls.protocol import SECP256R1, X25519
from atls.tls import handshake
from atls.tls.client import (
    CLOSED,
    CONNECTED,
    START,
    WAIT_CERT,
    WAIT_CERT_CR,
    WAIT_CV,
    WAIT_EE,
    WAIT_FINISHED,
    WAIT_SH,
    ClientConfig,
    TLSClient,
)
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

HRR = handshake.HELLO_RETRY_REQUEST
STATES = (START, WAIT_SH, WAIT_EE, WAIT_CERT_CR, WAIT_CERT, WAIT_CV, WAIT_FINISHED, CONNECTED)
PSK = bytes(range(32))
# RFC 8446 §4.1.3: the random of a HelloRetryRequest
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def rows():
    t = handshake.TRANSITIONS
    return [t[i : i + 4] for i in range(0, len(t), 4)]


def table_edges():
    """{(state, type, next state)} the table allows."""
    out = set()
    for state, mtype, _, nxt in rows():
        for n in nxt if isinstance(nxt, tuple) else (nxt,):
            out.add((state, mtype, n))
    return out


@pytest.fixture(scope="module")
def pkiset():
    ca = pki.make_ca("Handshake CA")
    dev_ca = pki.make_ca("Handshake Device CA")
    return {
        "ca": ca,
        "leaf": pki.make_cert("service.local", issuer=ca),
        "dev_ca": dev_ca,
        "device": pki.make_cert("device-1", issuer=dev_ca, client=True),
    }


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def run(server_cfg, **kw):
    """A client (trace recorded) against an OpenSSL server until neither
    has anything to send; returns (client, server, trace)."""
    trace = []
    c = TLSClient(ClientConfig(trace=lambda *t: trace.append(t), **kw))
    c.start()
    server = ServerConnection(server_cfg.build())
    out = c.data_to_send()
    while out:
        reply = server.feed(out)
        if reply:
            c.receive(reply)
        out = c.data_to_send()
    return c, server, trace


def test_a1_every_row_names_states_and_a_handler():
    seen = set()
    for state, mtype, handler, nxt in rows():
        assert state in STATES and state != START, state
        assert 0 < mtype < 256 or mtype == HRR
        assert (state, mtype) not in seen, "two rows for %s/%d" % (state, mtype)
        seen.add((state, mtype))
        for n in nxt if isinstance(nxt, tuple) else (nxt,):
            assert n in STATES
        if isinstance(handler, str):  # "module.function" in atls.tls
            module, name = handler.split(".")
            handler = getattr(__import__("atls.tls." + module, fromlist=[name]), name)
        assert callable(handler)


def test_a1_everything_not_in_the_table_is_unexpected_message():
    """§6.2 unexpected_message for any (state, type) that A.1 does not list,
    including a HelloRetryRequest outside WAIT_SH."""
    listed = {(s, t) for s, t, _, _ in rows()}
    hrr = b"\x02\x00\x00\x22\x03\x03" + HRR_RANDOM
    for state in STATES[1:]:
        for mtype in range(256):
            msg = bytes((mtype, 0, 0, 0)) if mtype != 2 else b"\x02\x00\x00\x00"
            if (state, mtype) in listed:
                assert handshake.transition(state, mtype, msg)[2] == mtype
                continue
            with pytest.raises(AlertError) as ei:
                handshake.transition(state, mtype, msg)
            assert ei.value.description == 10
            assert "state " + state in ei.value.message
        if (state, HRR) in listed:
            assert handshake.transition(state, 2, hrr)[1:] == (START, HRR)
        else:
            with pytest.raises(AlertError) as ei:
                handshake.transition(state, 2, hrr)
            assert ei.value.description == 10


def test_a1_psk_handshake_trace():
    c, server, trace = run(ServerConfig(psks={b"dev": PSK}), psk=PSK, psk_identity=b"dev")
    assert c.state == CONNECTED and server.done and c.mode == "psk_dhe"
    assert trace == [
        (START, 1, WAIT_SH),
        (WAIT_SH, 2, WAIT_EE),
        (WAIT_EE, 8, WAIT_FINISHED),
        (WAIT_FINISHED, 20, CONNECTED),
    ]
    c.close()
    assert trace[-1] == (CONNECTED, None, CLOSED)


def test_a1_certificate_handshake_with_client_auth_and_ticket_trace(pkiset):
    dev = pkiset["device"]
    key = dev.key.private_numbers().private_value.to_bytes(32, "big")
    server = ServerConfig(
        cert_chain=[pkiset["leaf"].cert],
        key=pkiset["leaf"].key,
        client_ca=[pkiset["dev_ca"].cert],
        tickets=1,
    )
    c, srv, trace = run(
        server,
        ca_certs=[_der(pkiset["ca"].cert)],
        server_name="service.local",
        client_certs=[_der(dev.cert)],
        client_key=key,
        max_ticket=2048,  # OpenSSL's ticket carries our certificate
    )
    assert c.state == CONNECTED and srv.info()["client_cert"] == dev.cert
    assert len(c.tickets) == 1
    assert trace == [
        (START, 1, WAIT_SH),
        (WAIT_SH, 2, WAIT_EE),
        (WAIT_EE, 8, WAIT_CERT_CR),
        (WAIT_CERT_CR, 13, WAIT_CERT),
        (WAIT_CERT, 11, WAIT_CV),
        (WAIT_CV, 15, WAIT_FINISHED),
        (WAIT_FINISHED, 20, CONNECTED),
        (CONNECTED, 4, CONNECTED),
    ]
    assert set(trace[1:]) <= table_edges()


def test_a1_hello_retry_request_goes_back_to_start():
    c, _, trace = run(
        ServerConfig(psks={b"dev": PSK}, groups=("secp256r1",)),
        psk=PSK,
        psk_identity=b"dev",
        groups=(X25519, SECP256R1),
    )
    assert c.state == CONNECTED and c.hrr and c.group == SECP256R1
    assert trace[:4] == [
        (START, 1, WAIT_SH),
        (WAIT_SH, HRR, START),
        (START, 1, WAIT_SH),
        (WAIT_SH, 2, WAIT_EE),
    ]
    assert {t for t in trace if t[0] != START} <= table_edges()


def test_a1_failure_enters_closed_in_the_trace():
    trace = []
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", trace=lambda *t: trace.append(t)))
    c.start()
    with pytest.raises(AlertError):
        c.receive(b"\x16\x03\x03\x00\x04\x14\x00\x00\x00")  # Finished in WAIT_SH
    assert trace == [(START, 1, WAIT_SH), (WAIT_SH, None, CLOSED)]


def test_trace_must_be_callable():
    with pytest.raises(UsageError):
        ClientConfig(psk=PSK, psk_identity=b"dev", trace="log")


def test_usage_error_reaches_the_caller(pkiset):
    """A caller's mistake found mid-handshake (here a 31-byte device key, used
    when the server asks for our certificate) is raised as it is, not turned
    into internal_error; the peer gets internal_error (80) and the client is
    CLOSED."""
    dev = pkiset["device"]
    c = TLSClient(
        ClientConfig(
            ca_certs=[_der(pkiset["ca"].cert)],
            server_name="service.local",
            client_certs=[_der(dev.cert)],
            client_key=bytes(31),
        )
    )
    c.start()
    server = ServerConnection(
        ServerConfig(
            cert_chain=[pkiset["leaf"].cert],
            key=pkiset["leaf"].key,
            client_ca=[pkiset["dev_ca"].cert],
        ).build()
    )
    flight = server.feed(c.data_to_send())
    with pytest.raises(UsageError) as ei:
        c.receive(flight)
    assert not isinstance(ei.value, AlertError)
    assert c.state == CLOSED and c.error is ei.value
    alert = c.data_to_send()
    assert alert[:3] == b"\x17\x03\x03"  # the alert, under the handshake keys
    with pytest.raises(AlertError) as ei:  # closed stays closed (issue 12)
        c.receive(b"\x15\x03\x03\x00\x02\x02\x28")
    assert ei.value.description == 80


_MPY_MODULES = """
import json, sys
from binascii import unhexlify
from tls_replay import CounterRng
from atls.tls.client import ClientConfig, TLSClient
kw = json.loads(%r)
for k in ("psk", "psk_identity"):
    if k in kw:
        kw[k] = unhexlify(kw[k])
c = TLSClient(ClientConfig(**kw), rng=CounterRng(b"modules"))
c.start(0)
c.data_to_send()
for flight in %r:
    c.receive(unhexlify(flight))
    c.data_to_send()
print(json.dumps([c.state, sorted(m for m in sys.modules if m.startswith("atls.tls."))]))
"""


@pytest.mark.parametrize(
    "server_groups,loaded",
    [
        (("x25519",), []),
        (("secp256r1",), ["atls.tls.retry"]),
    ],
)
def test_psk_handshake_loads_no_certificate_ticket_or_key_update_code(mpy, server_groups, loaded):
    """RAM on the device: a PSK handshake (MicroPython, same ClientHello as
    the CPython client that recorded the server's flights) loads the
    certificate, ticket and KeyUpdate modules never, the HelloRetryRequest
    module only when the server asks again."""
    kw = {"psk": PSK.hex(), "psk_identity": b"dev".hex(), "groups": [X25519, SECP256R1]}
    cfg = dict(kw, psk=PSK, psk_identity=b"dev")
    c = TLSClient(ClientConfig(**cfg), rng=CounterRng(b"modules"))
    c.start(0)
    server = ServerConnection(ServerConfig(psks={b"dev": PSK}, groups=server_groups).build())
    flights, out = [], c.data_to_send()
    while out:
        reply = server.feed(out)
        if reply:
            flights.append(reply.hex())
            c.receive(reply)
        out = c.data_to_send()
    assert c.state == CONNECTED
    state, modules = json.loads(mpy.check(_MPY_MODULES % (json.dumps(kw), flights)).lines[-1])
    assert state == CONNECTED
    lazy = {"atls.tls.auth", "atls.tls.retry", "atls.tls.tickets", "atls.tls.keyupdate"}
    assert sorted(lazy & set(modules)) == loaded


def test_issue12_hrr_then_plaintext_warning_close_notify_is_fatal():
    """Issue 12: the path answers ClientHello with a HelloRetryRequest plus a
    plaintext *warning* close_notify.  Before the handshake completes every
    alert, close_notify included, is fatal: AlertError(0) from the peer, the
    client CLOSED; the next flight then raises AlertError, never UsageError
    (which the device session did not catch)."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", groups=(X25519, SECP256R1)))
    c.start(0)
    server = ServerConnection(ServerConfig(psks={b"dev": PSK}, groups=("secp256r1",)).build())
    hrr = server.feed(c.data_to_send())
    assert hrr[5] == 2 and hrr[11:43] == HRR_RANDOM
    with pytest.raises(AlertError) as ei:
        c.receive(hrr + b"\x15\x03\x03\x00\x02\x01\x00")  # warning(1) close_notify(0)
    assert ei.value.description == 0 and c.state == CLOSED and not c.connected
    c.data_to_send()  # ClientHello2, queued before the alert: nothing else
    with pytest.raises(AlertError) as ei:
        c.receive(b"\x16\x03\x03\x00\x04\x14\x00\x00\x00")  # the next fragment of the flight
    assert ei.value.description == 0 and c.state == CLOSED


@pytest.mark.parametrize("level", [1, 2])
def test_close_notify_before_connected_is_fatal_after_is_quiet(level):
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start(0)
    with pytest.raises(AlertError) as ei:
        c.receive(bytes((21, 3, 3, 0, 2, level, 0)))
    assert ei.value.description == 0 and c.state == CLOSED
    # after the handshake, the peer's close_notify ends quietly; then closed
    c, server, _ = run(ServerConfig(psks={b"dev": PSK}, tickets=2), psk=PSK, psk_identity=b"dev")
    assert c.connected
    c.receive(server.close())
    assert c.state == CLOSED and c.error.description == 0
    with pytest.raises(AlertError):
        c.receive(b"\x17\x03\x03\x00\x01\x00")


def test_receive_after_close_is_an_alert_error():
    c, _, _ = run(ServerConfig(psks={b"dev": PSK}), psk=PSK, psk_identity=b"dev")
    c.close()
    with pytest.raises(AlertError) as ei:
        c.receive(b"\x17\x03\x03\x00\x01\x00")
    assert ei.value.description == 0 and not isinstance(ei.value, UsageError)
