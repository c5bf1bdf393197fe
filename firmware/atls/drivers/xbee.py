"""XBee 3 Zigbee transport: ATLS datagrams as API frames to the coordinator."""

# Theory of operation.  Same shape as drivers/udp.py: send(datagram) puts one
# Transmit Request (0x10) to the coordinator (dest64 0, dest16 0x0000) on the
# stream; recv(timeout_ms) returns the payloads of Receive Packets (0x90)
# from the coordinator (source 16-bit address 0x0000, and the coordinator's
# 64-bit address when one was given) and counts any other source as foreign.
# Transmit Status (0x8B) frames are only counted (delivered, too_large for
# 0x74, failures by delivery code): the ATLS link layer retransmits, this
# driver never does.  Modem Status 0x02/0x03 set `joined` True/False (a reset,
# 0x00/0x01, sets False until the module rejoins).
#
# configure(now_ms) is a small state machine stepped without blocking:
#   probe     AT AP (frame id 1: its frames never contain bytes that AP=2
#             escapes, so it works whatever AP the module has)
#   set_ap    AT AP <1|2> when the module's AP differs from the board's
#   query     AT NP (max payload -> mtu), SH + SL (-> address64), AI (-> joined)
#   ready
# When the probe gets no answer (a factory-fresh module is in transparent
# mode, AP=0) it falls back once to command mode: guard time, "+++", guard
# time, "OK\r", then ATAP<n>, ATWR, ATCN, and probes again.  Every wait is
# bounded (at_timeout_ms x at_retries per command, guard_ms for command
# mode); a module that stays silent raises XBeeError.  Time is a monotonic
# millisecond clock (atls.eventloop.Clock unless one is given: pass the
# session's so that configure(now_ms) can take its readings).  UART id,
# pins, speed and AP come from the board config (from_board), never from
# constants here.
import time

from atls import xbee as X
from atls.eventloop import Clock
from atls.xbee import XBeeError

try:
    import select
except ImportError:  # pragma: no cover
    select = None

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_PROBE_ID = const(1)  # 08 01 41 50 / 88 01 41 50 00 0v: nothing to escape
_SET_AP_ID = const(2)
_RXQ_MAX = const(32)
_CHUNKS = const(16)
_SILENT = "XBee module does not answer (API probe, +++ fallback)"


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:  # CPython
        time.sleep(ms / 1000)


