"""The channel keys come from the exporter label the spec names, as an
independent TLS stack computes it, not from a label the device and the
service merely agree on.

ATLS channel keys are TLS-Exporter("application-layer-tls", "", 56)
(RFC 8446 §7.5; docs/PROTOCOL.md §3).  The label is written out below on
purpose, not imported from atls.protocol: if the device and the service both
changed EXPORTER_LABEL they would still agree with each other, and every other
end-to-end test would pass; these tests would not.

Three computations of the same key block:
  1. OpenSSL (pyOpenSSL `export_keying_material`) on the service's connection;
  2. RFC 8446 §7.1/§7.5 written out here with `cryptography`'s HKDF, from the
     exporter master secret OpenSSL's key log gives (EXPORTER_SECRET);
  3. for the formula in 2 itself: an OpenSSL client against an OpenSSL server
     (both pyOpenSSL), where OpenSSL computes both ends.
The device (the firmware's TLSClient + Link, `channel.key_block`) and the
service (host_tools.service.core.Service driven in-process, its channel
carrying a message each way) must equal 1 and 2."""

import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from OpenSSL import SSL

from atls.channel import key_block
from atls.link import Link, LinkConfig
from atls.protocol import SUITES
from atls.tls.client import ClientConfig, TLSClient
from host_tools import pki
from host_tools.service.core import Service
from host_tools.service.registry import Registry
from host_tools.service.tls_engine import ServerConfig

LABEL = b"application-layer-tls"  # draft-friel-tls-atls; docs/PROTOCOL.md §3
LENGTH = 56  # client_write_key 16 | server_write_key 16 | client_iv 12 | server_iv 12
PSK = bytes(range(32))


def expand_label(secret, label, context, length):
    """HKDF-Expand-Label (RFC 8446 §7.1) on `cryptography`'s HKDF-Expand."""
    info = (
        struct.pack(">H", length)
        + bytes([6 + len(label)])
        + b"tls13 "
        + label
        + bytes([len(context)])
        + context
    )
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def tls_exporter(exporter_master_secret, label, context, length):
    """TLS-Exporter (RFC 8446 §7.5) for SHA-256 suites."""
    empty = hashlib.sha256(b"").digest()
    secret = expand_label(exporter_master_secret, label, empty, 32)  # Derive-Secret(., label, "")
    return expand_label(secret, b"exporter", hashlib.sha256(context).digest(), length)


class KeyLog:
    """OpenSSL's key log lines (NSS format), by label."""

    def __init__(self, ctx):
        self.lines = []
        ctx.set_keylog_callback(lambda conn, line: self.lines.append(line.decode()))

    def secret(self, name):
        found = [bytes.fromhex(x.split()[2]) for x in self.lines if x.split()[0] == name]
        assert len(found) == 1, self.lines
        return found[0]


# ---- 3: the formula against OpenSSL on both ends -----------------------------------------


