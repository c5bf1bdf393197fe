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


HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def hrr(group, suite=0x1301):
    """A HelloRetryRequest (§4.1.4) by hand: supported_versions and a
    key_share naming `group`."""
    exts = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x02" + group.to_bytes(2, "big")
    body = b"\x03\x03" + HRR_RANDOM + b"\x00" + suite.to_bytes(2, "big") + b"\x00"
    body += len(exts).to_bytes(2, "big") + exts
    msg = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(msg).to_bytes(2, "big") + msg


def test_hello_retry_request_group_must_be_offered_and_new():
    """§4.2.8: the HRR's group must be in supported_groups and must not be
    the one whose key share was sent; either is illegal_parameter."""
    for group, alert in ((0x0017, None), (0x001D, 47), (0x0019, 47)):
        c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))  # x25519 share first
        c.start(0)
        c.data_to_send()
        if alert is None:
            c.receive(hrr(group), 0)
            assert c.data_to_send()[:1] == b"\x16"  # the second ClientHello
            continue
        with pytest.raises(AlertError) as ei:
            c.receive(hrr(group), 0)
        assert ei.value.description == alert, hex(group)


def psk_identities(client_hello_record):
    """(identity, obfuscated_ticket_age) pairs of the ClientHello's
    pre_shared_key extension, always the last one (§4.2.11)."""
    ch = client_hello_record[5:]
    pos = 4 + 2 + 32
    pos += 1 + ch[pos]
    pos += 2 + int.from_bytes(ch[pos : pos + 2], "big")
    pos += 1 + ch[pos]
    end = pos + 2 + int.from_bytes(ch[pos : pos + 2], "big")
    pos += 2
    while pos < end:
        t, n = (
            int.from_bytes(ch[pos : pos + 2], "big"),
            int.from_bytes(ch[pos + 2 : pos + 4], "big"),
        )
        if t == 41:
            ids, out, i = ch[pos + 4 : pos + 4 + n], [], 2
            stop = 2 + int.from_bytes(ids[0:2], "big")
            while i < stop:
                k = int.from_bytes(ids[i : i + 2], "big")
                out.append(
                    (ids[i + 2 : i + 2 + k], int.from_bytes(ids[i + 2 + k : i + 6 + k], "big"))
                )
                i += 6 + k
            return out
        pos += 4 + n
    return []


def test_obfuscated_ticket_age_is_age_plus_age_add():
    """§4.2.11.1: obfuscated_ticket_age = (now - time received) + ticket_age_add mod 2^32."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start(1000)
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}, tickets=1).build())
    c.receive(s.feed(c.data_to_send()), 1000)
    c.receive(s.feed(c.data_to_send()), 1000)
    t = c.tickets[-1]
    assert t.received_ms == 1000
    r = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", ticket=t))
    r.start(3500)
    ids = psk_identities(r.data_to_send())
    assert ids[0] == (t.identity, (2500 + t.age_add) & 0xFFFFFFFF)
    assert ids[1] == (b"dev", 0)  # external PSKs: age 0


def test_new_tickets_are_bound_to_this_configuration_not_the_offered_ticket():
    """A ticket from another PSK configuration is not offered; the tickets
    this connection gets are bound to this configuration's anchors."""
    from atls.tls import tickets

    other = bytes(range(100, 132))
    ctx = ServerConfig(psks={b"dev": PSK, b"dev2": other}, tickets=1).build()

    def connect(cfg):
        c = TLSClient(cfg)
        c.start(0)
        s = ServerConnection(ctx)
        c.receive(s.feed(c.data_to_send()), 0)
        c.receive(s.feed(c.data_to_send()), 0)
        assert c.state == CONNECTED
        return c

    t_other = connect(ClientConfig(psk=other, psk_identity=b"dev2")).tickets[-1]
    cfg = ClientConfig(psk=PSK, psk_identity=b"dev", ticket=t_other)
    new = connect(cfg).tickets[-1]
    assert new.anchors == tickets.binding(cfg) != t_other.anchors


def test_p256_key_share_resamples_an_out_of_range_scalar():
    """§4.2.8.2 / SEC 1: a private scalar must be in [1, n-1]; rng output
    outside it is drawn again, not an error."""
    from atls.protocol import SECP256R1
    from atls.tls.keyshare import key_share

    draws = [b"\xff" * 32, bytes(32), bytes(31) + b"\x05"]
    priv, pub = key_share(SECP256R1, lambda n: draws.pop(0))
    assert priv == bytes(31) + b"\x05" and len(pub) == 65 and draws == []


def test_unsupported_suites_are_a_usage_error_and_hrr_starts_false():
    with pytest.raises(UsageError):
        ClientConfig(psk=PSK, psk_identity=b"d", suites=(0x1302,))  # AES-256-GCM: not offered
    with pytest.raises(UsageError):
        ClientConfig(psk=PSK, psk_identity=b"d", suites=(TLS_AES_128_CCM_SHA256, 0x1303))
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    assert c.hrr is False
    c, _ = connected()
    assert c.hrr is False


