"""The service's identity checks in process (host_tools.service.registry,
.admission): unit tests written for `make mutants` (tests/mutants/), whose
mutants the multi-process service tests are too slow to run against.  Each
names the rule it holds (the module docs, docs/SECURITY.md)."""

import hashlib
import json
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization

from host_tools import pki
from host_tools.service.admission import Budget, FirstFlights, client_hello_ok
from host_tools.service.errors import ConfigError
from host_tools.service.registry import (
    Registry,
    authenticate,
    cert_sha256,
    spki_sha256,
    still_registered,
)


@pytest.fixture(scope="module")
def certs():
    ca = pki.make_ca("Device CA")
    return ca, pki.make_cert("dev-c", issuer=ca, client=True), pki.make_cert("dev-d", issuer=ca)


def write(tmp_path, devices, ca=None, **extra):
    data = {"devices": devices, **extra}
    if ca is not None:
        (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        data["device_ca"] = "ca.pem"
    path = tmp_path / "devices.json"
    path.write_text(json.dumps(data))
    return path


def test_fingerprints_are_sha256_of_der_and_of_spki(certs):
    _, c, _ = certs
    der = c.cert.public_bytes(serialization.Encoding.DER)
    spki = c.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert cert_sha256(c.cert) == hashlib.sha256(der).hexdigest()
    assert spki_sha256(c.cert) == hashlib.sha256(spki).hexdigest()


def test_psk_lengths_16_to_64_and_hex(tmp_path):
    for n in (16, 64):
        r = Registry(write(tmp_path, {"d": {"psk": "ab" * n}}))
        assert r.psks == {b"d": bytes([0xAB]) * n}
    for bad in ("ab" * 15, "ab" * 65, "zz" * 16, 5):
        with pytest.raises(ConfigError):
            Registry(write(tmp_path, {"d": {"psk": bad}}))
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"d": "not an object"}))
    assert Registry(write(tmp_path, {})).psks == {}
    assert Registry(write(tmp_path, None)).psks == {}


def test_digests_are_64_hex_digits_and_unique(tmp_path, certs):
    ca, c, d = certs
    fc, fd = cert_sha256(c.cert), cert_sha256(d.cert)
    r = Registry(write(tmp_path, {"c": {"cert_sha256": fc}, "d": {"spki_sha256": fd}}, ca))
    assert r.certs == {fc: "c"} and r.spkis == {fd: "d"}
    assert r.certs[fc] == "c"
    for bad in (fc[:-2], fc + "00", "x" * 64, 7):
        with pytest.raises(ConfigError):
            Registry(write(tmp_path, {"c": {"cert_sha256": bad}}, ca))
    with pytest.raises(ConfigError):  # one certificate, two devices
        Registry(write(tmp_path, {"c": {"cert_sha256": fc}, "e": {"cert_sha256": fc}}, ca))
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"c": {"spki_sha256": fc}, "e": {"spki_sha256": fc}}, ca))
    # the same device may list both digests
    r = Registry(write(tmp_path, {"c": {"cert_sha256": fc, "spki_sha256": fc}}, ca))
    assert r.certs == {fc: "c"} and r.spkis == {fc: "c"}


