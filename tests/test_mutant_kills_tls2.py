"""More atls.tls.client / atls.tls.handshake behaviour that `make mutants`
(tests/mutants/) found no test pinning down: record framing within one
receive() call (RFC 8446 §5.1, §5.2), content types after the handshake (§5),
the clock given to receive() (§4.6.1), the parser-bug clause, and which
extensions a ClientHello carries (§4.2.3), and the discarding of stale or
forged server flights (issue 14, TLSClient(discards=N)).  Driven by the RFC
8448 §3 trace (its secrets seal the extra records) and by the OpenSSL service
engine."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rfc8448 import Trace
from tls_replay import _AllowRsa1024, _Feed, _spki_pin

from atls import protocol
from atls.errors import AlertError, CryptoError, UsageError
from atls.protocol import TLS_AES_128_CCM_SHA256, TLS_AES_128_GCM_SHA256
from atls.tls.client import CLOSED, CONNECTED, WAIT_SH, ClientConfig, TLSClient
from atls.tls.handshake import offered
from atls.tls.record import RecordProtection
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
CCS = b"\x14\x03\x03\x00\x01\x01"
_SIGNATURE_ALGORITHMS = 13


def _hex(t, step, label, nth=0):
    v = t.value(step, label, nth)
    return bytes.fromhex(v) if isinstance(v, str) else bytes(v)


def s3(**kw):
    """A client replaying RFC 8448 §3 up to its ClientHello, with the trace's
    server flight (ServerHello record, encrypted record) and the server's
    application traffic secret."""
    t = Trace(3)
    cert = _hex(t, "construct a Certificate", "Certificate")
    cfg = ClientConfig(spki_pins=[_spki_pin(cert)], suites=(TLS_AES_128_GCM_SHA256,), **kw)
    c = TLSClient(
        cfg,
        rng=_Feed([_hex(t, "{client}  create an ephemeral x25519", "private key")]),
        hello_override=[_hex(t, "construct a ClientHello", "ClientHello")],
    )
    c.start()
    c.data_to_send()
    sh = _hex(t, "{server}  send handshake record", "complete record", 0)
    enc = _hex(t, "{server}  send handshake record", "complete record", 1)
    secret = _hex(t, 'derive secret "tls13 s ap traffic"', "expanded")
    return c, sh, enc, secret


def s3_connected(**kw):
    c, sh, enc, secret = s3(**kw)
    with _AllowRsa1024():
        c.receive(sh + enc)
    assert c.state == CONNECTED
    return c, RecordProtection(TLS_AES_128_GCM_SHA256, secret)


def _alert(c, data):
    with pytest.raises(AlertError) as ei:
        c.receive(data)
    assert c.state == CLOSED
    return ei.value.description


def test_a_change_cipher_spec_before_the_flight_in_the_same_receive_is_skipped():
    """§5 / D.4: a middlebox-compatibility change_cipher_spec is dropped and
    the records after it in the same receive() are processed at once."""
    c, sh, enc, _ = s3()
    with _AllowRsa1024():
        c.receive(sh + CCS + enc)
    assert c.state == CONNECTED and c.data_to_send()  # the client Finished


def test_the_largest_message_of_a_flight_fits_max_handshake_wherever_it_starts():
    """max_handshake bounds each message's body, not its offset: the RFC 8448
    §3 Certificate (second in its record) fits a limit of exactly its size."""
    t = Trace(3)
    size = len(_hex(t, "construct a Certificate", "Certificate")) - 4
    assert size > 400  # the largest of EE, Certificate, CertificateVerify, Finished
    c, sh, enc, _ = s3(max_handshake=size)
    with _AllowRsa1024():
        c.receive(sh + enc)
    assert c.state == CONNECTED
    c, sh, enc, _ = s3(max_handshake=size - 1)
    with _AllowRsa1024():
        assert _alert(c, sh + enc) == 50


def test_an_empty_record_is_decode_error_50():
    """§5.1/§5.2: zero-length records (other than application data in the
    clear, which TLS 1.3 never has) are not allowed: a lone 5-byte header is
    refused, not buffered."""
    c, _ = s3_connected()
    assert _alert(c, b"\x17\x03\x03\x00\x00") == 50
    c, rp = s3_connected()
    assert _alert(c, rp.seal(23, b"ok", 16) + b"\x17\x03\x03\x00\x00") == 50


def test_a_record_of_2_14_plus_256_is_allowed_after_another_in_the_same_receive():
    """§5.2: the TLSCiphertext length bound is per record, wherever the record
    starts in the bytes received: a maximal record after a small one reaches
    decryption (its zero tag fails: 20), it is not record_overflow (22)."""
    c, rp = s3_connected()
    top = 2**14 + 256
    assert (
        _alert(c, rp.seal(23, b"ok", 16) + b"\x17\x03\x03" + top.to_bytes(2, "big") + bytes(top))
        == 20
    )
    c, rp = s3_connected()
    assert _alert(c, rp.seal(23, b"ok", 16) + b"\x17\x03\x03" + (top + 1).to_bytes(2, "big")) == 22


def test_protected_records_of_other_content_types_after_the_handshake_are_10():
    """§5: a protected change_cipher_spec is unexpected_message, so is an
    unknown inner content type; application data is ignored (ATLS uses the
    exporter only)."""
    c, rp = s3_connected()
    c.receive(rp.seal(23, b"ignored", 16))
    assert c.state == CONNECTED
    assert _alert(c, rp.seal(20, b"\x01", 16)) == 10
    c, rp = s3_connected()
    assert _alert(c, rp.seal(24, b"\x01", 16)) == 10  # heartbeat (RFC 6520)


def test_receive_stamps_tickets_with_the_clock_it_was_given():
    """§4.6.1: a ticket's age is measured from when it arrived: receive()'s
    now_ms, or the last clock given when it gets none."""
    _ticket()


def _ticket():
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start(1000)
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}, tickets=1).build())
    c.receive(s.feed(c.data_to_send()))
    c.receive(s.feed(c.data_to_send()), 4000)
    assert [t.received_ms for t in c.tickets] == [4000]
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start(1000)
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}, tickets=1).build())
    c.receive(s.feed(c.data_to_send()), 2000)
    c.receive(s.feed(c.data_to_send()))
    assert [t.received_ms for t in c.tickets] == [2000]
    return c.tickets[0]


@pytest.mark.parametrize("exc", [CryptoError, ValueError, IndexError, KeyError, TypeError])
def test_an_exception_of_a_parser_bug_is_internal_error_80_and_closes(exc):
    """A bug in a parser must not crash the device (client.receive): the
    exception types such a bug raises become internal_error, sent to the
    peer.  The trace hook runs inside the handshake like a parser does."""

    def hook(old, mtype, new):
        if mtype == 2:  # the ServerHello
            raise exc("a bug")

    c, sh, enc, _ = s3(trace=hook)
    with _AllowRsa1024():
        assert _alert(c, sh + enc) == 80
    assert c.data_to_send()[:5] == b"\x17\x03\x03\x00\x13"  # the alert, under the handshake keys


def test_groups_are_x25519_or_secp256r1_only():
    """§4.2.7: the client offers only groups it implements."""
    ClientConfig(psk=PSK, psk_identity=b"d", groups=(protocol.X25519, protocol.SECP256R1))
    for groups in ((), (protocol.X25519, 0x0018), (0x001D + 1,)):
        with pytest.raises(UsageError):
            ClientConfig(psk=PSK, psk_identity=b"d", groups=groups)


def _hello_extensions(cfg, now_ms):
    c = TLSClient(cfg)
    c.start(now_ms)
    return offered(c.data_to_send()[5:])


def test_signature_algorithms_only_when_a_certificate_may_authenticate():
    """§4.2.3: signature_algorithms is sent in certificate mode and with a
    ticket (a resumption the server may turn down); a PSK-only ClientHello
    leaves it out."""
    ticket = _ticket()
    psk_only = ClientConfig(psk=PSK, psk_identity=b"dev")
    assert _SIGNATURE_ALGORITHMS not in _hello_extensions(psk_only, 2000)
    with_ticket = ClientConfig(ticket=ticket, suites=(TLS_AES_128_CCM_SHA256,))
    exts = _hello_extensions(with_ticket, 2500)
    assert _SIGNATURE_ALGORITHMS in exts and 41 in exts  # and the ticket (pre_shared_key)


def test_an_unusable_ticket_without_another_way_to_authenticate_is_a_usage_error():
    """A ticket past its lifetime is not offered (§4.6.1); with no PSK and no
    certificate mode nothing would authenticate the server: UsageError.  In
    certificate mode the client goes on with a full handshake."""
    ticket = _ticket()
    late = 2000 + ticket.lifetime * 1000
    c = TLSClient(ClientConfig(ticket=ticket, suites=(TLS_AES_128_CCM_SHA256,)))
    with pytest.raises(UsageError):
        c.start(late)
    t = Trace(3)
    pin = _spki_pin(_hex(t, "construct a Certificate", "Certificate"))
    exts = _hello_extensions(ClientConfig(ticket=ticket, spki_pins=[pin]), late)
    assert _SIGNATURE_ALGORITHMS in exts and 41 not in exts


def test_a_selected_identity_beyond_the_offered_psks_is_illegal_parameter_47():
    """§4.2.11: a server's selected_identity must be one the client offered
    (it offered one: index 0); index 1 is illegal_parameter, not a crash."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start()
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
    flight = s.feed(c.data_to_send())
    ext = b"\x00\x29\x00\x02\x00\x00"  # pre_shared_key, selected_identity 0
    assert flight.count(ext) == 1
    assert _alert(c, flight.replace(ext, b"\x00\x29\x00\x02\x00\x01")) == 47


