"""Failures are clean: every way a server flight can be wrong ends in the
right TLS alert (RFC 8446 §6.2) as an AlertError, never another exception,
never CONNECTED.

A real OpenSSL server (memory BIOs) answers a deterministic client; the tests
then replay that flight with one thing wrong.  Record-level damage is done on
the wire bytes; message-level damage (a bad signature, a wrong Finished) is
done by decrypting the server's records with the handshake keys the client
derived and sealing them again, as a man in the middle with those keys could.
The man in the middle derives the handshake keys itself, from the
deterministic client's ephemeral key (its seeded rng), the PSK and the
ServerHello, as RFC 8446 §7.1 says: no private client state is read.
"""

import hashlib
import hmac
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from atls.errors import AlertError
from atls.protocol import TLS_AES_128_CCM_SHA256, X25519, suite_tag_len
from atls.tls.client import CLOSED, CONNECTED, ClientConfig, TLSClient
from atls.tls.messages import server_hello
from atls.tls.record import RecordProtection
from atls.tls.schedule import KeySchedule
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
ALLOWED = {10, 20, 22, 40, 42, 43, 45, 46, 47, 48, 50, 51, 70, 109, 110}


class SeededRng:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def __call__(self, n):
        return bytes(self.r.getrandbits(8) for _ in range(n))


def records(data):
    out, pos = [], 0
    while pos + 5 <= len(data):
        n = int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append(data[pos : pos + 5 + n])
        pos += 5 + n
    return out


@pytest.fixture(scope="module")
def certs():
    ca = pki.make_ca("Fail CA")
    return ca, pki.make_cert("service.local", issuer=ca)


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


def capture(mode, certs, seed=7):
    """(client factory, server flight bytes) for a deterministic client."""
    ca, leaf = certs
    if mode == "psk":
        cfg = dict(psk=PSK, psk_identity=b"dev")
        ctx = ServerConfig(psks={b"dev": PSK}).build()
    else:
        cfg = dict(ca_certs=[_der(ca.cert)], server_name="service.local")
        ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build()

    def make():
        c = TLSClient(ClientConfig(suites=(TLS_AES_128_CCM_SHA256,), **cfg), rng=SeededRng(seed))
        c.start()
        return c

    make.psk, make.seed = cfg.get("psk"), seed

    client = make()
    flight = ServerConnection(ctx).feed(client.data_to_send())
    client.receive(flight)
    assert client.state == CONNECTED  # the untouched flight is good
    return make, flight


def expect_alert(make, data, codes):
    c = make()
    c.data_to_send()
    with pytest.raises(AlertError) as ei:
        c.receive(data)
    assert ei.value.description in codes, (ei.value.description, ei.value.message)
    assert c.state == CLOSED
    return ei.value


def expected_alerts(flight):
    """For each byte of a server flight, the alerts a flipped bit there may
    cause: exact wherever the position decides it, the broader ALLOWED only
    inside the ServerHello's own fields and the record length fields."""
    out = [ALLOWED] * len(flight)
    pos = 0
    for r in records(flight):
        out[pos] = {10}  # §5.1 content type: unexpected_message
        out[pos + 1] = {50}  # legacy_record_version major byte: decode_error
        if r[0] == 23:
            out[pos + 2] = {20}  # part of the AEAD's additional data (§5.2)
            for i in range(pos + 5, pos + len(r)):
                out[i] = {20}  # ciphertext or tag: bad_record_mac (§5.2)
        else:
            # ServerHello.random (§4.1.3): another handshake secret, so the
            # first protected record no longer opens: bad_record_mac
            for i in range(pos + 5 + 4 + 2, pos + 5 + 4 + 2 + 32):
                out[i] = {20}
        pos += len(r)
    return out


def ignored_and_length_bytes(flight):
    """Positions where a flipped bit may raise nothing: the low byte of a
    plaintext record's legacy_record_version (§5.1: "MUST be ignored for all
    purposes"; the high byte must be 3, else decode_error) and the record
    length fields (a longer record is buffered until its bytes arrive)."""
    ignored, lengths, pos = set(), set(), 0
    for r in records(flight):
        if r[0] != 23:  # a protected record's header is its AAD (§5.2)
            ignored.add(pos + 2)
        lengths.update((pos + 3, pos + 4))
        pos += len(r)
    return ignored, lengths