class XBeeTransport:
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

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, now_ms=None):
        # One non-blocking step; True once ready.  Raises XBeeError when the
        # module does not answer within the bounded retries.
        now = self.clock() if now_ms is None else now_ms
        self._pump(self._rxq)
        st = self.state
        if st == "ready":
            return True
        if st == "cmd":
            self._command_mode(now)
            return False
        if st == "probe":
            try:
                r = self._request(now, b"AP", b"", _PROBE_ID)
            except XBeeError:
                if self._tried_cmd:
                    raise XBeeError(_SILENT)
                self._tried_cmd = True
                self._enter_command_mode(now)
                return False
            if r is None:
                return False
            self.module_ap = r[1][0] if r[1] else None
            if self.module_ap == (2 if self.escaped else 1):
                self._start_query()
            else:
                self.state = "set_ap"
            return False
        if st == "set_ap":
            want = 2 if self.escaped else 1
            r = self._request(now, b"AP", bytes((want,)), _SET_AP_ID)
            if r is not None:
                self.module_ap = want
                self._dec = X.FrameDecoder(self.escaped)
                self._start_query()
            return False
        # query: one AT command at a time, in order
        cmd = self._steps[0]
        r = self._request(now, cmd, b"")
        if r is None:
            return False
        v = r[1]
        if cmd == b"NP":
            self.mtu = int.from_bytes(v, "big")
        elif cmd == b"SH":
            self._sh = bytes(v)
        elif cmd == b"SL":
            self.address64 = self._sh + bytes(v)
        self._steps = self._steps[1:]
        if not self._steps:
            self.state = "ready"
            return True
        return False

    def wait_ready(self, timeout_ms=15000):
        t0 = self.clock()
        while not self.configure():
            if (self.clock() - t0) > timeout_ms:
                raise XBeeError("XBee module not configured within %d ms" % timeout_ms)
            self._wait(10)
        return self

    def wait_joined(self, timeout_ms, poll_ms=1000):
        # Waits for Modem Status 0x02, asking AI again every poll_ms.
        t0 = self.clock()
        last = t0 - poll_ms
        while not self.joined:
            now = self.clock()
            if (now - t0) >= timeout_ms:
                break
            if (now - last) >= poll_ms:
                last = now
                self._write(X.encode_frame(X.at_command(self._next_fid(), b"AI"), self.escaped))
            self._wait(min(50, timeout_ms))
            self._pump(self._rxq)
        return bool(self.joined)

    def at(self, command, parameter=b""):
        # Blocking AT command, bounded by at_timeout_ms x (at_retries + 1):
        # returns the value; XBeeError on an error status or no answer.
        if isinstance(command, str):
            command = command.encode()
        self._req = None
        while True:
            r = self._request(self.clock(), command, parameter)
            if r is not None:
                return r[1]
            self._wait(20)
            self._pump(self._rxq)

    # -- internals -------------------------------------------------------------------------------
    def _next_fid(self):
        self._fid = self._fid % 255 + 1
        if self._fid <= _SET_AP_ID:
            self._fid = _SET_AP_ID + 1
        return self._fid

    def _start_query(self):
        self.state = "query"
        self._steps = [b"NP", b"SH", b"SL", b"AI"]

    def _request(self, now, cmd, param, fid=None):
        # Sends cmd once and again on timeout; (status, value) when answered
        # OK, None while waiting, XBeeError on an error status or no answer.
        q = self._req
        if q is None or q[1] != cmd:
            q = self._req = [fid or self._next_fid(), cmd, param, now, self.at_retries + 1]
            self._resp = None
        r = self._resp
        if r is not None and r[0] == q[0]:
            self._req = self._resp = None
            if r[1] != X.AT_OK:
                raise XBeeError("AT %s failed with status %d" % (cmd.decode(), r[1]))
            return (r[1], r[2])
        if (now - q[3]) >= 0:
            if q[4] == 0:
                self._req = None
                raise XBeeError("no answer to AT %s" % cmd.decode())
            q[4] -= 1
            q[3] = now + self.at_timeout_ms
            self._write(X.encode_frame(X.at_command(q[0], cmd, param), self.escaped))
        return None

    def _enter_command_mode(self, now):
        want = b"2" if self.escaped else b"1"
        self.state = "cmd"
        # (bytes to send, expect "OK\r" within ms) after a guard-time silence
        self._steps = [
            [b"+++", self.guard_ms + self.at_timeout_ms],
            [b"ATAP" + want + b"\r", self.at_timeout_ms],
            [b"ATWR\r", self.at_timeout_ms],
            [b"ATCN\r", self.at_timeout_ms],
        ]
        self._cmd_at = now + self.guard_ms  # when to send the first step
        self._text = b""

    def _command_mode(self, now):
        if self._cmd_at is not None:
            if (now - self._cmd_at) < 0:
                return
            self._text = b""
            self._write(self._steps[0][0])
            self._deadline = now + self._steps[0][1]
            self._cmd_at = None
            return
        if b"OK\r" in self._text:
            self._steps = self._steps[1:]
            if not self._steps:
                self.state = "probe"
                self._dec = X.FrameDecoder(self.escaped)
                self._req = None
                return
            self._cmd_at = now
            return
        if b"ERROR" in self._text or (now - self._deadline) >= 0:
            raise XBeeError(_SILENT)

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


class SocketStream:
    # A TCP socket as a non-blocking byte stream (unix port and CPython):
    # the device modules of sim/radio.py listen on loopback ports.
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
            _sleep_ms(1)
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


_UART_KEYS = ("tx", "rx", "rts", "cts", "flow", "rxbuf", "txbuf")


def from_board(cfg, **kw):
    # cfg: the board config's "xbee" section, e.g.
    #   {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "ap": 2,
    #    "at_timeout_ms": 500, "guard_ms": 1100, "coordinator64": "0013A200..."}
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