def test_at_most_four_tickets_are_kept_newest_last():
    """§4.6.1 (atls.tls.tickets): the client keeps at most _MAX_TICKETS (4)
    NewSessionTickets, dropping the oldest."""
    c, rp = s3_connected()
    for i in range(5):
        body = (
            (60).to_bytes(4, "big")
            + bytes(4)
            + b"\x01"
            + bytes((i,))
            + b"\x00\x02t"
            + bytes((i,))
            + b"\x00\x00"
        )
        c.receive(rp.seal(22, b"\x04" + len(body).to_bytes(3, "big") + body, 16))
    assert [t.identity for t in c.tickets] == [b"t\x01", b"t\x02", b"t\x03", b"t\x04"]


def test_a_resumption_by_a_ticket_only_configuration_keeps_the_anchors():
    """atls.tls.tickets: a session resumed by a ticket-only configuration
    binds its new tickets to the anchors of the ticket it resumed, so they
    are offered again to the configuration that first authenticated."""
    from atls.tls import tickets

    ctx = ServerConfig(psks={b"dev": PSK}, tickets=1).build()

    def connect(cfg):
        c = TLSClient(cfg)
        c.start(0)
        s = ServerConnection(ctx)
        c.receive(s.feed(c.data_to_send()), 0)
        c.receive(s.feed(c.data_to_send()), 0)
        assert c.state == CONNECTED
        return c

    psk_cfg = ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,))
    first = connect(psk_cfg).tickets[-1]
    resumed = connect(ClientConfig(ticket=first, suites=(TLS_AES_128_CCM_SHA256,)))
    assert resumed.mode == "resumed"
    new = resumed.tickets[-1]
    assert new.anchors == first.anchors == tickets.binding(psk_cfg)
    assert tickets.usable(new, 0, psk_cfg)


