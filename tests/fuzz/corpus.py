"""Seed inputs from real traffic (CPython only: the service side is OpenSSL).

tls      server flights the service's OpenSSL engine (host_tools.service.
         tls_engine, memory BIOs) sent to the firmware TLS client: PSK with a
         NewSessionTicket, PSK after a HelloRetryRequest, a certificate chain
session  the service link's datagrams to a DeviceSession during a whole
         session (handshake over the link, messages both ways), with times
link     both roles' datagrams of the scripted conversation (targets.converse)
wire     every datagram above, and ERROR in both forms (reason; RESET || token)
xbee     API frame streams (AP=1 and AP=2) carrying those datagrams, pairing
         packets, AT responses, transmit status and modem status
pairing  every version-2 packet: request (both modes), response, reveal
         (with and without proof), accept, not_paired, reject (with and
         without tag), pending
Every recording is replayed once here to prove it is deterministic.
`save`/`load` write the corpus as JSON (bytes as "hex:..." strings) for the
MicroPython runner.
"""

import json

from atls import pairing, xbee
from atls import wire as link_wire
from atls.link import Link, LinkConfig
from atls.protocol import ERROR, RESET, SUITES, UNKNOWN_SESSION
from atls.tls.client import TLSClient
from fuzz.runner import make_session, tls_config
from fuzz.targets import MESSAGES, SeededRng, record_link
from host_tools import pki
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
IDENTITY = b"dev-fuzz"
SERVICE_MESSAGES = (b"config v2", b"ack 1", b"z" * 40)


def _tls_case(corpus, mode, server_cfg):
    seed = b"fuzz-" + mode.encode()
    c = TLSClient(tls_config(corpus, mode), rng=SeededRng(seed))
    c.start(0)
    server = ServerConnection(server_cfg.build())
    flights = []
    out = c.data_to_send()
    while out:
        reply = server.feed(out)
        if reply:
            flights.append(reply)
            c.receive(reply, 0)
        out = c.data_to_send()
    if not c.connected:
        raise RuntimeError("tls corpus: %s did not connect" % mode)
    replay = TLSClient(tls_config(corpus, mode), rng=SeededRng(seed))
    replay.start(0)
    for f in flights:
        replay.receive(f, 0)
    if not replay.connected:
        raise RuntimeError("tls corpus: %s does not replay" % mode)
    return (mode, seed, flights)


def _session(corpus, mode, groups=("x25519", "secp256r1")):
    """[(now, datagram)] service -> device for one whole session."""
    dev = make_session(corpus, mode)
    srv = Link("server", LinkConfig(mtu=64), session_id=0x2345)
    tls = ServerConnection(ServerConfig(psks={IDENTITY: PSK}, groups=groups).build())
    rec = []
    now = 0
    dev.connect(now)
    sent = False
    for _ in range(200):
        now += 20
        for d in dev.datagrams(now):
            srv.receive(d, now)
        for ev in srv.events():
            if ev[0] == "flight":
                reply = tls.feed(ev[1])
                if reply:
                    srv.send_flight(reply, now)
                if tls.done and srv.channel is None:
                    srv.start_channel(tls.export(), SUITES[tls.info()["suite"]])
                    for m in SERVICE_MESSAGES:
                        srv.send(m, now)
        for d in srv.datagrams(now):
            rec.append((now, d))
            dev.receive(d, now)
        ev = dev.events()
        if not sent and any(e[0] == "up" for e in ev):
            for m in MESSAGES["client"]:
                dev.send(m, now)
            sent = True
        if sent and not dev.pending() and not srv.unacked() and now > 2000:
            break
    if dev.state != "up" or dev.counters["received"] != len(SERVICE_MESSAGES):
        raise RuntimeError("session corpus: the session did not complete")
    # replay: the device must get there again on the recorded datagrams alone
    again = make_session(corpus, mode)
    again.connect(0)
    again.datagrams(0)
    got = []
    for t, d in rec:
        again.receive(d, t)
        again.datagrams(t)
        got += [e[1] for e in again.events() if e[0] == "message"]
    if got != list(SERVICE_MESSAGES):
        raise RuntimeError("session corpus: the recording does not replay")
    return rec


