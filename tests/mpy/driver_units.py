"""Driver logic against fakes that speak the real interfaces, dialect-neutral
(MicroPython unix port and CPython); run by tests/test_drivers.py, which
reads the JSON line printed per case.

argv[1]: the case
  short_uart   10 x 66-byte datagrams through a UART that takes at most 7
               bytes a call and nothing every third call (rp2, timeout=0);
               AP=1 and AP=2
  stuck_uart   a UART that stops taking bytes: the write gives up after
               write_timeout_ms without spinning
  udp          UDPTransport on loopback: datagrams read into its buffer,
               an oversized one dropped and counted, another sender dropped
  cpu          atls.drivers.cpu on this port (no machine.freq on unix)
"""

import json
import socket
import sys
import time

from atls import xbee as X
from atls.drivers.xbee import XBeeTransport


def ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


class ShortUART:
    """machine.UART with timeout=0: takes what fits, returns that count
    (None: nothing taken, as a non-blocking stream says EAGAIN)."""

    def __init__(self, per_call, none_every=0, takes=None):
        self.per_call = per_call
        self.none_every = none_every
        self.takes = takes  # stop taking bytes after this many
        self.out = bytearray()
        self.calls = 0

    def write(self, data):
        self.calls += 1
        if self.none_every and self.calls % self.none_every == 0:
            return None
        n = min(self.per_call, len(data))
        if self.takes is not None:
            n = max(0, min(n, self.takes - len(self.out)))
        self.out.extend(bytes(data[:n]))
        return n

    def readinto(self, buf):
        return None


def payload(i):
    # 66 bytes with every byte AP=2 escapes in it
    return bytes([0x7E, 0x7D, 0x11, 0x13, i]) + bytes([(i * 31 + j) & 0xFF for j in range(61)])


def short_uart():
    res = {}
    for esc in (False, True):
        uart = ShortUART(7, none_every=3)
        t = XBeeTransport(uart, escaped=esc, baudrate=115200, write_timeout_ms=2000)
        for i in range(10):
            t.send(payload(i))
        frames = [X.parse(f) for f in X.FrameDecoder(esc).feed(bytes(uart.out))]
        res["ap%d" % (2 if esc else 1)] = {
            "sent": t.sent,
            "write_errors": t.write_errors,
            "short_writes": t.short_writes,
            "ok": [f[0] == "tx_request" and f[6] == payload(i) for i, f in enumerate(frames)],
            "dest": [f[2] == X.COORDINATOR64 and f[3] == 0 for f in frames],
        }
    return res


def stuck_uart():
    uart = ShortUART(16, takes=40)
    t = XBeeTransport(uart, baudrate=115200, write_timeout_ms=150)
    t0 = ms()
    t.send(payload(1))
    took = ms() - t0
    return {
        "sent": t.sent,
        "write_errors": t.write_errors,
        "ms": took,
        "calls": uart.calls,
        "taken": len(uart.out),
    }


def udp():
    from atls.drivers.udp import UDPTransport

    port = int(sys.argv[2])  # a free port: the service's
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    t = UDPTransport("127.0.0.1", port, rx_mtu=100)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.send(b"hello")
    data, dev = peer.recvfrom(200)
    # the service answers: a fitting datagram, one above rx_mtu, one exactly rx_mtu
    other.sendto(b"foreign", dev)
    peer.sendto(b"a" * 10, dev)
    peer.sendto(b"b" * 101, dev)
    peer.sendto(b"c" * 100, dev)
    got = []
    t0 = ms()
    while len(got) < 2 and ms() - t0 < 3000:
        got += t.recv(50)
    r = {
        "echo": data == b"hello",
        "got": [[len(d), d[:1].decode(), type(d) is bytes] for d in got],
        "too_large": t.too_large,
        "received": t.received,
    }
    t.close()
    peer.close()
    other.close()
    return r


def cpu():
    from atls.drivers.cpu import apply_freq

    return {"none": apply_freq(None), "unix": apply_freq(160)}


case = sys.argv[1]
print(
    json.dumps({"short_uart": short_uart, "stuck_uart": stuck_uart, "udp": udp, "cpu": cpu}[case]())
)