def _nst(ticket, lifetime=60):
    body = lifetime.to_bytes(4, "big") + bytes(4) + b"\x01\x00" + len(ticket).to_bytes(2, "big")
    body += ticket + b"\x00\x00"
    return b"\x04" + len(body).to_bytes(3, "big") + body


def test_a_ticket_of_max_ticket_bytes_is_kept_one_more_is_decode_error_50():
    """max_ticket bounds the ticket a NewSessionTicket carries (§4.6.1)."""
    c, rp = s3_connected(max_ticket=8)
    c.receive(rp.seal(22, _nst(b"t" * 8), 16))
    assert [t.identity for t in c.tickets] == [b"t" * 8]
    assert _alert(c, rp.seal(22, _nst(b"t" * 9), 16)) == 50


def test_a_ticket_is_usable_from_age_0_to_just_below_its_lifetime():
    """§4.6.1: a ticket may be offered while its age is below the lifetime;
    age 0 (offered in the millisecond it came) is an age, a negative one
    (the clock went back) is not."""
    from atls.tls import tickets

    c, rp = s3_connected()
    c.receive(rp.seal(22, _nst(b"t", lifetime=2), 16), 5000)
    t, cfg = c.tickets[0], c.config
    assert t.received_ms == 5000
    assert [tickets.usable(t, ms, cfg) for ms in (4999, 5000, 6999, 7000)] == [
        False,
        True,
        True,
        False,
    ]