def _xbee(datagrams):
    addr = bytes.fromhex("0013a20041a7b2c1")
    frames = [
        xbee.modem_status(xbee.JOINED),
        xbee.at_response(1, "AI", 0, b"\x00"),
        xbee.at_response(2, "SH", 0, addr[:4]),
        xbee.tx_status(3, 0x7E7D, 0, 0),
        xbee.at_command(4, "AP", b"\x02"),
        xbee.tx_request(5, xbee.COORDINATOR64, datagrams[0]),
    ]
    for d in datagrams:
        frames.append(xbee.rx_packet(addr, 0x1311, d))
    streams = []
    for i in range(0, len(frames), 3):
        group = frames[i : i + 3]
        for escaped in (False, True):
            streams.append(b"".join(xbee.encode_frame(f, escaped) for f in group))
    return streams


def _pairing():
    """Every pairing packet of version 2 (docs/PROTOCOL.md §8.1), from the
    encoders: REQUEST in both modes, RESPONSE, REVEAL with and without the
    install-code proof, ACCEPT and NOT_PAIRED (16-byte tag), REJECT with and
    without a tag, PENDING."""
    pub = bytes(range(32, 64))
    nonce = bytes.fromhex("7e7d1113a0b0c0d0e0f0111213141516")
    tag = bytes(range(0xA0, 0xB0))
    commit = pairing.commitment(pub, nonce)
    addr = bytes.fromhex("0013a20041a7b2c1")
    out = [pairing.encode_request(pairing.MODE_CODE, commit, "device-1", "service.local")]
    out.append(pairing.encode_request(pairing.MODE_INSTALL_CODE, commit, "d\u00e9vice", "s" * 32))
    out.append(pairing.encode_response(nonce, pub, addr, "gw-1"))
    out.append(pairing.encode_reveal(pub, nonce))
    out.append(pairing.encode_reveal(pub, nonce, tag))
    out.append(pairing.encode_reply(pairing.ACCEPT, tag=tag))
    out.append(pairing.encode_reply(pairing.NOT_PAIRED, tag=tag))
    out.append(pairing.encode_reply(pairing.REJECT, 2))
    out.append(pairing.encode_reply(pairing.REJECT, 5, tag))
    out.append(pairing.encode_reply(pairing.PENDING, 1))
    return out


def build():
    ca = pki.make_ca("Fuzz CA")
    leaf = pki.make_cert("service.local", issuer=ca)
    corpus = {"psk": PSK, "identity": IDENTITY, "ca": pki.der(ca.cert), "session_seed": b"sess"}
    corpus["leaf"] = pki.der(leaf.cert)
    psks = {IDENTITY: PSK}
    corpus["tls"] = [
        _tls_case(corpus, "psk", ServerConfig(psks=psks, tickets=1)),
        _tls_case(corpus, "psk_hrr", ServerConfig(psks=psks, groups=("secp256r1",))),
        _tls_case(corpus, "cert", ServerConfig(cert_chain=[leaf.cert], key=leaf.key)),
    ]
    corpus["session"] = [
        ("psk", _session(corpus, "psk")),
        ("psk_hrr", _session(corpus, "psk_hrr", groups=("secp256r1",))),
    ]
    corpus["messages"] = list(SERVICE_MESSAGES)
    corpus["link"] = record_link()
    wire = []
    for d in [r[3] for r in corpus["link"]] + [d for _, rec in corpus["session"] for _, d in rec]:
        if d not in wire:
            wire.append(d)
    # ERROR in both forms (§5): a reason alone, and RESET || the 16-byte token
    wire.append(link_wire.encode(ERROR, 0x5A17, bytes((UNKNOWN_SESSION,))))
    wire.append(link_wire.encode(ERROR, 0x5A17, bytes((RESET,)) + bytes(range(16))))
    corpus["wire"] = wire
    corpus["xbee"] = _xbee(wire[:12] + _pairing())
    corpus["pairing"] = _pairing()
    return corpus


def _enc(x):
    if isinstance(x, (bytes, bytearray)):
        return "hex:" + bytes(x).hex()
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    if isinstance(x, dict):
        return {k: _enc(v) for k, v in x.items()}
    return x


def save(corpus, path):
    with open(path, "w") as f:
        json.dump(_enc(corpus), f)
