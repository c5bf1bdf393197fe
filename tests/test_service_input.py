"""Bad input never crashes the service and never reaches the application:
random bytes, wrong magic, unknown session ids, truncated fragments,
fragments with impossible offsets, replayed data packets and single flipped
bits are each dropped and counted by reason, while a real device session on
the same service carries on (real service process, loopback UDP)."""

import os
import random
import socket
import time

from e2e import ServiceProc

from atls import wire
from atls.channel import key_block
from atls.link import Link, LinkConfig
from atls.tls.client import ClientConfig, TLSClient

PSK = bytes(range(32))


class Device:
    """A CPython device (firmware modules) driven step by step, so the test
    can capture and replay its packets."""

    def __init__(self, addr):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr = addr
        self.tls = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev-1"))
        self.link = Link("client", LinkConfig(mtu=64, rto_ms=200))
        self.sent = []
        self.t0 = time.monotonic()
        self.messages = []

    def now(self):
        return int((time.monotonic() - self.t0) * 1000)

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for d in self.link.datagrams(self.now()):
                self.sent.append(d)
                self.sock.sendto(d, self.addr)
            try:
                data, _ = self.sock.recvfrom(2048)
                self.link.receive(data, self.now())
            except socket.timeout:
                pass
            for ev in self.link.events():
                if ev[0] == "flight":
                    self.tls.receive(ev[1])
                    out = self.tls.data_to_send()
                    if out:
                        self.link.send_flight(out, self.now())
                    if self.tls.connected and self.link.channel is None:
                        self.link.start_channel(key_block(self.tls), self.tls.suite)
                elif ev[0] == "message":
                    self.messages.append(ev[1])

    def connect(self):
        self.tls.start()
        self.link.send_flight(self.tls.data_to_send(), self.now())
        for _ in range(100):
            self.pump(0.1)
            if self.link.channel is not None:
                return
        raise AssertionError("no session")


def test_bad_input_is_dropped_and_counted(tmp_path):
    svc = ServiceProc(
        tmp_path, devices={"dev-1": PSK}, link={"mtu": 64, "rto_ms": 200, "rto_max_ms": 1000}
    )
    try:
        dev = Device(svc.addr)
        dev.connect()
        sid = dev.link.session_id
        for i in range(5):
            dev.link.send(b"hello-%d" % i, dev.now())
        dev.pump(1.0)
        assert len(dev.messages) == 5  # echoed
        data = [d for d in dev.sent if (d[0] & 7) == wire.DATA]
        assert data
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(5)
        # from the device's own address (the worst case: the path is hostile)
        bad = []
        bad += [os.urandom(rng.randrange(1, 80)) for _ in range(50)]  # random bytes
        bad += [bytes([0x5A]) + os.urandom(20) for _ in range(10)]  # wrong magic
        bad += [
            wire.encode(wire.DATA, (sid + 1) & 0xFFFF or 1, os.urandom(20)) for _ in range(10)
        ]  # unknown session
        bad += [bytes([0xA0, sid >> 8, sid & 0xFF])] * 5  # truncated
        bad += [wire.encode_hs(sid, 7, 255, b"x")] * 5  # impossible index
        bad += data[:3]  # replays
        for k, d in enumerate(data[:3]):  # flipped bits: a fresh seq, one bit off
            b = bytearray(d)
            b[3] = len(data) + 10 + k  # new seq (its low byte, §3): passes the replay
            b[-1] ^= 0x01  # window, then fails the AEAD
            bad.append(bytes(b))
        for d in bad:
            dev.sock.sendto(d, svc.addr)
        for d in bad[:20]:
            attacker.sendto(d, svc.addr)  # and from a stranger's address
        dev.pump(0.5)
        # the session still works and nothing bad reached the application
        for i in range(5, 10):
            dev.link.send(b"hello-%d" % i, dev.now())
        dev.pump(1.5)
        assert [m for m in dev.messages] == [b"hello-%d" % i for i in range(10)]
        c = svc.counters()
        assert c["messages_in"] == 10  # only the device's 10 real messages
        drops = c["drops"]
        for reason in ("not_atls", "unknown_session", "truncated", "replay", "auth"):
            assert drops.get(reason, 0) > 0, (reason, drops)
        assert drops.get("bad_fragment", 0) + drops.get("unknown_session", 0) >= 5
        assert svc.proc.poll() is None  # still running
    finally:
        svc.stop()