@pytest.mark.parametrize("mode", ["psk", "cert"])
def test_every_flipped_byte_in_the_server_flight_is_an_alert(certs, mode):
    make, flight = capture(mode, certs)
    expect = expected_alerts(flight)
    rng = random.Random(1)
    positions = range(len(flight)) if mode == "psk" else sorted(rng.sample(range(len(flight)), 250))
    ignored, lengths = ignored_and_length_bytes(flight)
    for i in positions:
        bad = bytearray(flight)
        bad[i] ^= 1 << rng.randrange(8)
        c = make()
        c.data_to_send()
        try:
            c.receive(bytes(bad))
        except AlertError as e:
            assert i not in ignored, (i, e.description, e.message)
            assert e.description in expect[i], (i, e.description, e.message)
            assert c.state == CLOSED
            continue
        # acceptance property: a flipped flight that raised nothing is the
        # genuine flight up to a field §5.1 says to ignore, or a record whose
        # length grew so the client is still waiting for its bytes
        if c.state == CONNECTED:
            assert i in ignored, ("a modified flight was accepted", i)
        else:
            assert i in lengths, ("a modified flight neither failed nor waits", i, c.state)


def test_truncated_flight_never_connects_and_waits(certs):
    make, flight = capture("psk", certs)
    for cut in range(0, len(flight)):
        c = make()
        c.data_to_send()
        try:
            c.receive(flight[:cut])
        except AlertError as e:  # cut inside a record is fine; a cut that
            raise AssertionError("truncation raised %r at %d" % (e, cut))
        assert c.state != CONNECTED


@pytest.mark.parametrize("cut", [1, 10, 40, 80])
def test_truncated_server_hello_with_consistent_lengths_is_decode_error(certs, cut):
    """A ServerHello cut short, with record and handshake lengths shortened to
    match (a cut with the old lengths just waits for more bytes, §5.1)."""
    make, flight = capture("psk", certs)
    sh = records(flight)[0]
    msg = bytearray(sh[5:-cut])
    msg[1:4] = (len(msg) - 4).to_bytes(3, "big")
    expect_alert(make, sh[:3] + len(msg).to_bytes(2, "big") + bytes(msg), {50})


def test_record_length_over_limit_is_record_overflow(certs):
    make, _ = capture("psk", certs)
    expect_alert(make, b"\x16\x03\x03\x41\x01" + bytes(10), {22})
    c = make()  # exactly 2^14 + 256 (§5.2): not an overflow, the client waits for it
    c.data_to_send()
    c.receive(b"\x16\x03\x03\x41\x00" + bytes(10))
    assert c.state != CLOSED


def test_handshake_length_over_maximum_is_decode_error(certs):
    make, _ = capture("psk", certs)
    msg = b"\x02\xff\xff\xff" + bytes(20)
    expect_alert(make, b"\x16\x03\x03" + len(msg).to_bytes(2, "big") + msg, {50})


def test_unexpected_message_in_wait_sh(certs):
    make, _ = capture("psk", certs)
    fin = b"\x14\x00\x00\x20" + bytes(32)
    err = expect_alert(make, b"\x16\x03\x03" + len(fin).to_bytes(2, "big") + fin, {10})
    assert "state WAIT_SH" in err.message


def test_alert_from_server_is_reported(certs):
    make, _ = capture("psk", certs)
    err = expect_alert(make, b"\x15\x03\x03\x00\x02\x02\x28", {40})
    assert getattr(err, "from_peer", False)


def test_application_data_before_keys_is_unexpected(certs):
    make, _ = capture("psk", certs)
    expect_alert(make, b"\x17\x03\x03\x00\x05hello", {10})


def server_handshake_secret(make, client_hello, server_hello_msg):
    """server_handshake_traffic_secret (RFC 8446 §7.1) of the deterministic
    client `make` builds: its x25519 key is the first 32 bytes of its rng."""
    suite, _, group, peer, _, _ = server_hello(server_hello_msg[4:])
    assert group == X25519
    priv = X25519PrivateKey.from_private_bytes(SeededRng(make.seed)(32))
    shared = priv.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))
    th = hashlib.sha256(client_hello + server_hello_msg).digest()
    _, s_hs = KeySchedule(make.psk).handshake_traffic(shared, th)
    return suite, s_hs


