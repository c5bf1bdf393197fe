"""The byte streams that stand for a module's UART.

* the coordinator over a pty: the slave path (``state["coordinator"]["pty"]``)
  is what the gateway opens with pyserial, like /dev/ttyUSB0 (any baud rate);
  output while no process has the pty open is dropped (see PtySerial);
* each device module over its own TCP listening port on 127.0.0.1 (one port
  per module, one client at a time; a new connection replaces the old one, as
  a device reboot re-opens its UART).  Nothing is sent before the API frames.
"""

import asyncio
import os
import select
import socket
import tty


class PtySerial:
    """The module's UART as a pty (the coordinator's /dev/ttyUSB0).

    The emulator does not keep the slave open: while no process has it open
    (the master polls POLLHUP) the module's output is dropped and counted,
    like a UART nobody listens to, so a gateway that opens the port later
    does not read a backlog.  The slave is left in raw mode, and the gateway
    can close and reopen it at will (seen within probe_s).  Output the
    kernel cannot take at once waits in a buffer of max_pending bytes."""

    def __init__(self, loop, module, max_pending=4096, probe_s=0.02):
        self.loop = loop
        self.module = module
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self._hup = select.poll()
        self._hup.register(self.master, select.POLLIN)
        self.max_pending = max_pending
        self.probe_s = probe_s
        self.listening = False
        self.opens = 0
        self._out = b""
        self._timer = loop.call_soon(self._probe)
        module.attach(self.write)

    def _probe(self):
        self._timer = None
        if any(ev & select.POLLHUP for _, ev in self._hup.poll(0)):
            self._timer = self.loop.call_later(self.probe_s, self._probe)
            return
        self.listening = True
        self.opens += 1
        self.loop.add_reader(self.master, self._readable)

    def _closed(self):
        # the last process holding the slave closed it (EIO on the master)
        if self.listening:
            self.loop.remove_reader(self.master)
            self.listening = False
            self.module.counters["serial_dropped_bytes"] += len(self._out)
            self._out = b""
            self._timer = self.loop.call_later(self.probe_s, self._probe)

    def _readable(self):
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._closed()
        if data:
            self.module.serial_in(data)

    def write(self, data):
        if not self.listening:
            self.module.counters["serial_dropped_bytes"] += len(data)
            return
        had = bool(self._out)
        self._out += data
        if not had:
            self._flush()

    def _flush(self):
        if not self.listening:
            return
        try:
            n = os.write(self.master, self._out) if self._out else 0
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return self._closed()
        self._out = self._out[n:]
        if len(self._out) > self.max_pending:
            self.module.counters["serial_dropped_bytes"] += len(self._out) - self.max_pending
            self._out = self._out[-self.max_pending :]
        if self._out:
            self.loop.call_later(0.005, self._flush)

    def close(self):
        if self.listening:
            self.loop.remove_reader(self.master)
        if self._timer is not None:
            self._timer.cancel()
        self.listening = False
        self.module.attach(None)
        try:
            os.close(self.master)
        except OSError:
            pass


class _TcpUart(asyncio.Protocol):
    def __init__(self, owner):
        self.owner = owner
        self.transport = None

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport = transport
        self.owner._connected(self)

    def data_received(self, data):
        if self.owner.current is self:
            self.owner.module.serial_in(data)

    def connection_lost(self, exc):
        self.owner._disconnected(self)


class TcpSerial:
    """The module's UART as a TCP port on loopback, one client at a time."""

    def __init__(self, module):
        self.module = module
        self.current = None
        self.server = None
        self.port = None
        self.connections = 0

    async def start(self, host="127.0.0.1", port=0):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _TcpUart(self), host, port)
        self.host = host
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def _connected(self, proto):
        old, self.current = self.current, proto
        self.connections += 1
        if old is not None and old.transport is not None:
            old.transport.close()
        self.module.attach(proto.transport.write)

    def _disconnected(self, proto):
        if self.current is proto:
            self.current = None
            self.module.attach(None)

    def close(self):
        if self.current is not None and self.current.transport is not None:
            self.current.transport.close()
        if self.server is not None:
            self.server.close()
