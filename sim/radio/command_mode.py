"""Transparent mode (AP=0) of an emulated module: command mode only.

"+++" framed by silence of at least the guard time GT on both sides enters
command mode ("OK\\r"); then each ATxx line (CR-terminated) is answered:
"OK\\r" for a write or an empty value, the value in hex ("54\\r"), or as text
for NI, "ERROR\\r" for a failure; ATCN, or CT of silence, leaves command
mode.  Other bytes would be data in a real module: here they are counted
(transparent_bytes) and dropped.  A change of AP made in command mode applies
when command mode ends.
"""

from atls import xbee as X
from sim.radio import at_commands


class CommandMode:
    def __init__(self, module):
        self.module = module
        self.clock = module.clock
        self.active = False
        self._line = b""
        self._plus = 0
        self._last_rx = -1e9
        self._timer = None

    def feed(self, data):
        """Bytes that arrived on the UART in transparent mode."""
        now = self.clock.time()
        for b in data:
            if self.active:
                self._command_byte(b)
            elif b == 0x2B and (self._plus or (now - self._last_rx) * 1000 >= self.module.gt_ms):
                self._plus += 1
                if self._plus == 3:
                    self.clock.call_later(self.module.gt_ms / 1000, self._plus_check, now)
            else:
                self._plus = 0
                self.module.counters["transparent_bytes"] += 1  # no data mode: dropped
            self._last_rx = now

    def reset(self):
        """Power cycle: out of command mode, no "+" counted."""
        self.exit()
        self._plus = 0

    def exit(self):
        self.active = False
        self._line = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.module.apply_deferred()

    def _plus_check(self, t3):
        if self._plus == 3 and self._last_rx == t3 and not self.active:
            self._plus = 0
            self.active = True
            self._line = b""
            self._arm_ct()
            self.module.write(b"OK\r")

    def _arm_ct(self):
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_later(self.module.ct_ms / 1000, self.exit)

    def _command_byte(self, b):
        write = self.module.write
        if b != 0x0D:
            self._line = (self._line + bytes((b,)))[-64:]
            return
        line, self._line = self._line.strip(), b""
        self._arm_ct()
        if not line.upper().startswith(b"AT"):
            write(b"ERROR\r")
            return
        cmd, arg = line[2:4].upper(), line[4:].strip()
        if cmd == b"CN":
            write(b"OK\r")
            self.exit()
            return
        text = at_commands.text_parameter(cmd)
        if text:
            param = arg
        else:
            try:
                param = bytes.fromhex(("0" * (len(arg) % 2)) + arg.decode()) if arg else b""
            except ValueError:
                write(b"ERROR\r")
                return
        status, value = self.module.at(cmd, param)
        if status != X.AT_OK:
            write(b"ERROR\r")
        elif param or not value and not text:
            write(b"OK\r")
        elif text:
            write(value + b"\r")
        else:
            write(b"%X\r" % int.from_bytes(value, "big"))