def _hrr(group=None, cookie=None, suite=0x1301):
    """A HelloRetryRequest (§4.1.4) record by hand: supported_versions, then
    a key_share naming `group` and/or a cookie when given."""
    from test_mutant_kills_tls import HRR_RANDOM

    exts = b"\x00\x2b\x00\x02\x03\x04"
    if group is not None:
        exts += b"\x00\x33\x00\x02" + group.to_bytes(2, "big")
    if cookie is not None:
        exts += (
            b"\x00\x2c"
            + (len(cookie) + 2).to_bytes(2, "big")
            + len(cookie).to_bytes(2, "big")
            + cookie
        )
    body = b"\x03\x03" + HRR_RANDOM + b"\x00" + suite.to_bytes(2, "big") + b"\x00"
    body += len(exts).to_bytes(2, "big") + exts
    msg = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(msg).to_bytes(2, "big") + msg


def _waiting(suites=(protocol.TLS_AES_128_GCM_SHA256,)):
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=suites))
    c.start(0)
    c.data_to_send()
    return c


def test_hello_retry_request_must_change_something_and_name_an_offered_suite():
    """§4.1.4: an HRR that would not change the ClientHello (no key_share,
    no cookie) is illegal_parameter, so is a suite the client did not offer;
    a cookie alone is a change, and ClientHello2 echoes it (§4.2.2)."""
    assert _alert(_waiting(), _hrr()) == 47
    assert _alert(_waiting(), _hrr(group=protocol.SECP256R1, suite=0x1302)) == 47
    c = _waiting()
    c.receive(_hrr(cookie=b"opaque"), 0)
    hello2 = c.data_to_send()
    assert 44 in offered(hello2[5:]) and b"\x00\x06opaque" in hello2


def test_a_second_hello_retry_request_is_unexpected_message_10():
    """§4.1.4: a client that receives a second HelloRetryRequest in the
    same connection aborts with unexpected_message."""
    c = _waiting()
    c.receive(_hrr(group=protocol.SECP256R1), 0)
    c.data_to_send()
    assert _alert(c, _hrr(cookie=b"again")) == 10