class Mitm:
    """Decrypts the server's protected records with the handshake keys it
    derives as the client does, and re-seals edited messages."""

    def __init__(self, make, flight):
        recs = records(flight)
        self.sh = recs[0]
        client_hello = make().data_to_send()[5:]
        suite, secret = server_handshake_secret(make, client_hello, self.sh[5:])
        opener = RecordProtection(suite, secret)
        plain = bytearray()
        for r in recs[1:]:
            if r[0] == 23:
                _, pt = opener.open(r[:5], r[5:])
                plain += pt
        self.messages = []
        pos = 0
        while pos < len(plain):
            n = int.from_bytes(plain[pos + 1 : pos + 4], "big")
            self.messages.append(bytes(plain[pos : pos + 4 + n]))
            pos += 4 + n
        self.suite, self.secret, self.make = suite, secret, make

    def types(self):
        return [m[0] for m in self.messages]

    def flight(self, messages):
        sealer = RecordProtection(self.suite, self.secret)
        return self.sh + sealer.seal(22, b"".join(messages), suite_tag_len(self.suite))

    def send(self, make, messages, codes):
        return expect_alert(make, self.flight(messages), codes)

    def refinish(self, messages):
        """`messages` with the last (Finished) replaced by a valid one over the
        forged transcript (RFC 8446 §4.4.4): the server handshake secret is all
        it takes, so a man in the middle can always do it, and only the checks
        before Finished stand between the forged flight and CONNECTED."""
        assert messages[-1][0] == 20
        client_hello = self.make().data_to_send()[5:]
        th = hashlib.sha256(client_hello + self.sh[5:] + b"".join(messages[:-1])).digest()
        verify = hmac.new(_expand_label(self.secret, b"finished", 32), th, "sha256").digest()
        return messages[:-1] + [b"\x14\x00\x00\x20" + verify]


def _expand_label(secret, label, length):
    """HKDF-Expand-Label (RFC 8446 §7.1) written out here with the standard
    library, independent of the firmware's hkdf module; length <= 32."""
    info = length.to_bytes(2, "big") + bytes([6 + len(label)]) + b"tls13 " + label + b"\x00"
    return hmac.new(secret, info + b"\x01", "sha256").digest()[:length]


def _flip_last(msg):
    return msg[:-1] + bytes([msg[-1] ^ 1])


def test_bad_certificate_verify_signature_is_decrypt_error(certs):
    """§4.4.3: the real server's (public) chain, a bogus CertificateVerify and a
    Finished that is valid over the forged transcript: only the CertificateVerify
    check can refuse it, with decrypt_error."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    assert m.types() == [8, 11, 15, 20]
    msgs = list(m.messages)
    cv = bytearray(msgs[2])
    cv[-5] ^= 0x01  # inside the ECDSA signature's s value
    msgs[2] = bytes(cv)
    m.send(make, m.refinish(msgs), {51})


def test_refinished_flight_with_its_own_cv_connects(certs):
    """The re-computed Finished is right: with the genuine CertificateVerify
    the refinished flight connects (so the failures using it are real)."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    assert m.refinish(list(m.messages)) == m.messages
    c = make()
    c.data_to_send()
    c.receive(m.flight(m.refinish(list(m.messages))))
    assert c.state == CONNECTED


def test_handshake_messages_split_across_records_connect(certs):
    """§5.1: handshake messages may be fragmented across records (and a
    record may end inside a message header): every split of the protected
    part of the flight into two records still connects."""
    make, flight = capture("psk", certs)
    m = Mitm(make, flight)
    plain = b"".join(m.messages)
    tag = suite_tag_len(m.suite)
    for cut in (1, 3, 4, 5, len(m.messages[0]) + 2, len(plain) - 1):
        sealer = RecordProtection(m.suite, m.secret)
        data = m.sh + sealer.seal(22, plain[:cut], tag) + sealer.seal(22, plain[cut:], tag)
        c = make()
        c.data_to_send()
        c.receive(data)
        assert c.state == CONNECTED, cut


def application_secrets(make, flight):
    """(suite, client, server) application traffic secrets (§7.1) of the
    deterministic client's PSK handshake, as the man in the middle derives
    them from the seeded client key and the server's flight."""
    m = Mitm(make, flight)
    client_hello = make().data_to_send()[5:]
    sh = m.sh[5:]
    _, _, _, peer, _, _ = server_hello(sh[4:])
    priv = X25519PrivateKey.from_private_bytes(SeededRng(make.seed)(32))
    shared = priv.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))
    ks = KeySchedule(make.psk)
    ks.handshake_traffic(shared, hashlib.sha256(client_hello + sh).digest())
    th = hashlib.sha256(client_hello + sh + b"".join(m.messages)).digest()
    c_ap, s_ap, _ = ks.application_traffic(th)
    return m.suite, c_ap, s_ap


