"""UDP transport for WiFi boards and the unix port: one socket, one peer.

send(datagram) and recv(timeout_ms) -> list of datagrams; datagrams from any
other address are dropped and counted (the session must not see them).
"""

import socket

try:
    import select
except ImportError:  # pragma: no cover
    select = None

_MAX_DATAGRAM = 1500


class UDPTransport:
    def __init__(self, host, port, bind_port=0):
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        self.peer = ai[-1]
        self.sock = socket.socket(ai[0], socket.SOCK_DGRAM)
        if bind_port:
            self.sock.bind(socket.getaddrinfo("0.0.0.0", bind_port)[0][-1])
        self.sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)
        self.foreign = 0
        self.sent = 0
        self.received = 0

    def send(self, datagram):
        try:
            self.sock.sendto(datagram, self.peer)
            self.sent += 1
        except OSError:
            pass  # the link layer retransmits; a full buffer is a lost datagram

    def recv(self, timeout_ms):
        out = []
        if not self._poll.poll(max(0, int(timeout_ms))):
            return out
        while len(out) < 32:
            try:
                data, addr = self.sock.recvfrom(_MAX_DATAGRAM)
            except OSError:
                break
            if not _same_peer(addr, self.peer):
                self.foreign += 1
                continue
            self.received += 1
            out.append(data)
        return out

    def close(self):
        self.sock.close()


def _same_peer(a, b):
    # MicroPython gives sockaddr as bytes, CPython as (host, port)
    return a == b or (isinstance(a, tuple) and isinstance(b, tuple) and a[:2] == b[:2])
