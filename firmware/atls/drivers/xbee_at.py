"""AT configuration of an XBee 3 module in API mode, as a part of
atls.drivers.xbee.XBeeTransport (a mixin: one object with the frame I/O).

configure(now_ms) is a small state machine stepped without blocking:
  probe     AT AP (frame id 1: its frames never contain bytes that AP=2
            escapes, so it works whatever AP the module has)
  set_ap    AT AP <1|2> when the module's AP differs from the board's
  save      AT WR after set_ap: the AP survives a module reset
  query     AT NP (max payload -> mtu), SH + SL (-> address64), AI (-> joined)
  ready
When the probe gets no answer (a factory-fresh module is in transparent
mode, AP=0) it falls back once to command mode: guard time, "+++", guard
time, "OK\\r", then ATAP<n>, ATWR, ATCN, and probes again.  Every wait is
bounded (at_timeout_ms x at_retries per command, guard_ms for command mode);
a module that stays silent raises XBeeError.  wait_ready, wait_joined and
at() are the blocking forms.  Frame ids 1 and 2 are reserved for the probe
and the AP change; _next_fid hands out the others.  A module reset (Modem
Status 0x00/0x01, see _module_reset) once configured, or while set_ap, save
or query ran, starts the configuration again from probe.
"""

from atls import xbee as X
from atls.xbee import XBeeError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_PROBE_ID = const(1)  # 08 01 41 50 / 88 01 41 50 00 0v: nothing to escape
_SET_AP_ID = const(2)
_SILENT = "XBee module does not answer (API probe, +++ fallback)"


class XBeeConfig:
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
                self.state = "save"
            return False
        if st == "save":
            if self._request(now, b"WR", b"") is not None:
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

    def _module_reset(self):
        # Modem Status 0x00/0x01: the module restarted with its saved settings
        # (an AP set without WR, a replaced module): configure it again.
        if self.state == "probe" or self.state == "cmd":
            return  # configuring already (a module sends 0x00 at power-up)
        self.reconfigures += 1
        self.state = "probe"
        self._req = self._resp = None
        self._tried_cmd = False

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