def test_device_ca_and_registered_certificates_need_each_other(tmp_path, certs):
    ca, c, _ = certs
    fc = cert_sha256(c.cert)
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"p": {"psk": "00" * 16}}, ca))
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"c": {"cert_sha256": fc}}))
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"c": {"cert_sha256": fc}}, device_ca="missing.pem"))
    (tmp_path / "bad.pem").write_text("not pem")
    with pytest.raises(ConfigError):
        Registry(write(tmp_path, {"c": {"cert_sha256": fc}}, device_ca="bad.pem"))
    r = Registry(write(tmp_path, {"c": {"cert_sha256": fc}}, ca))
    assert [x.subject for x in r.device_ca] == [ca.cert.subject]
    with pytest.raises(ConfigError):
        Registry(tmp_path / "nothing.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ConfigError):
        Registry(tmp_path / "junk.json")


def test_reload_updates_the_same_psk_dict_and_changed_notices(tmp_path):
    path = write(tmp_path, {"a": {"psk": "01" * 16}})
    r = Registry(path)
    live = r.psks
    assert not r.changed()
    path.write_text(json.dumps({"devices": {"b": {"psk": "02" * 16}}}))
    import os

    os.utime(path, ns=(r.mtime + 10**9, r.mtime + 10**9))
    assert r.changed()
    r.reload()
    assert not r.changed()
    assert r.psks is live and live == {b"b": b"\x02" * 16}
    path.unlink()
    assert not r.changed()  # a missing file is not a change to act on


def test_lookup_cert_by_fingerprint_or_spki_never_cn(tmp_path, certs):
    ca, c, d = certs
    other = pki.make_cert("c", issuer=ca, client=True)  # CN "c", not registered
    r = Registry(
        write(
            tmp_path,
            {"c": {"cert_sha256": cert_sha256(c.cert)}, "d": {"spki_sha256": spki_sha256(d.cert)}},
            ca,
        )
    )
    assert r.lookup_cert(c.cert) == "c"
    assert r.lookup_cert(d.cert) == "d"
    assert r.lookup_cert(other.cert) is None


def test_authenticate_psk_cert_and_nothing_else(tmp_path, certs):
    ca, c, d = certs
    r = Registry(
        write(
            tmp_path,
            {"c": {"cert_sha256": cert_sha256(c.cert)}, "p": {"psk": "05" * 16}},
            ca,
        )
    )
    psk = {"psk_identity": b"p", "client_cert": None, "mode": "psk"}
    assert authenticate(psk, r.psks, r) == ("psk", "p", hashlib.sha256(b"\x05" * 16).digest())
    assert authenticate(dict(psk, psk_identity=b"q"), r.psks, r) is None  # unknown identity
    assert authenticate(psk, None, r) is None
    cert = {"psk_identity": None, "client_cert": c.cert, "mode": "cert"}
    assert authenticate(cert, r.psks, r) == (
        "cert",
        "c",
        (cert_sha256(c.cert), spki_sha256(c.cert)),
    )
    assert authenticate(dict(cert, client_cert=d.cert), r.psks, r) is None  # not registered
    assert authenticate(dict(cert, mode="psk"), r.psks, r) is None  # resumed / other mode
    assert authenticate(cert, r.psks, None) is None
    assert authenticate(dict(cert, client_cert=None), r.psks, r) is None  # anonymous


def test_still_registered_notices_revocation_and_rekeying(tmp_path, certs):
    ca, c, d = certs
    fc, sc = cert_sha256(c.cert), spki_sha256(c.cert)
    r = Registry(write(tmp_path, {"c": {"cert_sha256": fc}, "p": {"psk": "05" * 16}}, ca))
    s = SimpleNamespace(auth="psk", identity="p", credential=hashlib.sha256(b"\x05" * 16).digest())
    assert still_registered(s, r.psks, r)
    assert not still_registered(s, {b"p": b"\x06" * 16}, r)  # re-provisioned key
    assert not still_registered(s, {}, r)  # removed
    assert not still_registered(s, None, r)
    s = SimpleNamespace(auth="cert", identity="c", credential=(fc, sc))
    assert still_registered(s, r.psks, r)
    r2 = Registry(write(tmp_path, {"c": {"spki_sha256": sc}}, ca))
    assert still_registered(s, r2.psks, r2)  # registered by SPKI now: still c's
    r3 = Registry(write(tmp_path, {"e": {"cert_sha256": fc}}, ca))
    assert not still_registered(s, r3.psks, r3)  # the certificate is another device's now
    r4 = Registry(write(tmp_path, {"c": {"cert_sha256": cert_sha256(d.cert)}}, ca))
    assert not still_registered(s, r4.psks, r4)


# ---- admission: the ClientHello check and first-flight table -----------------


def ch(body_len=40, rec_split=None):
    body = bytes((1,)) + body_len.to_bytes(3, "big") + bytes((3,)) + bytes(body_len - 1)
    parts = [body] if rec_split is None else [body[:rec_split], body[rec_split:]]
    return b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in parts)


