"""The TLS client replays RFC 8448 traces byte for byte, under CPython and
under the MicroPython unix port.

§3 Simple 1-RTT: with the trace's ClientHello and client x25519 key injected,
the client verifies the server flight (RSA-PSS CertificateVerify, Finished)
and emits the trace's client Finished record; its exporter output is the one
the trace's exporter master secret gives (§7.5), and the ticket's PSK the one
the trace's resumption master secret and ticket nonce give (§4.6.1), both
derived here with the standard library's HMAC.  §4: the resumption PSK from
§3 is the IKM of §4's early secret and gives §4's binder.  §5:
HelloRetryRequest to P-256.
"""

import hashlib
import hmac
import json

import pytest
from rfc8448 import Trace
from tls_replay import (
    EXPORT_CONTEXT,
    EXPORT_LABEL,
    binder_for,
    replay_hello_retry,
    replay_simple_1rtt,
)


def _expand_label(secret, label, context, length):
    """HKDF-Expand-Label (RFC 8446 §7.1, RFC 5869 §2.3) on hashlib/hmac: an
    implementation independent of the firmware's."""
    label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(label)]) + label + bytes([len(context)]) + context
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(secret, t + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + t, i + 1
    return okm[:length]


def _exporter(exp_master, label, context, length):
    """TLS-Exporter (RFC 8446 §7.5)."""
    empty = hashlib.sha256(b"").digest()
    secret = _expand_label(exp_master, label, empty, 32)
    return _expand_label(secret, b"exporter", hashlib.sha256(context).digest(), length)


def _inputs_s3():
    t = Trace(3)
    v = {
        "certificate": t.value("construct a Certificate", "Certificate"),
        "client_private": t.value("{client}  create an ephemeral x25519", "private key"),
        "client_hello": t.value("construct a ClientHello", "ClientHello"),
        "server_hello_record": t.value("{server}  send handshake record", "complete record", 0),
        "server_flight_record": t.value("{server}  send handshake record", "complete record", 1),
        "ticket_record": t.value("{server}  send handshake record", "complete record", 2),
    }
    expected = {
        "client_hello_record": t.value("{client}  send handshake record", "complete record", 0),
        "client_finished_record": t.value("{client}  send handshake record", "complete record", 1),
        "ticket_psk": t.value('generate resumption secret "tls13 resumption"', "expanded"),
    }
    # §7.5: the exporter master secret, checked through exporter output
    exp_master = t.value('derive secret "tls13 exp master"', "expanded")
    expected["exporter"] = _exporter(exp_master, EXPORT_LABEL, EXPORT_CONTEXT, 32)
    return {k: b.hex() for k, b in v.items()}, {k: b.hex() for k, b in expected.items()}


def test_rfc8448_s3_resumption_master_gives_the_ticket_psk():
    """§4.6.1: the ticket PSK the replay checks is HKDF-Expand-Label(resumption
    master, "resumption", ticket_nonce): so a matching ticket PSK checks the
    client's resumption master secret (RFC 8448 §3)."""
    t = Trace(3)
    res_master = t.value('derive secret "tls13 res master"', "expanded")
    nst = t.value("construct a NewSessionTicket", "NewSessionTicket")
    nonce = nst[13 : 13 + nst[12]]  # type, uint24 length, lifetime, age_add, nonce<0..255>
    psk = t.value('generate resumption secret "tls13 resumption"', "expanded")
    assert _expand_label(res_master, b"resumption", nonce, 32) == psk


def _inputs_s5():
    t = Trace(5)
    v = {
        "certificate": t.value("construct a Certificate", "Certificate"),
        "client_private_x25519": t.value("{client}  create an ephemeral x25519", "private key"),
        "client_private_p256": t.value("{client}  create an ephemeral P-256", "private key"),
        "client_hello1": t.value("construct a ClientHello", "ClientHello", 0),
        "client_hello2": t.value("construct a ClientHello", "ClientHello", 1),
        "hrr_record": t.value("{server}  send handshake record", "complete record", 0),
        "server_hello_record": t.value("{server}  send handshake record", "complete record", 1),
        "server_flight_record": t.value("{server}  send handshake record", "complete record", 2),
    }
    expected = {
        "client_hello1_record": t.value("{client}  send handshake record", "complete record", 0),
        "client_hello2_record": t.value("{client}  send handshake record", "complete record", 1),
        "client_finished_record": t.value("{client}  send handshake record", "complete record", 2),
    }
    return {k: b.hex() for k, b in v.items()}, {k: b.hex() for k, b in expected.items()}


def _check_s3(out, expected):
    assert out["state"] == "CONNECTED"
    for k, want in expected.items():
        assert out[k] == want, k


def test_rfc8448_s3_simple_1rtt_cpython():
    v, expected = _inputs_s3()
    _check_s3(replay_simple_1rtt(v), expected)


def test_rfc8448_s4_resumption_psk_and_binder():
    v, _ = _inputs_s3()
    psk = bytes.fromhex(replay_simple_1rtt(v)["ticket_psk"])
    t4 = Trace(4)
    assert psk == t4.value('{client}  extract secret "early"', "IKM")
    got = binder_for(psk, t4.value("calculate PSK binder", "ClientHello prefix"))
    assert got["early"] == t4.value('{client}  extract secret "early"', "secret").hex()
    assert got["binder"] == t4.value("calculate PSK binder", "finished").hex()


def test_rfc8448_s5_hello_retry_request_cpython():
    v, expected = _inputs_s5()
    out = replay_hello_retry(v)
    assert out["state"] == "CONNECTED" and out["hrr"] and out["group"] == 0x17
    for k, want in expected.items():
        assert out[k] == want, k


def _mpy_replay(mpy, func, v, heapsize):
    src = "import json\nfrom tls_replay import %s\nprint(json.dumps(%s(json.loads(%r))))\n" % (
        func,
        func,
        json.dumps(v),
    )
    return json.loads(mpy.check(src, heapsize=heapsize).lines[-1])


def test_rfc8448_s3_simple_1rtt_micropython(mpyc):
    v, expected = _inputs_s3()
    _check_s3(_mpy_replay(mpyc, "replay_simple_1rtt", v, "256K"), expected)


def test_rfc8448_s5_hello_retry_request_micropython(mpyc):
    v, expected = _inputs_s5()
    out = _mpy_replay(mpyc, "replay_hello_retry", v, "256K")
    assert out["state"] == "CONNECTED"
    for k, want in expected.items():
        assert out[k] == want, k


@pytest.mark.parametrize("cut", [1, 5, 50, 200, 400, 600])
def test_rfc8448_s3_server_flight_split_anywhere(cut):
    """Records split at arbitrary points still reassemble (§5.1)."""
    v, expected = _inputs_s3()
    flight = bytes.fromhex(v["server_hello_record"]) + bytes.fromhex(v["server_flight_record"])
    from tls_replay import _AllowRsa1024, _Feed, _spki_pin

    from atls.protocol import TLS_AES_128_GCM_SHA256
    from atls.tls.client import ClientConfig, TLSClient

    cfg = ClientConfig(
        spki_pins=[_spki_pin(bytes.fromhex(v["certificate"]))],
        suites=(TLS_AES_128_GCM_SHA256,),
    )
    c = TLSClient(
        cfg,
        rng=_Feed([bytes.fromhex(v["client_private"])]),
        hello_override=[bytes.fromhex(v["client_hello"])],
    )
    c.start()
    c.data_to_send()
    with _AllowRsa1024():
        c.receive(flight[:cut])
        c.receive(flight[cut:])
    assert c.data_to_send().hex() == expected["client_finished_record"]
