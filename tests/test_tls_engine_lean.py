"""host_tools/service/tls_engine.py on a PSK-only context (issue 19): no
OpenSSL message callback, about twenty trips into Python per handshake
fewer.  What the callback reported - HelloRetryRequest, the selected PSK
identity, the alert sent and the alert received - is read from our own
plaintext records and OpenSSL's error reasons instead, and must come out
the same: every case runs on the lean context and on the same context with
the callback put back, and the two are compared (and pinned)."""

import pytest
from OpenSSL import SSL

from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN
from host_tools.bench import openssl_peers
from host_tools.service import tls_hooks
from host_tools.service.tls_engine import ServerConfig, ServerConnection, TLSError

IDENT = b"dev-01"
PSK = bytes(range(32))
SUITE = "TLS_AES_128_CCM_8_SHA256"


def _ctx(watched, groups=("x25519", "secp256r1")):
    cfg = ServerConfig(psks={IDENT: PSK}, suites=(SUITE,), groups=groups)
    cfg.hide_unknown_psk = True  # as the service sets it
    ctx = cfg.build()
    assert ctx._atls_messages is False  # PSK only, no tickets: lean
    if watched:
        tls_hooks._lib.SSL_CTX_set_msg_callback(ctx._context, tls_hooks._on_message_cb)
        ctx._atls_messages = True
    return ctx


def _client(ident=IDENT, key=PSK, curves=b"X25519"):
    ctx = openssl_peers.client_context(SUITE, ident, key)
    assert tls_hooks._lib.SSL_CTX_set1_curves_list(ctx._context, curves) == 1
    c = SSL.Connection(ctx, None)
    c.set_connect_state()
    return c


def _flight(c):
    openssl_peers._step(c)
    return openssl_peers._drain(c)


def _tamper_last_record(flight):
    b = bytearray(flight)
    b[-1] ^= 1
    return bytes(b)