def test_without_a_client_key_a_certificate_request_gets_an_empty_certificate():
    """§4.4.2: a client with no certificate to offer answers a
    CertificateRequest with an empty Certificate (no CertificateVerify); the
    server that requires one then fails with certificate_required (116)."""
    from cryptography.hazmat.primitives import serialization

    from host_tools import pki
    from host_tools.service.tls_engine import TLSError

    ca = pki.make_ca("Kill CA")
    leaf = pki.make_cert("service.local", issuer=ca)
    dev_ca = pki.make_ca("Kill device CA")
    ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
    c = TLSClient(ClientConfig(ca_certs=[ca_der], server_name="service.local"))
    c.start()
    s = ServerConnection(
        ServerConfig(cert_chain=[leaf.cert], key=leaf.key, client_ca=[dev_ca.cert]).build()
    )
    c.receive(s.feed(c.data_to_send()))
    assert c.state == CONNECTED
    with pytest.raises(TLSError) as ei:
        s.feed(c.data_to_send())
    assert ei.value.alert == 116


def test_hidden_unknown_identities_fail_like_a_wrong_binder_known_ones_connect():
    ctx = ServerConfig(psks={b"dev": PSK}, hide_unknown_psk=True).build()
    for ident, ok in ((b"dev", True), (b"stranger", False)):
        c = TLSClient(ClientConfig(psk=PSK, psk_identity=ident))
        c.start()
        s = ServerConnection(ctx)
        if ok:
            c.receive(s.feed(c.data_to_send()))
            assert c.state == CONNECTED
            continue
        from host_tools.service.tls_engine import TLSError

        with pytest.raises(TLSError) as ei:
            s.feed(c.data_to_send())
        assert ei.value.alert == 51  # decrypt_error: the binder does not verify


def test_record_sequence_numbers_stop_at_the_limit():
    """§5.5: a sequence number must not wrap; the last one before the limit
    still seals, the limit itself is internal_error."""
    from atls.tls.record import RecordProtection

    limit = 0xFFFFFFFF  # the limit atls.tls.record documents (far below 2^64)
    rp = RecordProtection(TLS_AES_128_CCM_SHA256, bytes(32))
    rp.seq = limit - 1
    rp.seal(23, b"x", 16)
    with pytest.raises(AlertError) as ei:
        rp.seal(23, b"x", 16)
    assert ei.value.description == 80


def test_handshake_messages_up_to_max_handshake_bytes():
    """max_handshake bounds each handshake message's body: the largest one
    of a PSK flight (the ServerHello) fits exactly; one byte less is 50."""
    s = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,)))
    c.start()
    flight = s.feed(c.data_to_send())
    sh_len = int.from_bytes(flight[6:9], "big")
    for limit, ok in ((sh_len, True), (sh_len - 1, False)):
        cfg = ClientConfig(
            psk=PSK, psk_identity=b"dev", suites=(TLS_AES_128_CCM_SHA256,), max_handshake=limit
        )
        c = TLSClient(cfg)
        c.start()
        s = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
        data = s.feed(c.data_to_send())
        if ok:
            c.receive(data)
            assert c.state == CONNECTED
        else:
            with pytest.raises(AlertError) as ei:
                c.receive(data)
            assert ei.value.description == 50


def test_change_cipher_spec_is_tolerated_only_as_0x01_before_connected():
    """§5: a change_cipher_spec record of the single byte 0x01 is dropped
    during the handshake; any other value, or one after it, is 10."""
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start()
    c.data_to_send()
    c.receive(b"\x14\x03\x03\x00\x01\x01")
    assert c.state != CLOSED
    with pytest.raises(AlertError) as ei:
        c.receive(b"\x14\x03\x03\x00\x01\x02")
    assert ei.value.description == 10
    c, _ = connected()
    with pytest.raises(AlertError) as ei:
        c.receive(b"\x14\x03\x03\x00\x01\x01")
    assert ei.value.description == 10


def test_ciphertext_up_to_2_14_plus_256_is_opened_one_more_is_record_overflow():
    """§5.2: TLSCiphertext.length MUST NOT exceed 2^14 + 256."""
    from atls.tls.record import RecordProtection

    top = 2**14 + 256
    for n, alert in ((top, 20), (top + 1, 22)):  # 20: the (random) tag does not verify
        rp = RecordProtection(TLS_AES_128_CCM_SHA256, bytes(32))
        header = b"\x17\x03\x03" + n.to_bytes(2, "big")
        with pytest.raises(AlertError) as ei:
            rp.open(header, bytes(n))
        assert ei.value.description == alert, n
