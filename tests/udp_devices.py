"""Many devices in the test process: the firmware's DeviceSession (CPython
crypto backend), one UDP socket each (so each has its own 4-tuple, as real
devices behind different addresses would), pumped by one loop.  Each device
sends a JSON reading {"dev", "boot", "n"} every `period_ms` once it is up;
sim.sim_app.RecordingEchoApp at the service records what the application got
and echoes it.  Used by the worker tests (tests/test_workers.py,
tests/test_nginx.py); the load generator of `make bench` is a separate tool.
"""

import json
import selectors
import socket
import time

from atls.link import LinkConfig, QueueFull
from atls.session import DeviceSession
from atls.tls.client import ClientConfig

__all__ = ["Device", "Devices", "psk_of"]


def psk_of(name):
    return (name.encode() * 32)[:32]


class Device:
    def __init__(self, name, target, period_ms):
        self.name = name
        self.target = target
        self.period_ms = period_ms
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        cfg = LinkConfig(mtu=1200, rto_ms=200, rto_max_ms=800)
        tls = ClientConfig(psk=psk_of(name), psk_identity=name.encode())
        self.s = DeviceSession(tls, cfg, retry_ms=300, retry_max_ms=2000, boot=1)
        self.n = 0  # readings queued so far
        self.next_at = None
        self.sids = []  # every session id the service gave (new one = new handshake)
        self.echoes = []  # n of every echo received
        self.downs = []  # (ms, reason) of every session end or failed handshake
        self.up_at = None  # ms of the first session up
        self.acked_at = {}  # n -> ms its delivery was acknowledged
        self.sent_at = {}

    def sid(self):
        link = self.s.link
        return link.session_id if link is not None else None


class Devices:
    def __init__(self, names, target, period_ms=100):
        self.t0 = time.monotonic()
        self.devs = [Device(n, target, period_ms) for n in names]
        self.sel = selectors.DefaultSelector()
        for d in self.devs:
            self.sel.register(d.sock, selectors.EVENT_READ, d)
        self.sending = True
        now = self.now()
        for d in self.devs:
            d.s.connect(now)

    def now(self):
        return int((time.monotonic() - self.t0) * 1000)

    def step(self, wait_s=0.005):
        now = self.now()
        for key, _ in self.sel.select(wait_s):
            d = key.data
            for _ in range(64):
                try:
                    data = d.sock.recv(2048)
                except BlockingIOError:
                    break
                d.s.receive(data, now)
        now = self.now()
        for d in self.devs:
            self._events(d, now)
            if self.sending and d.s.state == "up" and (d.next_at is None or now >= d.next_at):
                self._send(d, now)
            for out in d.s.datagrams(now):
                d.sock.sendto(out, d.target)
            self._events(d, now)

    def _send(self, d, now):
        msg = json.dumps({"dev": d.name, "boot": "1", "n": d.n}).encode()
        try:
            d.s.send(msg, now)
        except QueueFull:
            return
        d.sent_at[d.n] = now
        d.n += 1
        d.next_at = now + d.period_ms

    def _events(self, d, now):
        for ev in d.s.events():
            if ev[0] == "up":
                d.sids.append(d.sid())
                if d.up_at is None:
                    d.up_at = now
            elif ev[0] == "message":
                d.echoes.append(json.loads(ev[1])["n"])
            elif ev[0] == "delivered":
                for n in range(len(d.acked_at), d.s.counters["delivered"]):
                    d.acked_at[n] = now  # in order: the link delivers in order
            elif ev[0] in ("down", "failed"):
                d.downs.append((now, ev[1]))

    def run(self, until, timeout_s, what="condition"):
        deadline = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.0f s waiting for %s" % (timeout_s, what))
            self.step()

    def all_up(self):
        return all(d.s.state == "up" for d in self.devs)

    def settled(self):
        """Every reading queued is acknowledged and every echo came back."""
        return all(
            d.s.state == "up" and not d.s.pending() and len(d.echoes) >= d.n for d in self.devs
        )

    def lost_sessions(self, since_ms=0):
        """Sessions that ended since `since_ms` after their device's first
        session was up (the device handshakes again or waits to)."""
        return sum(
            1
            for d in self.devs
            for t, _ in d.downs
            if d.up_at is not None and t >= max(d.up_at, since_ms)
        )

    def close(self):
        for d in self.devs:
            self.sel.unregister(d.sock)
            d.sock.close()
        self.sel.close()


def read_records(path):
    """The RecordingEchoApp's deliveries: [(identity, n)] in file order."""
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("ok"):
                out.append((r["id"], r["n"]))
    return out
