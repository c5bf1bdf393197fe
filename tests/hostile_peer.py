"""A hostile path for fault-injection tests: it answers the device's
handshakes with what an attacker on the path can send (no keys needed), one
attack per handshake attempt, then forwards datagrams to a real service.

Attacks (each a function flight-in -> flight-out, or a raw datagram list):
  hrr_close  HelloRetryRequest + plaintext warning close_notify, then any
             bytes as flight 3 (issue 12: killed main.py with a UsageError)
  random     random bytes as the server's flight
  bigcert    a real ServerHello (the path can do ECDHE: no PSK, certificate
             mode) and, encrypted under the handshake keys, EncryptedExtensions
             and a Certificate as large as the device's limits allow
             (random DER): the client decrypts it and parses it
  error      a forged ERROR(handshake_failed) for the device's session id
  garbage    random datagrams, ATLS-marked and not
`HostilePeer.serve()` runs in a thread over one UDP socket; `forward_to`
switches it to a transparent relay once the attacks are used up.
"""

import hashlib
import os
import random
import socket
import struct
import threading

from atls import wire
from atls.link import Link, LinkConfig
from atls.protocol import ERROR, HANDSHAKE_FAILED, SECP256R1, TLS_AES_128_GCM_SHA256, X25519

HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()  # RFC 8446 §4.1.3


def record(ctype, body):
    return struct.pack("!BHH", ctype, 0x0303, len(body)) + body


def hello_retry_request(suite=TLS_AES_128_GCM_SHA256, group=SECP256R1):
    """RFC 8446 §4.1.4: a HelloRetryRequest asking for `group`."""
    exts = struct.pack("!HHH", 0x002B, 2, 0x0304) + struct.pack("!HHH", 0x0033, 2, group)
    body = b"\x03\x03" + HRR_RANDOM + b"\x00" + struct.pack("!H", suite) + b"\x00"
    body += struct.pack("!H", len(exts)) + exts
    return record(22, b"\x02" + len(body).to_bytes(3, "big") + body)


CLOSE_NOTIFY = record(21, b"\x01\x00")  # §6: warning close_notify, in plaintext


def hrr_close_flight():
    return hello_retry_request() + CLOSE_NOTIFY


def _handshake(mtype, body):
    return bytes((mtype,)) + len(body).to_bytes(3, "big") + body


def _client_hello(flight):
    """(ClientHello message, offered suites, x25519 share or None)."""
    msg = flight[5 : 5 + int.from_bytes(flight[3:5], "big")]
    b = msg[4 + 2 + 32 :]
    b = b[1 + b[0] :]  # legacy_session_id
    n = int.from_bytes(b[:2], "big")
    suites = [int.from_bytes(b[2 + i : 4 + i], "big") for i in range(0, n, 2)]
    b = b[2 + n :]
    b = b[1 + b[0] :]  # compression methods
    exts, share = b[2 : 2 + int.from_bytes(b[:2], "big")], None
    while exts:
        t, n = int.from_bytes(exts[:2], "big"), int.from_bytes(exts[2:4], "big")
        if t == 0x0033:  # key_share: client_shares<2..>
            ks = exts[6 : 4 + n]
            while ks:
                g, k = int.from_bytes(ks[:2], "big"), int.from_bytes(ks[2:4], "big")
                if g == X25519:
                    share = ks[4 : 4 + k]
                ks = ks[4 + k :]
        exts = exts[4 + n :]
    return msg, suites, share


