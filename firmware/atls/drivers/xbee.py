"""XBee 3 Zigbee transport: ATLS datagrams as API frames to the coordinator.

Same shape as drivers/udp.py: send(datagram) puts one Transmit Request (0x10)
to the coordinator (dest64 0, dest16 0x0000) on the stream; recv(timeout_ms)
returns the payloads of Receive Packets (0x90) from the coordinator (source
16-bit address 0x0000, and the coordinator's 64-bit address when one was
given) and counts any other source as foreign.  Transmit Status (0x8B)
frames are only counted (delivered, too_large for 0x74, failures by delivery
code): the ATLS link layer retransmits, this driver never does.  Modem
Status 0x02/0x03 set `joined` True/False (a reset, 0x00/0x01, sets False
until the module rejoins).

The AT configuration (configure, wait_ready, wait_joined, at) is the mixin
atls.drivers.xbee_at.XBeeConfig.  Time is a monotonic millisecond clock
(atls.eventloop.Clock unless one is given: pass the session's so that
configure(now_ms) can take its readings).  UART id, pins, speed and AP come
from the board config (from_board), never from constants here.
open_tcp and SocketStream (an emulated module over TCP, atls.drivers.xbee_tcp)
are read here on first use (module __getattr__, PEP 562).
"""

import time

from atls import xbee as X
from atls.drivers.xbee_at import XBeeConfig
from atls.eventloop import Clock
from atls.xbee import XBeeError  # noqa: F401  (re-exported)

try:
    import select
except ImportError:  # pragma: no cover
    select = None

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_RXQ_MAX = const(32)
_CHUNKS = const(16)


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:  # CPython
        time.sleep(ms / 1000)