def _pump(a, b):
    """Run an OpenSSL client `a` and server `b` over memory BIOs to the end of
    the handshake."""
    for _ in range(20):
        for c in (a, b):
            try:
                c.do_handshake()
            except SSL.WantReadError:
                pass
        for src, dst in ((a, b), (b, a)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
        if a.get_cipher_name() and b.get_cipher_name():
            try:
                a.do_handshake()
                b.do_handshake()
                return
            except SSL.WantReadError:
                pass
    raise AssertionError("OpenSSL handshake did not finish")


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256"])
def test_formula_equals_openssl_on_both_ends(suite):
    ca = pki.make_ca("Exporter CA")
    leaf = pki.make_cert("service.local", issuer=ca)
    sctx = SSL.Context(SSL.TLS_METHOD)
    cctx = SSL.Context(SSL.TLS_METHOD)
    for ctx in (sctx, cctx):
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_tls13_ciphersuites(suite.encode())
    sctx.use_certificate(leaf.cert)
    sctx.use_privatekey(leaf.key)
    log = KeyLog(cctx)
    server, client = SSL.Connection(sctx, None), SSL.Connection(cctx, None)
    server.set_accept_state()
    client.set_connect_state()
    _pump(client, server)
    assert client.get_cipher_name() == suite
    mine = tls_exporter(log.secret("EXPORTER_SECRET"), LABEL, b"", LENGTH)
    assert client.export_keying_material(LABEL, LENGTH) == mine
    assert server.export_keying_material(LABEL, LENGTH) == mine
    assert client.export_keying_material(LABEL + b"x", LENGTH) != mine  # the label matters


# ---- 1 and 2: the device and the service ---------------------------------------------------


class Recorder:
    def __init__(self):
        self.sessions, self.messages = [], []

    def on_connect(self, session):
        self.sessions.append(session)

    def on_message(self, session, payload):
        self.messages.append(bytes(payload))
        session.send(b"echo:" + bytes(payload))

    def on_close(self, session, reason):
        pass


class Wire:
    def __init__(self):
        self.out = []

    def sendto(self, data, addr):
        self.out.append(bytes(data))


def run_session(tls_config, server_config, registry=None):
    """The firmware client + link against the service core, in process:
    handshake, then one message each way.  (device key block, service
    session, key log of the service's OpenSSL context, echo received)."""
    app = Recorder()
    svc = Service(server_config, LinkConfig(mtu=1200), app=app, registry=registry)
    log = KeyLog(svc.ctx)
    wire = Wire()
    svc.connection_made(wire)
    addr = ("192.0.2.7", 5684)
    tls = TLSClient(tls_config)
    link = Link("client", LinkConfig(mtu=1200, rto_ms=200))
    tls.start()
    now = 0
    link.send_flight(tls.data_to_send(), now)
    got, sent = [], False
    for _ in range(200):
        now += 10
        for d in link.datagrams(now):
            svc.datagram_received(d, addr)
        svc.tick()
        out, wire.out = wire.out, []
        for d in out:
            link.receive(d, now)
        for ev in link.events():
            if ev[0] == "flight":
                tls.receive(ev[1])
                flight = tls.data_to_send()
                if flight:
                    link.send_flight(flight, now)
                if tls.connected and link.channel is None:
                    link.start_channel(key_block(tls), tls.suite)
            elif ev[0] == "message":
                got.append(bytes(ev[1]))
        if link.channel is not None and not sent and link.state == "open":
            link.send(b"reading 1", now)
            sent = True
        if got:
            break
    assert app.messages == [b"reading 1"], "the service's channel did not open the device's"
    assert got == [b"echo:reading 1"], "the device's channel did not open the service's"
    assert len(app.sessions) == 1
    return key_block(tls), app.sessions[0], log


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_device_and_service_keys_are_the_independent_exporter_psk(suite):
    kb, session, log = run_session(
        ClientConfig(psk=PSK, psk_identity=b"device-1", suites=(SUITES[suite],)),
        ServerConfig(psks={b"device-1": PSK}, suites=(suite,)),
    )
    assert session.identity == "device-1" and session.suite == suite
    openssl = session.tls.export(LABEL, LENGTH)  # 1: OpenSSL, the spec's label
    formula = tls_exporter(log.secret("EXPORTER_SECRET"), LABEL, b"", LENGTH)  # 2
    assert openssl == formula
    assert bytes(kb) == openssl, "the device's key block is not the spec's exporter"
    # the service's channel runs on session.tls.export() (core.Service.established),
    # and carried the message above with the device's keys
    assert session.tls.export() == openssl, "the service's key block is not the spec's exporter"


def test_device_and_service_keys_are_the_independent_exporter_certificate(tmp_path):
    ca = pki.make_ca("Exporter CA")
    leaf = pki.make_cert("service.local", issuer=ca)
    # the service admits only registered devices: a client certificate it knows
    dev_ca = pki.make_ca("Exporter device CA")
    dev = pki.make_cert("device-9", issuer=dev_ca, key_type="p256", client=True, san=[])
    (tmp_path / "device-ca.pem").write_bytes(pki.pem(dev_ca.cert))
    fingerprint = hashlib.sha256(pki.der(dev.cert)).hexdigest()
    (tmp_path / "devices.json").write_text(
        json.dumps(
            {"device_ca": "device-ca.pem", "devices": {"device-9": {"cert_sha256": fingerprint}}}
        )
    )
    registry = Registry(tmp_path / "devices.json")
    scalar = dev.key.private_numbers().private_value.to_bytes(32, "big")
    kb, session, log = run_session(
        ClientConfig(
            ca_certs=[pki.der(ca.cert)],
            server_name="service.local",
            client_certs=[pki.der(dev.cert)],
            client_key=scalar,
        ),
        ServerConfig(cert_chain=[leaf.cert], key=leaf.key, client_ca=registry.device_ca),
        registry,
    )
    formula = tls_exporter(log.secret("EXPORTER_SECRET"), LABEL, b"", LENGTH)
    assert bytes(kb) == session.tls.export(LABEL, LENGTH) == formula
    assert session.tls.export() == formula