def _handshake(watched, case):
    """Run `case` against a fresh ServerConnection: ("ok", info) or
    ("failed", alert, peer_alert)."""
    groups = ("secp256r1",) if case == "hrr" else ("x25519", "secp256r1")
    s = ServerConnection(_ctx(watched, groups))
    kw = {
        "wrong_psk": {"key": bytes(32)},
        "unknown_identity": {"ident": b"nobody"},
        "hrr": {"curves": b"X25519:P-256"},
    }.get(case, {})
    c = _client(**kw)
    try:
        if case == "alert_first":  # a fatal alert instead of a ClientHello
            s.feed(b"\x15\x03\x03\x00\x02\x02\x28")  # handshake_failure (40)
        elif case == "client_alert":  # the client refuses our (tampered) flight
            out = s.feed(_flight(c))
            c.bio_write(_tamper_last_record(out))
            with pytest.raises(SSL.Error):
                c.do_handshake()
            s.feed(openssl_peers._drain(c))  # its alert, encrypted
        elif case == "garbage":
            s.feed(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        else:
            out = s.feed(_flight(c))
            c.bio_write(out)
            fin = _flight(c)
            if case == "hrr":  # the second ClientHello
                out = s.feed(fin)
                c.bio_write(out)
                fin = _flight(c)
            if case == "tampered_finished":
                fin = _tamper_last_record(fin)
            elif case == "second_client_hello":  # where the Finished belongs
                fin = _flight(_client())
            s.feed(fin)
    except TLSError as e:
        return ("failed", e.alert, e.peer_alert)
    assert s.done
    info = s.info()
    assert s.export(EXPORTER_LABEL, KEY_BLOCK_LEN) == c.export_keying_material(
        EXPORTER_LABEL, KEY_BLOCK_LEN
    )
    return ("ok", info["mode"], info["psk_identity"], info["hrr"], info["group"], s.hrr)


EXPECTED = {
    "ok": ("ok", "psk_dhe", IDENT, False, "x25519", False),
    "hrr": ("ok", "psk_dhe", IDENT, True, "secp256r1", True),
    "wrong_psk": ("failed", 51, None),  # decrypt_error, in plaintext
    "unknown_identity": ("failed", 51, None),  # the same: identities cannot be probed
    "tampered_finished": ("failed", 20, None),  # bad_record_mac, encrypted: from the reason
    "second_client_hello": ("failed", 10, None),  # unexpected_message, encrypted
    "alert_first": ("failed", 10, None),  # unexpected_message, in plaintext
    "client_alert": ("failed", None, 20),  # the client's bad_record_mac, encrypted
    "garbage": ("failed", 47, None),  # illegal_parameter, in plaintext
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_lean_context_reports_what_the_message_callback_reported(case):
    lean = _handshake(False, case)
    assert lean == _handshake(True, case)
    assert lean == EXPECTED[case]


def test_identities_of_a_refused_client_hello_do_not_carry_over():
    """Each ClientHello's identities start afresh (the callback did it per
    ClientHello received): a handshake after an HRR reports the identity of
    the second ClientHello, and a connection that saw no ServerHello yet
    keeps clearing them."""
    s = ServerConnection(_ctx(False, ("secp256r1",)))
    c = _client(curves=b"X25519:P-256")
    s.feed(_flight(c)[:20])  # a partial ClientHello: no PSK lookup yet
    assert s._watch.psk_calls == []
    assert s.hrr is False


def test_server_hello_and_alert_readers_need_whole_records():
    """The output readers look at complete plaintext records only."""
    w = tls_hooks.Watch()
    head = b"\x16\x03\x03\x00\x26\x02\x00\x00\x22\x03\x03"  # up to the random
    assert tls_hooks.server_hello_in(w, head + tls_hooks._HRR_RANDOM[:31]) is None
    assert not w.hrr
    assert tls_hooks.server_hello_in(w, head + tls_hooks._HRR_RANDOM) == "hrr" and w.hrr
    assert tls_hooks.server_hello_in(w, b"\x17" + head[1:] + bytes(40)) is None  # not plaintext
    assert tls_hooks.server_hello_in(w, head[:5] + b"\x08" + head[6:] + bytes(40)) is None
    assert tls_hooks.alert_in(b"\x15\x03\x03\x00\x02\x02") is None  # cut short
    assert tls_hooks.alert_in(b"\x16\x03\x03\x00\x02\x01\x02") is None  # 2 bytes, no alert
    assert tls_hooks.alert_in(b"\x15\x03\x03\x00\x03\x02\x32\x00") is None  # 3: no alert
    assert tls_hooks.alert_in(b"\x15\x03\x03\x00\x02\x02\x32") == 50
    two = b"\x16\x03\x03\x00\x01\x00" + b"\x15\x03\x03\x00\x02\x02\x33"
    assert tls_hooks.alert_in(two) == 51
    assert tls_hooks.alerts_from_reasons(["tlsv1 alert unknown ca"], {48: "unknown_ca"}) == (
        None,
        48,
    )
    assert tls_hooks.alerts_from_reasons(["tls alert bad record mac"], {20: "bad_record_mac"}) == (
        None,
        20,
    )
    assert tls_hooks.alerts_from_reasons(["digest check failed"], {}) == (51, None)
    assert tls_hooks.alerts_from_reasons(["something new"], {}) == (None, None)


def test_no_ticket_reaches_the_client_and_tickets_are_stateful():
    """tickets=0: OP_NO_TICKET is set (OpenSSL's cheaper stateful tickets, for
    a cache that is off) and feed() passes none on."""
    ctx = _ctx(False)
    assert ctx.set_options(0) & SSL.OP_NO_TICKET  # returns the options set
    s = ServerConnection(ctx)
    c = _client()
    c.bio_write(s.feed(_flight(c)))
    assert s.feed(_flight(c)) == b"" and s.done


def _bad_finished(watched):
    """The firmware client (atls.tls) with a wrong Finished in a record that
    decrypts (see the test): OpenSSL's "digest check failed", answered with
    an encrypted decrypt_error (RFC 8446 §4.4.4)."""
    from atls.protocol import TLS_AES_128_CCM_8_SHA256
    from atls.tls.client import ClientConfig, TLSClient

    c = TLSClient(ClientConfig(suites=(TLS_AES_128_CCM_8_SHA256,), psk=PSK, psk_identity=IDENT))
    c.start(0)
    s = ServerConnection(_ctx(watched))
    c.receive(s.feed(c.data_to_send()), 0)
    with pytest.raises(TLSError) as e:
        s.feed(c.data_to_send())
    assert "digest check failed" in e.value.reason
    return e.value.alert, e.value.peer_alert


def test_a_wrong_finished_is_decrypt_error_on_both_contexts(monkeypatch):
    from atls.tls import handshake

    real = handshake.m.push_handshake

    def wrong_finished(mtype, body):
        if mtype == 20:  # Finished: the client's verify_data, one bit off
            body = bytes([body[0] ^ 1]) + bytes(body[1:])
        return real(mtype, body)

    monkeypatch.setattr(handshake.m, "push_handshake", wrong_finished)
    assert _bad_finished(False) == _bad_finished(True) == (51, None)


def test_the_raw_baseline_makes_the_same_kind_of_tickets():
    """scale.single_worker_vs_raw_openssl compares like with like: the raw
    pyOpenSSL server (host_tools.bench.openssl_peers) sets OP_NO_TICKET too."""
    assert openssl_peers.server_context(SUITE).set_options(0) & SSL.OP_NO_TICKET
