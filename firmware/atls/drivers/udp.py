"""UDP transport for WiFi boards and the unix port: one socket, one peer.

send(datagram) and recv(timeout_ms) -> list of datagrams.  The socket is
connected to the peer, so the network stack drops datagrams from any other
address (lwIP and the host alike) and send() needs no address.  Datagrams
are read with the link's receive MTU (rx_mtu: LinkConfig's default, 1280;
the link drops anything larger) plus one byte to tell an oversized datagram,
which is dropped and counted in too_large, and handed up as bytes of their
own length.  CPython reads into one preallocated buffer (recv_into).
MicroPython's sockets have no recv_into, and their readinto() loops until the
buffer is full, joining datagrams, so there recv(rx_mtu + 1) reads exactly
one: a buffer of the receive MTU that the socket layer trims to the
datagram (not a 1,500-byte one, nor a sender address per datagram).  The peer's name is looked up with retries
(atls.drivers.wifi.resolve).  With a WiFi station (wifi=, see
atls.drivers.wifi) recv() lets it reconnect a dropped link on every turn.
"""

import socket

from atls.drivers.wifi import resolve

try:
    import select
except ImportError:  # pragma: no cover
    select = None

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_RX_MTU = const(1280)  # atls.link.LinkConfig rx_mtu default
_BATCH = const(32)


class UDPTransport:
    def __init__(self, host, port, bind_port=0, rx_mtu=_RX_MTU, wifi=None):
        ai = resolve(host, port, socket.SOCK_DGRAM)
        self.peer = ai[-1]
        self.sock = socket.socket(ai[0], socket.SOCK_DGRAM)
        if bind_port:
            self.sock.bind(socket.getaddrinfo("0.0.0.0", bind_port)[0][-1])
        self.sock.connect(self.peer)
        self.sock.setblocking(False)
        self._limit = int(rx_mtu)
        self._into = getattr(self.sock, "recv_into", None)  # CPython
        if self._into is not None:
            self._buf = bytearray(self._limit + 1)
            self._mv = memoryview(self._buf)
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)
        self.wifi = wifi
        self.foreign = 0  # kept for stats: the connected socket never sees them
        self.too_large = 0
        self.sent = 0
        self.received = 0

    def send(self, datagram):
        try:
            self.sock.send(datagram)
            self.sent += 1
        except OSError:
            pass  # the link layer retransmits; a full buffer is a lost datagram

    def recv(self, timeout_ms):
        out = []
        if self.wifi is not None:
            self.wifi.check()
        if not self._poll.poll(max(0, int(timeout_ms))):
            return out
        limit = self._limit
        while len(out) < _BATCH:
            try:
                if self._into is not None:
                    n = self._into(self._buf)
                    d = None
                else:
                    d = self.sock.recv(limit + 1)
                    n = None if d is None else len(d)
            except OSError:
                break  # EAGAIN: drained (or an ICMP error on the connected socket)
            if n is None:
                break
            if n > limit:
                self.too_large += 1
                continue
            self.received += 1
            out.append(bytes(self._mv[:n]) if d is None else d)
        return out

    def close(self):
        self.sock.close()