def test_client_hello_ok_framing():
    assert client_hello_ok(ch())
    assert client_hello_ok(ch(rec_split=10))
    assert client_hello_ok(ch(body_len=35))  # 4 + 2 + 32 + 1 = 39 bytes, the least
    assert not client_hello_ok(ch(body_len=34))
    good = ch()
    for i, v in ((0, 23), (1, 2), (5, 2), (9, 4)):  # type, version, msg type, legacy_version
        bad = bytearray(good)
        bad[i] = v
        assert not client_hello_ok(bytes(bad)), i
    assert not client_hello_ok(good + b"\x16")  # trailing partial record
    assert not client_hello_ok(good[:-1])
    assert not client_hello_ok(b"\x16\x03\x01\x00\x00" + good)  # empty record
    bad = bytearray(good)
    bad[8] += 1  # handshake length one more than the body
    assert not client_hello_ok(bytes(bad))
    big = b"\x16\x03\x01\x40\x01" + bytes(16385)
    assert not client_hello_ok(big)
    assert not client_hello_ok(b"")


def frag(i, data, last=False):
    return bytes((0xA1 if last else 0xA0, 0, 0, 1, i)) + data


def test_first_flights_assemble_in_any_order_and_drop_garbage():
    drops = []
    ff = FirstFlights(4, 2, 1000, 4096, drops.append)
    flight = ch(body_len=200)
    a, b, c = flight[:100], flight[100:150], flight[150:]
    assert ff.add(("1.1.1.1", 1), frag(0, a), 0) is None
    assert ff.add(("1.1.1.1", 1), frag(2, c, last=True), 0) is None
    got = ff.add(("1.1.1.1", 1), frag(1, b), 0)
    assert got == [frag(0, a), frag(1, b), frag(2, c, last=True)]
    assert ff.add(("1.1.1.1", 9), frag(0, a, last=False), 0) is None
    assert ff.add(("1.1.1.1", 9), frag(1, flight[100:], last=True), 0) is not None
    assert drops == []
    assert ff.add(("1.1.1.1", 9), frag(1, b, last=True), 0) is None  # a last fragment first
    assert drops == ["bad_fragment"]
    drops.clear()
    assert ff.add(("1.1.1.1", 2), frag(0, flight, last=True), 0) == [frag(0, flight, last=True)]
    assert drops == [] and len(ff.table) == 0 and ff.per_ip == {}
    assert ff.add(("1.1.1.1", 3), frag(0, b"\x17" * 60, last=True), 0) is None
    assert drops == ["not_client_hello"]
    assert ff.add(("1.1.1.1", 4), frag(254, a), 0) is None
    assert drops[-1] == "bad_fragment"
    ff.add(("1.1.1.1", 5), frag(0, a), 0)
    assert ff.add(("1.1.1.1", 5), frag(2, b, last=True), 0) is None  # 1 missing: waits
    assert drops[-1] == "bad_fragment" and len(ff.table) == 1
    assert ff.add(("1.1.1.1", 5), frag(3, b), 0) is None  # 3 fragments after the end, 1 missing
    assert drops[-1] == "bad_fragment" and len(ff.table) == 0
    ff.add(("1.1.1.1", 6), frag(0, a), 0)
    assert ff.add(("1.1.1.1", 6), frag(1, b"x", last=True), 0) is None  # not a ClientHello
    assert drops[-1] == "not_client_hello"


def test_first_flights_bounds_per_ip_total_size_and_time():
    drops = []
    ff = FirstFlights(3, 2, 1000, 150, drops.append)
    ff.add(("1.1.1.1", 1), frag(0, b"a"), 0)
    ff.add(("1.1.1.1", 2), frag(0, b"a"), 0)
    assert ff.per_ip == {"1.1.1.1": 2}
    ff.add(("1.1.1.1", 3), frag(0, b"a"), 0)  # third from one IP: the oldest goes
    assert drops == ["first_flight_evicted"] and ("1.1.1.1", 1) not in ff.table
    assert ff.per_ip == {"1.1.1.1": 2}
    ff.add(("2.2.2.2", 1), frag(0, b"a"), 0)
    ff.add(("3.3.3.3", 1), frag(0, b"a"), 0)  # table of 3 full: the oldest goes
    assert len(ff.table) == 3 and drops.count("first_flight_evicted") == 2
    ff.add(("2.2.2.2", 1), frag(1, b"x" * 200), 1)  # over max_flight
    assert drops[-1] == "too_big" and ("2.2.2.2", 1) not in ff.table
    assert "2.2.2.2" not in ff.per_ip
    ff.expire(999)
    assert len(ff.table) == 2
    ff.expire(1000)  # timeout_ms after creation: gone
    assert len(ff.table) == 0 and ff.per_ip == {}
    assert drops.count("first_flight_timeout") == 2