def big_certificate_flight(ch_flight, size=3800):
    """ServerHello, then {EncryptedExtensions, Certificate of `size` random
    bytes} under the server handshake traffic keys (RFC 8446 §7.1, §5.2):
    what a man in the middle can send without any credential."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from atls.crypto.hkdf import derive_secret, hkdf_expand_label, hkdf_extract

    ch, suites, client_share = _client_hello(ch_flight)
    suite = [s for s in suites if s in (0x1301, 0x1304, 0x1305)][0]
    priv = X25519PrivateKey.generate()
    pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    exts = struct.pack("!HHH", 0x002B, 2, 0x0304)
    exts += struct.pack("!HHHH", 0x0033, 36, X25519, 32) + pub
    sh_body = b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!HBH", suite, 0, len(exts))
    sh = _handshake(2, sh_body + exts)
    shared = priv.exchange(X25519PublicKey.from_public_bytes(bytes(client_share)))
    zero = bytes(32)
    early = hkdf_extract(zero, zero)
    hs = hkdf_extract(derive_secret(early, b"derived", hashlib.sha256(b"").digest()), shared)
    s_hs = derive_secret(hs, b"s hs traffic", hashlib.sha256(bytes(ch) + sh).digest())
    key = hkdf_expand_label(s_hs, b"key", b"", 16)
    iv = hkdf_expand_label(s_hs, b"iv", b"", 12)
    aead = AESGCM(key) if suite == 0x1301 else AESCCM(key, 8 if suite == 0x1305 else 16)
    tag = 8 if suite == 0x1305 else 16
    cert = os.urandom(size)
    entry = len(cert).to_bytes(3, "big") + cert + b"\x00\x00"
    certificate = _handshake(11, b"\x00" + len(entry).to_bytes(3, "big") + entry)
    inner = _handshake(8, b"\x00\x00") + certificate + b"\x16"
    header = struct.pack("!BHH", 23, 0x0303, len(inner) + tag)
    return record(22, sh) + header + aead.encrypt(iv, inner, header)  # seq 0: nonce = iv


class HostilePeer:
    """Plays the service's side of the link with hostile TLS flights."""

    def __init__(self, attacks, mtu=1200, seed=1, forward_to=None):
        self.attacks = list(attacks)
        self.done = []  # attacks used so far
        self.mtu = mtu
        self.rng = random.Random(seed)
        self.link = None
        self.attack = None
        self.sid = 0x4000
        self.forward_to = forward_to  # relay there once the attacks are used up
        self.forwarding = False
        self.first = None
        self.stop = False

    def new_attack(self):
        self.attack = self.attacks.pop(0) if self.attacks else None
        if self.attack:
            self.done.append(self.attack)
        self.sid += 1
        self.link = Link("server", LinkConfig(mtu=self.mtu, rto_ms=200), self.sid)

    def handle(self, datagram, now_ms):
        """Datagrams to answer `datagram` with (the device's packet)."""
        try:
            p = wire.decode(datagram)
        except Exception:
            return []
        if p[1] == 0 and p[0] <= 1 and p[2] == 0 and p[3] == 0 and datagram != self.first:
            self.first = datagram  # fragment 0 of a new ClientHello: a new attempt
            if not self.attacks and self.forward_to is not None:
                self.forwarding = True
                return []
            self.new_attack()
        if self.attack is None:
            return []
        self.link.receive(datagram, now_ms)
        out = []
        for ev in self.link.events():
            if ev[0] == "flight":
                out += self._answer(ev[1], now_ms)
        return out + self.link.datagrams(now_ms)

    def _flights_in(self):
        return self.link.counters["flights_in"] if self.link else 0

    def _answer(self, flight, now_ms):
        a = self.attack
        n = self._flights_in()
        if a == "hrr_close":
            self.link.send_flight(hrr_close_flight() if n == 1 else os.urandom(300), now_ms)
        elif a == "random":
            self.link.send_flight(os.urandom(self.rng.randrange(1, 3000)), now_ms)
        elif a == "bigcert":
            self.link.send_flight(big_certificate_flight(flight), now_ms)
        elif a == "error":
            return [wire.encode(ERROR, 0, bytes((HANDSHAKE_FAILED,)))]
        elif a == "garbage":
            out = []
            for _ in range(20):
                d = bytearray(os.urandom(self.rng.randrange(1, 200)))
                if self.rng.random() < 0.5:
                    d[0] = (d[0] & 0x0F) | 0xA0  # looks like an ATLS header
                out.append(bytes(d))
            return out
        return []

    def serve(self, sock):
        """Answer (or forward) until self.stop; run it in a thread."""
        import time

        sock.settimeout(0.05)
        device = None
        t0 = time.monotonic()
        while not self.stop:
            try:
                data, addr = sock.recvfrom(4096)
            except socket.timeout:
                if self.link is not None and device is not None and self.attack:
                    for d in self.link.datagrams(int((time.monotonic() - t0) * 1000)):
                        sock.sendto(d, device)
                continue
            except OSError:
                return
            if not self.forwarding and addr != self.forward_to:
                device = addr
                out = self.handle(data, int((time.monotonic() - t0) * 1000))
                for d in out:
                    sock.sendto(d, addr)
            if self.forwarding:
                if addr == self.forward_to:
                    if device is not None:
                        sock.sendto(data, device)
                else:
                    device = addr
                    sock.sendto(data, self.forward_to)


def start(attacks, host="127.0.0.1", forward_to=None):
    """A HostilePeer serving in a daemon thread: (peer, (host, port), sock)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    peer = HostilePeer(attacks, forward_to=forward_to)
    threading.Thread(target=peer.serve, args=(sock,), daemon=True).start()
    return peer, sock.getsockname(), sock