def test_key_update_rfc8446_s4_6_3(certs):
    """A KeyUpdate from the server moves the client's read keys on; with
    update_requested (1) the client answers with its own KeyUpdate (0) under
    its current keys, then moves its write keys on; 2 and above are
    illegal_parameter."""
    make, flight = capture("psk", certs)
    suite, c_ap, s_ap = application_secrets(make, flight)
    tag = suite_tag_len(suite)
    for requested, alert in ((0, None), (1, None), (2, 47), (255, 47)):
        c = make()
        c.data_to_send()
        c.receive(flight)
        c.data_to_send()  # the client's Finished
        ku = RecordProtection(suite, s_ap).seal(22, b"\x18\x00\x00\x01" + bytes((requested,)), tag)
        if alert is not None:
            with pytest.raises(AlertError) as ei:
                c.receive(ku)
            assert ei.value.description == alert
            continue
        c.receive(ku)
        assert c.state == CONNECTED
        out = c.data_to_send()
        if requested:
            assert RecordProtection(suite, c_ap).open(out[:5], out[5:]) == (
                22,
                b"\x18\x00\x00\x01\x00",
            )
        else:
            assert out == b""
        # the next server record is under the next read secret only
        s_next = _expand_label(s_ap, b"traffic upd", 32)
        c.receive(RecordProtection(suite, s_next).seal(22, b"\x18\x00\x00\x01\x00", tag))
        assert c.state == CONNECTED


def test_bad_server_finished_is_decrypt_error(certs):
    make, flight = capture("psk", certs)
    m = Mitm(make, flight)
    assert m.types() == [8, 20]
    m.send(make, [m.messages[0], _flip_last(m.messages[1])], {51})


def test_server_finished_of_another_length_is_decrypt_error(certs):
    """§4.4.4: verify_data is Hash.length bytes; a shorter or longer one
    (here its prefix, and it with a byte more) never verifies."""
    make, flight = capture("psk", certs)
    m = Mitm(make, flight)
    fin = m.messages[1]
    for body in (fin[4:-1], fin[4:] + b"\x00"):
        m.send(make, [m.messages[0], b"\x14" + len(body).to_bytes(3, "big") + body], {51})


def test_reencrypted_untouched_flight_still_connects(certs):
    """The MITM helper itself is faithful (so the failures above are real)."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    c = make()
    c.data_to_send()
    c.receive(m.flight(m.messages))
    assert c.state == CONNECTED


def test_tampered_certificate_is_bad_certificate(certs):
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    msgs = list(m.messages)
    msgs[1] = _flip_last(msgs[1][:-2]) + msgs[1][-2:]  # last byte of the cert's signature
    # a valid Finished over the forged transcript: only the anchor's signature
    # over the leaf (RFC 5280 §6.1.3 (a)(1)) can refuse it, with bad_certificate
    m.send(make, m.refinish(msgs), {42})


def test_unknown_ca_is_unknown_ca(certs):
    other = pki.make_ca("Other CA")
    ca, leaf = certs
    ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build()
    c = TLSClient(ClientConfig(ca_certs=[_der(other.cert)], server_name="service.local"))
    c.start()
    flight = ServerConnection(ctx).feed(c.data_to_send())
    with pytest.raises(AlertError) as ei:
        c.receive(flight)
    assert ei.value.description == 48
    alert = c.data_to_send()
    assert alert and alert[0] == 23  # sent encrypted under the handshake keys


def test_missing_certificate_message_is_unexpected(certs):
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    m.send(make, [m.messages[0], m.messages[2], m.messages[3]], {10})


def test_forbidden_extension_in_encrypted_extensions(certs):
    make, flight = capture("psk", certs)
    m = Mitm(make, flight)
    ee = b"\x00\x06\x00\x2b\x00\x02\x03\x04"  # supported_versions in EE
    m.send(make, [b"\x08\x00\x00\x08" + ee, m.messages[1]], {47})


def _ee(*exts):
    """An EncryptedExtensions message holding (type, data) extensions."""
    body = b"".join(t.to_bytes(2, "big") + len(d).to_bytes(2, "big") + d for t, d in exts)
    body = len(body).to_bytes(2, "big") + body
    return b"\x08" + len(body).to_bytes(3, "big") + body


# RFC 8446 §4.2: "Implementations MUST NOT send extension responses if the
# remote endpoint did not send the corresponding extension requests, with the
# exception of the "cookie" extension in the HelloRetryRequest.  Upon
# receiving such an extension, an endpoint MUST abort the handshake with an
# "unsupported_extension" alert."  EncryptedExtensions carries responses only
# (§4.2: "the server sends its extension responses in the ServerHello,
# EncryptedExtensions, ..."), so an unknown type there answers nothing we
# sent: unsupported_extension (110), no longer skipped.
@pytest.mark.parametrize(
    "ext, name",
    [
        ((42, b""), "early_data"),
        ((16, b"\x00\x03\x02h2"), "application_layer_protocol_negotiation"),
        ((1, b"\x01"), "max_fragment_length"),
        ((0xFEFE, b"ab"), "an unknown extension"),
        ((0, b""), "server_name without SNI sent"),
    ],
)
def test_rfc8446_s4_2_unsolicited_extension_in_encrypted_extensions(certs, ext, name):
    make, flight = capture("psk", certs)  # no server_name: no SNI offered
    m = Mitm(make, flight)
    m.send(make, [_ee(ext), m.messages[1]], {110})


def test_rfc8446_s4_2_offered_extensions_in_encrypted_extensions_pass_ee(certs):
    """supported_groups (offered, CH/EE in the §4.2 table) and an empty
    server_name after our SNI (RFC 6066 §3) pass EE; the edited transcript
    then fails Finished (51), not EE.  A non-empty server_name answer is a
    decode_error (RFC 6066 §3: "SHALL be empty")."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    rest = m.messages[1:]
    m.send(make, [_ee((10, b"\x00\x02\x00\x1d"), (0, b""))] + rest, {51})
    m.send(make, [_ee((0, b"\x00"))] + rest, {50})