def test_budget_three_times_what_came_in_hs_end_first_no_hs_ack():
    sent = []
    b = Budget(3)
    b.received(100)
    d1, end, ack = b"\xa0" + bytes(149), b"\xa1" + bytes(149), b"\xa2" + bytes(10)
    b.send([d1, end, ack], sent.append)
    assert sent == [end, d1]  # 300 bytes: exactly 3x
    assert b.bytes_out == 300 and b.ratio == 3.0
    b.send([b"\xa0" + bytes(1)], sent.append)
    assert len(sent) == 2 and len(b.held) == 1  # over budget: held
    b.received(1)
    b.send([], sent.append)
    assert len(sent) == 3 and b.bytes_out == 302  # 303 allowed now
    b.validated = True
    b.send([ack], sent.append)
    assert sent[-1] == ack and b.held == type(b.held)()
    assert Budget(3).ratio == 0.0


def test_budget_holds_at_most_64():
    b = Budget(3)
    b.send([b"\xa0" + bytes([i]) for i in range(100)], lambda d: None)
    assert len(b.held) == 64 and b.held[0] == b"\xa0" + bytes([36])


def test_first_flight_of_exactly_max_flight_bytes_is_kept():
    flight = ch(body_len=200)
    a, b = flight[:100], flight[100:]
    for limit, ok in ((len(flight), True), (len(flight) - 1, False)):
        drops = []
        ff = FirstFlights(4, 2, 1000, limit, drops.append)
        ff.add(("1.1.1.1", 1), frag(0, a), 0)
        got = ff.add(("1.1.1.1", 1), frag(1, b, last=True), 0)
        assert (got is not None) == ok and drops == ([] if ok else ["too_big"])


def test_the_selected_psk_identity_is_reported_when_it_is_not_the_first():
    """RFC 8446 §4.2.11: the client offers a ticket (not this service's: its
    ticket keys are new) and then its external PSK; the server selects
    identity 1 and info() names the PSK identity of that offer."""
    from atls.tls.client import CONNECTED, ClientConfig, TLSClient
    from host_tools.service.tls_engine import ServerConfig, ServerConnection

    psk = bytes(range(32))

    def handshake(cfg, tickets=2):
        c = TLSClient(cfg)
        c.start(0)  # a clock: tickets are offered only with one (their age)
        s = ServerConnection(ServerConfig(psks={b"dev": psk}, tickets=tickets).build())
        c.receive(s.feed(c.data_to_send()), 0)
        c.receive(s.feed(c.data_to_send()), 0)
        assert c.state == CONNECTED
        return c, s

    c, _ = handshake(ClientConfig(psk=psk, psk_identity=b"dev"))
    assert c.tickets
    c2, s2 = handshake(ClientConfig(psk=psk, psk_identity=b"dev", ticket=c.tickets[-1]))
    info = s2.info()
    assert info["psk_identity"] == b"dev" and info["mode"] == "psk_dhe"


def test_client_hello_ok_refuses_a_record_longer_than_the_datagram():
    good = ch()
    body = good[5:]
    assert client_hello_ok(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
    # the record says 10 bytes more than there are; the message inside is whole
    assert not client_hello_ok(b"\x16\x03\x01" + (len(body) + 10).to_bytes(2, "big") + body)


def test_an_exception_in_the_psk_callback_is_reported_by_type():
    from atls.tls.client import ClientConfig, TLSClient
    from host_tools.service.tls_engine import ServerConfig, ServerConnection, TLSError

    class Boom(dict):
        def get(self, key, default=None):
            raise RuntimeError("boom")

    psk = bytes(range(32))
    c = TLSClient(ClientConfig(psk=psk, psk_identity=b"dev"))
    c.start()
    s = ServerConnection(ServerConfig(psks=Boom({b"dev": psk})).build())
    with pytest.raises(TLSError) as ei:
        s.feed(c.data_to_send())
    assert "[callback: RuntimeError]" in ei.value.reason


def test_first_flights_expire_timeout_ms_after_their_own_start():
    drops = []
    ff = FirstFlights(4, 4, 1000, 4096, drops.append)
    ff.add(("1.1.1.1", 1), frag(0, b"a"), 500)
    ff.expire(1499)
    assert len(ff.table) == 1
    ff.expire(1500)
    assert len(ff.table) == 0 and drops == ["first_flight_timeout"]
