"""XBee 3 Zigbee transport: ATLS datagrams as API frames to the coordinator.

Same shape as drivers/udp.py: send(datagram) puts one Transmit Request (0x10)
to the coordinator (dest64 0, dest16 0x0000) on the stream; recv(timeout_ms)
returns the payloads of Receive Packets (0x90) from the coordinator (source
16-bit address 0x0000, and the coordinator's 64-bit address when one was
given) and counts any other source as foreign.  Transmit Status (0x8B)
frames are only counted (delivered, too_large for 0x74, failures by delivery
code): the ATLS link layer retransmits, this driver never does.  Modem
Status 0x02/0x03 set `joined` True/False.  A module reset (Modem Status
0x00 hardware / 0x01 watchdog) sets `joined` False and re-runs the AT
configuration (counted in `reconfigures`): recv() steps it without
blocking, and send() drops datagrams (counted in `not_ready`) until the
module is ready again; the link layer retransmits them.

Once paired, pairing packets from the coordinator go to `pairing_hook`
(atls.pairing_state.not_paired_check: an authenticated NOT_PAIRED raises
NotPaired out of recv, so the application restarts and pairs again).
ZigBee network security (EE, EO, KY or DC) is applied through at() by
atls.pairing_client.secure before pairing.

Every byte of a frame goes out: a UART opened with timeout=0 (rp2: a
256-byte TX ring) accepts only what fits and returns that count, so _write
loops, sleeping about the time the UART needs to drain, until the frame is
out or write_timeout_ms passed (then write_errors counts it; a cut frame is
dropped by the module's decoder at the next start delimiter).  Frames are
built in one preallocated buffer; received bytes land in another.

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
_TX_HEAD = const(17)  # 0x7E, length (2), 0x10, frame id, dest64 (8), dest16 (2), radius, options
_TX_MAX = const(255)  # the largest API payload (NP is smaller: 84, 66 encrypted)
_DRAIN_BYTES = const(64)  # a short write waits about the time this many bytes need


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
        write_timeout_ms=1000,
        baudrate=9600,
    ):
        self.stream = stream
        self.clock = clock or Clock()  # monotonic ms; configure(now_ms) takes its readings
        self.escaped = escaped  # the AP the board wants: 2 if escaped else 1
        self.coordinator64 = coordinator64
        self.at_timeout_ms = at_timeout_ms
        self.at_retries = at_retries
        self.guard_ms = guard_ms
        self.write_timeout_ms = write_timeout_ms
        # ms the UART needs to drain _DRAIN_BYTES at 10 bits a byte, at least 1
        self._drain_ms = max(1, _DRAIN_BYTES * 10000 // max(1, int(baudrate)))
        self._dec = X.FrameDecoder(escaped)
        self._rbuf = bytearray(128)
        self._rmv = memoryview(self._rbuf)
        self._tbuf = bytearray(_TX_HEAD + _TX_MAX + 1)
        self._tmv = memoryview(self._tbuf)
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
        self.short_writes = 0  # writes the UART took in more than one call
        self.rx_overflow = 0
        self.reconfigures = 0  # module resets (0x00/0x01) after which configure ran again
        self.not_ready = 0  # datagrams dropped while the module was being configured
        # set by atls.pairing_state once paired: pairing packets (0xB0-0xB7) go
        # to it (it raises NotPaired on an authenticated NOT_PAIRED), not to recv
        self.pairing_hook = None
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
        if self.state != "ready" and self.reconfigures:
            self.not_ready += 1  # a reset module: the link layer retransmits
            return
        if len(datagram) > _TX_MAX:
            self.too_large += 1  # no module takes it (0x74): never sent
            return
        if self._write(self._tx_frame(datagram)):
            self.sent += 1

    def recv(self, timeout_ms):
        out = self._rxq
        self._rxq = []
        self._pump(out)
        if self.state != "ready" and self.reconfigures:
            self.configure()  # one non-blocking step after a module reset
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
            "short_writes": self.short_writes,
            "rx_overflow": self.rx_overflow,
            "reconfigures": self.reconfigures,
            "not_ready": self.not_ready,
            "state": self.state,
            "mtu": self.mtu,
            "joined": self.joined,
        }
        s["decoder"] = dict(self._dec.counters)
        return s

    # -- internals -------------------------------------------------------------------------------
    def _tx_frame(self, payload):
        # Transmit Request (0x10) to the coordinator in the preallocated buffer
        # (AP=1: sent from there; AP=2: escaped into a copy).
        n = len(payload)
        b = self._tbuf
        ln = n + _TX_HEAD - 3
        b[0] = 0x7E
        b[1] = ln >> 8
        b[2] = ln & 0xFF
        b[3] = X.TX_REQUEST
        b[4] = self._next_fid()
        for i in range(5, 15):  # dest64 0 (the coordinator), dest16 0x0000
            b[i] = 0
        b[15] = 0  # radius
        b[16] = 0  # options
        end = _TX_HEAD + n
        b[_TX_HEAD:end] = payload
        b[end] = X.checksum(self._tmv[3:end])
        frame = self._tmv[: end + 1]
        if self.escaped:
            body = bytes(frame[1:])
            esc = X.escape(body)
            if esc is not body:
                return b"\x7e" + esc
        return frame

    def _write(self, data):
        # All of data, or False (counted) after write_timeout_ms
        mv = memoryview(data)
        total = len(mv)
        done = 0
        deadline = None
        while True:
            try:
                n = self.stream.write(mv[done:] if done else mv)
            except OSError:
                self.write_errors += 1
                return False
            done += n or 0  # None: nothing taken (a non-blocking stream's EAGAIN)
            if done >= total:
                return True
            now = self.clock()
            if deadline is None:
                self.short_writes += 1
                deadline = now + self.write_timeout_ms
            elif (now - deadline) >= 0:
                self.write_errors += 1
                return False
            if not n:
                _sleep_ms(min(self._drain_ms, max(1, deadline - now)))

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
            elif self.pairing_hook is not None and f[4] and (f[4][0] & 0xF8) == 0xB0:
                self.pairing_hook(f[4])
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
            elif s == X.DISASSOCIATED:
                self.joined = False
            elif s == X.HARDWARE_RESET or s == X.WATCHDOG_RESET:
                self.joined = False
                self._module_reset()
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


_DRIVER_KEYS = ("at_timeout_ms", "at_retries", "guard_ms", "write_timeout_ms", "baudrate")


def from_board(cfg, **kw):
    """An XBeeTransport on the board's UART.  cfg: the board config's "xbee"
    section, e.g. {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "ap": 2,
    "txbuf": 2048, "rxbuf": 2048, "at_timeout_ms": 500, "guard_ms": 1100,
    "write_timeout_ms": 1000, "coordinator64": "0013A200..."}"""
    from atls import buffers

    for k in ("uart", "baudrate", "ap"):
        if k not in cfg:
            raise X.UsageError("board config xbee.%s missing" % k)
    if cfg["ap"] not in (1, 2):
        raise X.UsageError("board config xbee.ap must be 1 or 2")
    # the UART atls.buffers.early() opened at boot when it has these arguments
    # (its 2 KiB rings allocated before the imports cut the heap into pieces)
    uart = buffers.uart(cfg["uart"], buffers.uart_args(cfg))
    for k in _DRIVER_KEYS:
        if k in cfg:
            kw[k] = cfg[k]
    if cfg.get("coordinator64"):
        from binascii import unhexlify

        kw["coordinator64"] = unhexlify(cfg["coordinator64"])
    return XBeeTransport(uart, escaped=cfg["ap"] == 2, **kw)