class XBeeTransport(XBeeConfig):
    def __init__(
        self,
        stream,
        escaped=False,
        coordinator64=None,
        at_timeout_ms=500,
        at_retries=2,
        guard_ms=1100,
        clock=None,
    ):
        self.stream = stream
        self.clock = clock or Clock()  # monotonic ms; configure(now_ms) takes its readings
        self.escaped = escaped  # the AP the board wants: 2 if escaped else 1
        self.coordinator64 = coordinator64
        self.at_timeout_ms = at_timeout_ms
        self.at_retries = at_retries
        self.guard_ms = guard_ms
        self._dec = X.FrameDecoder(escaped)
        self._rbuf = bytearray(128)
        self._rmv = memoryview(self._rbuf)
        self._rxq = []
        self._fid = 2
        self._req = None  # [frame id, command, parameter, deadline, tries left]
        self._resp = None
        self._text = b""
        self._steps = None
        self._tried_cmd = False
        self.state = "probe"
        self.mtu = None
        self.address64 = None
        self.joined = None  # unknown until AI or a modem status says
        self.module_ap = None
        self.last_at = {}  # command -> (status, value) of the latest answer
        self.sent = 0
        self.received = 0
        self.foreign = 0
        self.delivered = 0
        self.too_large = 0
        self.failures = {}  # delivery status -> count (0x74 is in too_large)
        self.modem = {}  # modem status -> count
        self.other = 0  # frames of other types, stray AT answers, malformed frames
        self.write_errors = 0
        self.rx_overflow = 0
        self._poll = None
        target = getattr(stream, "poll_target", stream)
        if select is not None:
            try:
                p = select.poll()
                p.register(target, select.POLLIN)
                self._poll = p
            except (AttributeError, TypeError, ValueError, OSError):
                self._poll = None

    # -- datagrams -------------------------------------------------------------------------
    def send(self, datagram):
        fd = X.tx_request(self._next_fid(), X.COORDINATOR64, datagram, 0x0000)
        if self._write(X.encode_frame(fd, self.escaped)):
            self.sent += 1

    def recv(self, timeout_ms):
        out = self._rxq
        self._rxq = []
        self._pump(out)
        if out or timeout_ms <= 0:
            return out
        t0 = self.clock()
        while True:
            left = int(timeout_ms) - (self.clock() - t0)
            if left <= 0:
                return out
            self._wait(left)
            self._pump(out)
            if out:
                return out

    def close(self):
        c = getattr(self.stream, "close", None)
        if c:
            c()

    def stats(self):
        s = {
            "sent": self.sent,
            "received": self.received,
            "foreign": self.foreign,
            "delivered": self.delivered,
            "too_large": self.too_large,
            "failures": dict(self.failures),
            "modem": dict(self.modem),
            "other": self.other,
            "write_errors": self.write_errors,
            "rx_overflow": self.rx_overflow,
            "state": self.state,
            "mtu": self.mtu,
            "joined": self.joined,
        }
        s["decoder"] = dict(self._dec.counters)
        return s

    # -- internals -------------------------------------------------------------------------------
    def _write(self, data):
        try:
            self.stream.write(data)
            return True
        except OSError:
            self.write_errors += 1
            return False

    def _wait(self, ms):
        if self._poll is not None:
            self._poll.poll(max(0, int(ms)))
        else:
            _sleep_ms(max(1, min(5, int(ms))))

    def _pump(self, out):
        for _ in range(_CHUNKS):
            try:
                n = self.stream.readinto(self._rbuf)
            except XBeeError:
                raise  # the link to the module is gone
            except OSError:
                n = None
            if not n:
                return
            if self.state == "cmd":
                self._text = (self._text + bytes(self._rmv[:n]))[-64:]
                continue
            for fd in self._dec.feed(self._rmv[:n]):
                self._handle(fd, out)

    def _handle(self, fd, out):
        try:
            f = X.parse(fd)
        except X.DecodeError:
            self.other += 1
            return
        k = f[0]
        if k == "rx":
            if f[2] != 0 or (self.coordinator64 is not None and f[1] != self.coordinator64):
                self.foreign += 1
            elif len(out) >= _RXQ_MAX:
                self.rx_overflow += 1
            else:
                self.received += 1
                out.append(f[4])
        elif k == "tx_status":
            d = f[4]
            if d == X.DELIVERY_SUCCESS:
                self.delivered += 1
            elif d == X.PAYLOAD_TOO_LARGE:
                self.too_large += 1
            else:
                self.failures[d] = self.failures.get(d, 0) + 1
        elif k == "modem_status":
            s = f[1]
            self.modem[s] = self.modem.get(s, 0) + 1
            if s == X.JOINED:
                self.joined = True
            elif s == X.DISASSOCIATED or s == X.HARDWARE_RESET or s == X.WATCHDOG_RESET:
                self.joined = False
        elif k == "at_response":
            self.last_at[f[2]] = (f[3], f[4])
            if f[2] == b"AI" and f[3] == X.AT_OK and f[4]:
                self.joined = f[4][0] == 0
            q = self._req
            if q is not None and q[0] == f[1] and q[1] == f[2]:
                self._resp = (f[1], f[3], f[4])
            elif f[2] != b"AI":
                self.other += 1
        else:
            self.other += 1


def __getattr__(name):
    # open_tcp, SocketStream: from atls.drivers.xbee_tcp, loaded on first use
    if name == "open_tcp" or name == "SocketStream":
        from atls.drivers import xbee_tcp

        return getattr(xbee_tcp, name)
    raise AttributeError(name)


_UART_KEYS = ("tx", "rx", "rts", "cts", "flow", "rxbuf", "txbuf")


def from_board(cfg, **kw):
    """An XBeeTransport on the board's UART.  cfg: the board config's "xbee"
    section, e.g. {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "ap": 2,
    "at_timeout_ms": 500, "guard_ms": 1100, "coordinator64": "0013A200..."}"""
    from machine import UART

    for k in ("uart", "baudrate", "ap"):
        if k not in cfg:
            raise X.UsageError("board config xbee.%s missing" % k)
    if cfg["ap"] not in (1, 2):
        raise X.UsageError("board config xbee.ap must be 1 or 2")
    args = {"baudrate": cfg["baudrate"], "timeout": 0}
    for k in _UART_KEYS:
        if k in cfg:
            args[k] = cfg[k]
    uart = UART(cfg["uart"], **args)
    for k in ("at_timeout_ms", "at_retries", "guard_ms"):
        if k in cfg:
            kw[k] = cfg[k]
    if cfg.get("coordinator64"):
        from binascii import unhexlify

        kw["coordinator64"] = unhexlify(cfg["coordinator64"])
    return XBeeTransport(uart, escaped=cfg["ap"] == 2, **kw)