def test_a_low_order_x25519_share_from_the_server_is_illegal_parameter_47():
    """RFC 8446 §7.4.2 / RFC 7748 §6.1: an all-zero X25519 shared secret (a
    low-order share) is refused: illegal_parameter, not internal_error."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start()
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
    flight = s.feed(c.data_to_send())
    head = b"\x00\x33\x00\x24\x00\x1d\x00\x20"  # key_share: x25519, 32 bytes
    i = flight.index(head) + len(head)
    assert _alert(c, flight[:i] + bytes(32) + flight[i + 32 :]) == 47


# -- stale and forged flights (issue 14): TLSClient(discards=N) ---------------------------
def _forged_flight(records=True):
    """A first server flight anyone on the path can write (§4.1.3): a
    ServerHello taking our PSK (identity 0) with a fresh x25519 share, then
    (records) a protected record that opens under no key of ours."""
    share = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    exts = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x24\x00\x1d\x00\x20" + share
    exts += b"\x00\x29\x00\x02\x00\x00"
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x13\x04" + b"\x00"  # TLS_AES_128_CCM_SHA256
    body += len(exts).to_bytes(2, "big") + exts
    msg = b"\x02" + len(body).to_bytes(3, "big") + body
    flight = b"\x16\x03\x03" + len(msg).to_bytes(2, "big") + msg
    return flight + (b"\x17\x03\x03\x00\x30" + os.urandom(48) if records else b"")


def _discarding(discards):
    c = TLSClient(
        ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)),
        discards=discards,
    )
    c.start(0)
    return c, c.data_to_send()


def test_a_forged_flight_is_discarded_and_the_real_one_still_connects():
    """Module doc of atls.tls.client: with discards > 0 a flight that fails
    before any record opened is dropped as if never received (back in
    WAIT_SH, nothing sent, `discarded` counts it); discard() does the same
    for a flight that left the client waiting; then the server's real flight
    for the same ClientHello connects.  With discards=0 it is fatal, as before."""
    c, hello = _discarding(2)
    c.receive(_forged_flight(), 0)  # its record fails: bad_record_mac, not raised
    assert (c.state, c.discarded, c.data_to_send()) == (WAIT_SH, 1, b"")
    c.receive(_forged_flight(records=False), 0)  # the client waits for EncryptedExtensions
    assert c.state != WAIT_SH and c.discard() is True
    assert (c.state, c.discarded, c.data_to_send()) == (WAIT_SH, 2, b"")
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
    c.receive(s.feed(hello), 0)
    s.feed(c.data_to_send())
    assert c.state == CONNECTED and s.done
    c, _ = _discarding(0)
    assert _alert(c, _forged_flight()) == 20 and c.discarded == 0


def test_at_most_discards_flights_are_discarded_then_the_failure_is_raised():
    """Each discard costs a key agreement: the flight after `discards` of
    them fails as before (bad_record_mac, 20) and the client is CLOSED, and
    discard() on a closed client does nothing."""
    c, _ = _discarding(2)
    for _ in range(2):
        c.receive(_forged_flight(), 0)
    assert _alert(c, _forged_flight()) == 20
    assert c.discarded == 2 and c.discard() is False and c.state == CLOSED


def test_the_servers_own_alert_is_never_discarded():
    """A plaintext alert from the server (a wrong PSK: decrypt_error) ends
    the attempt at once, with discards to spare."""
    c, _ = _discarding(2)
    assert _alert(c, b"\x15\x03\x03\x00\x02\x02\x33") == 51 and c.discarded == 0


def test_nothing_is_discarded_after_a_hello_retry_request():
    """A HelloRetryRequest is answered, so the flight after it is the
    server's (a stale one would not match ClientHello2's share): discard()
    is refused and a failing flight is raised (an unexpected x25519 share
    in it: illegal_parameter, 47)."""
    c, _ = _discarding(2)
    c.receive(_hrr(group=protocol.SECP256R1, suite=0x1304), 0)
    assert c.data_to_send()[:1] == b"\x16"  # ClientHello2
    assert c.discard() is False and c.state == WAIT_SH
    assert _alert(c, _forged_flight()) == 47 and c.discarded == 0
