"""An emulated XBee module over TCP (unix port and CPython): the device
modules of sim/radio.py listen on loopback ports.  open_tcp(host, port, **kw)
is an XBeeTransport on a SocketStream; atls.drivers.xbee re-exports both
names (read on first use), so a board never loads this module.
"""

import time

from atls.drivers.xbee import XBeeTransport
from atls.xbee import XBeeError


def _sleep_1ms():
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(1)
    else:  # CPython
        time.sleep(0.001)


class SocketStream:
    """A TCP socket as a non-blocking byte stream (write, readinto, close)."""

    def __init__(self, sock):
        sock.setblocking(False)
        self.sock = sock
        self.poll_target = sock
        self._into = getattr(sock, "recv_into", None) or sock.readinto
        self.closed = False

    def write(self, data):
        mv = memoryview(data)
        done = 0
        spins = 0
        while done < len(mv):
            try:
                n = self.sock.send(mv[done:])
            except OSError:
                n = 0
            if n:
                done += n
                continue
            spins += 1
            if spins > 100:
                raise OSError("socket send buffer full")
            _sleep_1ms()
        return done

    def readinto(self, buf):
        if self.closed:
            raise XBeeError("connection to the XBee module closed")
        try:
            n = self._into(buf)
        except OSError:
            return None
        if n == 0:
            self.closed = True
            raise XBeeError("connection to the XBee module closed")
        return n

    def close(self):
        self.sock.close()


def open_tcp(host, port, **kw):
    import socket

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.connect(ai[-1])
    return XBeeTransport(SocketStream(s), **kw)
