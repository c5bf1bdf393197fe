"""Draining a UDP socket in batches (issue 14): the service's listener and
the gateway's WiFi/UDP side.

asyncio's datagram transport reads one datagram per event-loop iteration,
so under a flood most of the service's time went to the loop itself and the
kernel dropped what it could not read, honest packets included.
`BatchReader` pauses the transport's own reading and reads up to `batch`
datagrams per wake-up from a duplicate of its socket, with a larger receive
buffer.  When a batch leaves the socket empty it calls `after_batch()`: the
service starts queued handshakes there, so what waits in the socket (packets
of existing sessions among them) is always read first, and new handshakes
get the time that is left (and the timers').  Sending stays with the
transport.
"""

import asyncio
import os
import socket

__all__ = ["BatchReader"]

RCVBUF = 4 << 20  # capped by net.core.rmem_max


def _stop_transport_reading(transport, loop, fd):
    try:
        transport.pause_reading()  # datagram transports have it from Python 3.11.3
    except (AttributeError, NotImplementedError):
        loop._remove_reader(fd)  # what pause_reading does


class BatchReader:
    """Reads for `transport` (an asyncio datagram transport on a real
    socket); `on_datagram(data, addr)` per datagram, then `after_batch()`.
    `attach` returns None when the transport has no socket to read (tests)."""

    def __init__(self, fd, on_datagram, after_batch, batch=256, transport=None):
        self.transport = transport  # closed: the reader closes too
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        self.on_datagram = on_datagram
        self.after_batch = after_batch
        self.batch = batch
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._ready)
        self.batching = False

    @classmethod
    def attach(cls, transport, on_datagram, after_batch, batch=256):
        info = getattr(transport, "get_extra_info", None)
        tsock = info("socket") if info is not None else None
        if tsock is None:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if not hasattr(loop, "_remove_reader"):
            return None  # not a selector loop: the transport keeps reading
        fd = os.dup(tsock.fileno())
        try:
            reader = cls(fd, on_datagram, after_batch, batch, transport)
        except Exception:
            os.close(fd)
            raise
        # after the transport's own add_reader, which connection_made precedes
        loop.call_soon(_stop_transport_reading, transport, loop, tsock.fileno())
        return reader

    def _ready(self):
        if self.transport is not None and self.transport.is_closing():
            return self.close()
        recv = self.sock.recvfrom
        on_datagram = self.on_datagram
        self.batching = True
        empty = False
        try:
            for _ in range(self.batch):
                try:
                    data, addr = recv(65536)
                except (BlockingIOError, InterruptedError):
                    empty = True
                    break
                except OSError:
                    continue  # e.g. an ICMP error queued on the socket
                on_datagram(data, addr)
        finally:
            self.batching = False
        if empty:
            self.after_batch()

    def close(self):
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