def test_rfc8446_s4_2_recognized_extension_not_for_ee_is_illegal_parameter(certs):
    """§4.2: "If an implementation receives an extension which it recognizes
    and which is not specified for the message in which it appears, it MUST
    abort the handshake with an "illegal_parameter" alert": padding (CH
    only), signature_algorithms (CH, CR), key_share (CH, SH, HRR)."""
    make, flight = capture("psk", certs)
    m = Mitm(make, flight)
    for ext in ((21, b"\x00"), (13, b"\x00\x02\x04\x03"), (51, b"\x00\x1d")):
        m.send(make, [_ee(ext), m.messages[1]], {47})


def test_rfc8446_s4_2_duplicate_extension_is_illegal_parameter(certs):
    """§4.2: "There MUST NOT be more than one extension of the same type in a
    given extension block"; refinished, so only that check can refuse it."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    ee = _ee((10, b"\x00\x02\x00\x1d"), (10, b"\x00\x02\x00\x1d"))
    m.send(make, m.refinish([ee] + m.messages[1:]), {47})
    m.send(make, m.refinish([_ee((10, b"\x00\x02\x00\x1d"))] + m.messages[1:]), {51})


def test_rsa_server_certificate_verify_rsa_pss_connects():
    """§4.4.3 with an RSA server key: OpenSSL signs rsa_pss_rsae_sha256."""
    ca = pki.make_ca("Fail RSA CA", key_type="rsa2048")
    capture("cert", (ca, pki.make_cert("service.local", issuer=ca, key_type="rsa2048")))


def test_certificate_verify_scheme_not_fitting_the_key_is_illegal_parameter(certs):
    """§4.4.3: an offered scheme (rsa_pss_rsae_sha256) for an ECDSA
    certificate's key: illegal_parameter, not a signature check."""
    make, flight = capture("cert", certs)
    m = Mitm(make, flight)
    msgs = list(m.messages)
    assert msgs[2][4:6] == b"\x04\x03"  # ecdsa_secp256r1_sha256
    for scheme in (b"\x08\x04", b"\x08\x07"):  # rsa_pss_rsae_sha256, ed25519
        forged = list(msgs)
        forged[2] = msgs[2][:4] + scheme + msgs[2][6:]
        m.send(make, m.refinish(forged), {47})


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_only_alerts(data):
    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"), rng=SeededRng(3))
    c.start()
    try:
        c.receive(data)
    except AlertError as e:
        assert e.description != 80, e.message  # internal_error would be a bug
    assert c.state != CONNECTED
