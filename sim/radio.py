"""A simulated 802.15.4 / ZigBee medium joining emulated XBee 3 Zigbee modules.

    python -m sim.radio --devices 3 --loss 0.1 --latency-ms 5 --seed 1 --state-file radio.json

Each emulated module speaks real API frames (firmware/atls/xbee.py) over a
byte stream, exactly as a module does on its UART:

* the coordinator over a pty: the slave path (``state["coordinator"]["pty"]``)
  is what the gateway opens with pyserial, like /dev/ttyUSB0 (any baud rate);
  output while no process has the pty open is dropped (see PtySerial);
* each device module over its own TCP listening port on 127.0.0.1 (one port
  per module, one client at a time; a new connection replaces the old one, as
  a device reboot re-opens its UART).  Nothing is sent before the API frames.

Modules (addresses 0013A200xxxxxxxx; coordinator 0013A20040000000 + n, devices
0013A20041000001 ...) answer AT commands through Local AT Command frames
(0x08 -> 0x88) and, in transparent mode (AP=0), through command mode
("+++" between guard times GT, then ATxx lines, ATCN):

  AP  API mode 0/1/2 (an API-frame change applies after its response)
  NP  max unicast RF payload: 84, or 66 when network encryption EE=1
  SH SL  own 64-bit address    MY  16-bit network address (0xFFFE unjoined)
  AI  association: 00 joined, 21 no PAN, 22 wrong ID, 23 join closed,
      27 security mismatch (EE), FF joining
  NJ  join time (s).  On the coordinator, writing NJ opens the join window for
      NJ seconds (0xFF: always open, 0: close)
  CB  commissioning button: 2 on the coordinator opens joining for 60 s;
      1 on a device starts a join attempt; 4 on a device leaves the network
  EE ID CE NI DH DL GT CT VR HV  stored/reported; NR (device: leave and
      rescan), AC WR (no-op), FR (software reset)
  anything else: status 2 (invalid command); a bad value: status 3

Joining: an unjoined device module keeps scanning and joins (after
join_delay_ms) while the coordinator's join window is open, its ID is 0 or the
coordinator's and its EE equals the coordinator's; it then emits Modem Status
0x02.  A module that was joined before rejoins after a restart without a
window (ZigBee rejoin); one that left (0x03) needs a window again.  A module
created with joined=True starts joined (as if paired earlier).

Radio model.  A Transmit Request (0x10) whose payload exceeds the sender's NP
gets Transmit Status 0x74 and nothing is sent (no APS fragmentation); an
unjoined sender gets 0x22, an unknown destination 0x24.  Otherwise the frame
occupies the shared channel for its airtime, (payload + overhead_bytes) x 8 /
250 kbit/s (overhead 30 bytes: 6 PHY + 11 MAC incl. FCS + 8 NWK + 5 APS),
transmissions are serialised (an ideal CSMA, no collisions), and the outcome
is known latency_ms after the frame leaves the air.  The frame is lost with
probability `loss` (the module's own MAC/APS retries are folded into that
probability): the sender then gets status 0x21 (network ACK failure); else the
receiver emits a Receive Packet (0x90) with the sender's 64- and 16-bit
addresses and the sender gets 0x00.  Loss draws come from one RNG per sending
module seeded with (seed, address), so a run is reproducible whatever the
interleaving of modules.  Lost frames still count as airtime.

Hooks: `medium.taps` is a list of callables tap(event) run when a frame goes
on the air, event = {"time", "src", "dst", "src16", "payload", "kind"}; a tap
returns None (observe), new payload bytes (tamper) or DROP (lost on the air).
`medium.inject(src64, dst64, payload)` puts a forged frame on the air;
`medium.restart(addr)`, `medium.leave(addr)`, `module.silent = True` model
power cycles, leaves and dead modules.  `medium.stats()` is a JSON-able dump.

Time comes from a clock object with time() and call_later(): the asyncio loop
(real time) or VirtualClock (deterministic, for tests).
"""

import argparse
import asyncio
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

from atls import xbee as X  # noqa: E402

DROP = False
COORDINATOR_BASE = 0x0013A20040000000
DEVICE_BASE = 0x0013A20041000000
NP_PLAIN = 84  # XBee 3 Zigbee NP without encryption (shared/reference/README.md)
NP_ENCRYPTED = 66  # with network encryption (EE=1)
_READ_ONLY = (b"NP", b"SH", b"SL", b"MY", b"AI", b"VR", b"HV", b"OP", b"OI")


def hex64(addr):
    return bytes(addr).hex().upper()


def addr64(value):
    """bytes(8) from bytes, an int or a 16-digit hex string."""
    if isinstance(value, int):
        return value.to_bytes(8, "big")
    if isinstance(value, str):
        value = bytes.fromhex(value)
    if len(value) != 8:
        raise ValueError("64-bit address must be 8 bytes")
    return bytes(value)


class VirtualClock:
    """Deterministic stand-in for the asyncio loop's time()/call_later()."""

    class _Handle:
        def __init__(self):
            self.cancelled = False

        def cancel(self):
            self.cancelled = True

    def __init__(self):
        self.now = 0.0
        self._q = []
        self._seq = 0

    def time(self):
        return self.now

    def call_later(self, delay, fn, *args):
        h = self._Handle()
        self._seq += 1
        heapq.heappush(self._q, (self.now + max(0.0, delay), self._seq, h, fn, args))
        return h

    def call_soon(self, fn, *args):
        return self.call_later(0, fn, *args)

    def advance(self, seconds):
        """Run every callback due within the next `seconds`, in time order."""
        end = self.now + seconds
        while self._q and self._q[0][0] <= end:
            when, _, h, fn, args = heapq.heappop(self._q)
            self.now = max(self.now, when)
            if not h.cancelled:
                fn(*args)
        self.now = end

    def run_until_idle(self, limit=3600.0):
        while self._q and self._q[0][0] - self.now <= limit:
            self.advance(self._q[0][0] - self.now)


class Module:
    """One emulated XBee 3 Zigbee module: the serial side (bytes in, bytes
    out through `sink`) and its network state.  Sans-I/O: the transports
    below move its bytes."""

    def __init__(
        self,
        medium,
        address,
        coordinator=False,
        api_mode=1,
        ee=0,
        pan_id=0,
        joined=False,
        ni="",
        guard_ms=1000,
    ):
        self.medium = medium
        self.clock = medium.clock
        self.addr64 = addr64(address)
        self.coordinator = coordinator
        self.ap = api_mode
        self.ee = ee
        self.pan_id = pan_id
        self.ni = ni.encode() if isinstance(ni, str) else bytes(ni)
        self.nj = 0
        self.gt_ms = guard_ms
        self.ct_ms = 10000
        self.dh = self.dl = 0
        self.sink = None
        self.silent = False
        self.rng = random.Random("%s:%s" % (medium.seed, hex64(self.addr64)))
        self.joined = coordinator or joined
        # the network this device last joined (kept across restarts); True:
        # created joined, i.e. paired to whatever network the coordinator runs
        self.network = True if joined and not coordinator else None
        self.my16 = 0x0000 if coordinator else (self._draw16() if joined else 0xFFFE)
        self.join_until = 0.0  # coordinator: join window end (loop time)
        self._joining = None
        self._decoder = X.FrameDecoder(api_mode == 2)
        self._cmd_mode = False
        self._line = b""
        self._plus = 0
        self._last_rx = -1e9
        self._cmd_timer = None
        self._pending_ap = None
        self.counters = {
            k: 0
            for k in (
                "tx_frames",
                "tx_bytes",
                "air_bytes",
                "airtime_ms",
                "rx_frames",
                "rx_bytes",
                "delivered",
                "lost",
                "too_large",
                "not_joined",
                "unroutable",
                "at_commands",
                "joins",
                "leaves",
                "restarts",
                "serial_in_bytes",
                "serial_out_bytes",
                "serial_dropped_bytes",
                "transparent_bytes",
                "unknown_frames",
            )
        }

    # -- serial side -----------------------------------------------------------------
    def attach(self, sink):
        """sink(bytes) receives everything the module writes to its UART;
        None: nobody listens and output is lost (counted)."""
        self.sink = sink

    def _write(self, data):
        if self.silent:
            return
        if self.sink is None:
            self.counters["serial_dropped_bytes"] += len(data)
            return
        self.counters["serial_out_bytes"] += len(data)
        self.sink(data)

    def emit(self, frame_data):
        """Write one API frame in the module's current mode (none in AP=0)."""
        if self.ap in (1, 2):
            self._write(X.encode_frame(frame_data, self.ap == 2))

    def serial_in(self, data):
        if self.silent:
            return
        self.counters["serial_in_bytes"] += len(data)
        if self.ap == 0:
            self._transparent_in(data)
            return
        for fd in self._decoder.feed(data):
            self._on_frame(fd)

    def _set_ap(self, mode):
        self.ap = mode
        self._decoder = X.FrameDecoder(mode == 2)

    def _on_frame(self, fd):
        try:
            f = X.parse(fd)
        except X.DecodeError:
            self.counters["unknown_frames"] += 1
            return
        if f[0] == "at_command":
            _, fid, cmd, param = f
            status, value = self.at(cmd, param)
            self.emit(X.at_response(fid, cmd, status, value))
            self._apply_pending()
        elif f[0] == "tx_request":
            _, fid, dest64, dest16, _radius, options, payload = f
            self.medium.transmit(self, fid, dest64, dest16, options, payload)
        else:
            self.counters["unknown_frames"] += 1

    def _apply_pending(self):
        if self._pending_ap is not None:
            self._set_ap(self._pending_ap)
            self._pending_ap = None

    # -- transparent mode: command mode only -----------------------------------------
    def _transparent_in(self, data):
        now = self.clock.time()
        for b in data:
            if self._cmd_mode:
                self._command_byte(b)
            elif b == 0x2B and (self._plus or (now - self._last_rx) * 1000 >= self.gt_ms):
                self._plus += 1
                if self._plus == 3:
                    self.clock.call_later(self.gt_ms / 1000, self._plus_check, now)
            else:
                self._plus = 0
                self.counters["transparent_bytes"] += 1  # no data mode: dropped
            self._last_rx = now

    def _plus_check(self, t3):
        if self._plus == 3 and self._last_rx == t3 and not self._cmd_mode:
            self._plus = 0
            self._cmd_mode = True
            self._line = b""
            self._arm_ct()
            self._write(b"OK\r")

    def _arm_ct(self):
        if self._cmd_timer is not None:
            self._cmd_timer.cancel()
        self._cmd_timer = self.clock.call_later(self.ct_ms / 1000, self._exit_command_mode)

    def _exit_command_mode(self):
        self._cmd_mode = False
        self._line = b""
        if self._cmd_timer is not None:
            self._cmd_timer.cancel()
            self._cmd_timer = None
        self._apply_pending()

    def _command_byte(self, b):
        if b != 0x0D:
            self._line = (self._line + bytes((b,)))[-64:]
            return
        line, self._line = self._line.strip(), b""
        self._arm_ct()
        if not line.upper().startswith(b"AT"):
            self._write(b"ERROR\r")
            return
        cmd, arg = line[2:4].upper(), line[4:].strip()
        if cmd == b"CN":
            self._write(b"OK\r")
            self._exit_command_mode()
            return
        if cmd == b"NI":
            param = arg
        else:
            try:
                param = bytes.fromhex(("0" * (len(arg) % 2)) + arg.decode()) if arg else b""
            except ValueError:
                self._write(b"ERROR\r")
                return
        status, value = self.at(cmd, param)
        if status != X.AT_OK:
            self._write(b"ERROR\r")
        elif param or not value and cmd not in (b"NI",):
            self._write(b"OK\r")
        elif cmd == b"NI":
            self._write(value + b"\r")
        else:
            self._write(b"%X\r" % int.from_bytes(value, "big"))

    # -- AT commands -------------------------------------------------------------------
    def at(self, cmd, p):
        """-> (status, value).  Changes that must follow the response (AP)
        are left in _pending_ap."""
        self.counters["at_commands"] += 1
        cmd = bytes(cmd).upper()
        n = int.from_bytes(p, "big") if p else None
        if p and cmd in _READ_ONLY:
            return X.AT_INVALID_PARAMETER, b""
        if cmd == b"AP":
            if n is None:
                return X.AT_OK, bytes((self.ap,))
            if len(p) != 1 or n > 2:
                return X.AT_INVALID_PARAMETER, b""
            self._pending_ap = n
            return X.AT_OK, b""
        if cmd == b"NP":
            return X.AT_OK, self.max_payload().to_bytes(2, "big")
        if cmd == b"SH":
            return X.AT_OK, self.addr64[:4]
        if cmd == b"SL":
            return X.AT_OK, self.addr64[4:]
        if cmd == b"MY":
            return X.AT_OK, self.my16.to_bytes(2, "big")
        if cmd == b"AI":
            return X.AT_OK, bytes((self.association(),))
        if cmd in (b"OP", b"OI"):  # operating PAN: 64-bit, and a 16-bit one derived here
            c = self.medium.coordinator
            pan = c.pan_id if self.joined and c is not None else 0
            return X.AT_OK, pan.to_bytes(8, "big") if cmd == b"OP" else (pan & 0xFFFF).to_bytes(
                2, "big"
            )
        if cmd == b"VR":
            return X.AT_OK, b"\x10\x0a"
        if cmd == b"HV":
            return X.AT_OK, b"\x42\x47"
        if cmd == b"NJ":
            if n is None:
                return X.AT_OK, bytes((self.nj,))
            if len(p) != 1:
                return X.AT_INVALID_PARAMETER, b""
            self.nj = n
            if self.coordinator:
                self.open_join(None if n == 0xFF else n)
            return X.AT_OK, b""
        if cmd == b"CB":
            if n not in (1, 2, 4):
                return X.AT_INVALID_PARAMETER, b""
            if self.coordinator and n == 2:
                self.open_join(60)
            elif not self.coordinator and n == 4 and self.joined:
                self.clock.call_soon(self.leave)
            elif not self.coordinator and n == 1:
                self.clock.call_soon(self.try_join)
            return X.AT_OK, b""
        if cmd == b"NR":
            if n not in (None, 0, 1):
                return X.AT_INVALID_PARAMETER, b""
            if not self.coordinator and self.joined:
                self.clock.call_soon(self.leave)
            return X.AT_OK, b""
        if cmd in (b"EE", b"ID"):
            if n is None:
                v = self.ee if cmd == b"EE" else self.pan_id
                return X.AT_OK, v.to_bytes(1 if cmd == b"EE" else 8, "big")
            if (cmd == b"EE" and (len(p) != 1 or n > 1)) or len(p) > 8:
                return X.AT_INVALID_PARAMETER, b""
            old = (self.ee, self.pan_id)
            if cmd == b"EE":
                self.ee = n
            else:
                self.pan_id = n
            if old != (self.ee, self.pan_id):
                self.clock.call_soon(self.medium.network_changed, self)
            return X.AT_OK, b""
        if cmd == b"CE":
            if n is None:
                return X.AT_OK, bytes((1 if self.coordinator else 0,))
            if n != (1 if self.coordinator else 0):
                return X.AT_INVALID_PARAMETER, b""  # the role is fixed in the emulator
            return X.AT_OK, b""
        if cmd == b"NI":
            if not p:
                return X.AT_OK, self.ni
            if len(p) > 20:
                return X.AT_INVALID_PARAMETER, b""
            self.ni = bytes(p)
            return X.AT_OK, b""
        if cmd in (b"DH", b"DL"):
            if n is None:
                return X.AT_OK, (self.dh if cmd == b"DH" else self.dl).to_bytes(4, "big")
            if len(p) > 4:
                return X.AT_INVALID_PARAMETER, b""
            setattr(self, cmd.decode().lower(), n)
            return X.AT_OK, b""
        if cmd in (b"GT", b"CT"):
            attr = "gt_ms" if cmd == b"GT" else "ct_ms"
            scale = 1 if cmd == b"GT" else 100
            if n is None:
                return X.AT_OK, (getattr(self, attr) // scale).to_bytes(2, "big")
            if len(p) > 2 or n < 2:
                return X.AT_INVALID_PARAMETER, b""
            setattr(self, attr, n * scale)
            return X.AT_OK, b""
        if cmd in (b"AC", b"WR"):
            return X.AT_OK, b""
        if cmd == b"FR":
            self.clock.call_later(0.01, self.restart, X.WATCHDOG_RESET)
            return X.AT_OK, b""
        return X.AT_INVALID_COMMAND, b""

    # -- network state -------------------------------------------------------------------
    def max_payload(self):
        return NP_ENCRYPTED if self.ee else NP_PLAIN

    def _draw16(self):
        while True:
            v = self.rng.randrange(0x0001, 0xFFF8)
            if all(m.my16 != v for m in self.medium.modules.values()):
                return v

    def compatible(self):
        """AI code this device would get on its next attempt (0: can join now)."""
        c = self.medium.coordinator
        if c is None:
            return 0x21
        if self.pan_id not in (0, c.pan_id):
            return 0x22
        if self.ee != c.ee:
            return 0x27
        if self.network is not True and self.network != (c.pan_id, c.ee) and not c.join_open():
            return 0x23
        return 0

    def association(self):
        if self.joined:
            return 0x00
        if self._joining is not None:
            return 0xFF
        return self.compatible()

    def join_open(self):
        return self.join_until is None or self.clock.time() < self.join_until

    def open_join(self, seconds):
        """Coordinator: open the join window for `seconds` (None: for ever, 0: close)."""
        if seconds is None:
            self.join_until = None
        else:
            self.join_until = self.clock.time() + seconds
        if seconds != 0:
            self.medium.join_window_opened()

    def try_join(self):
        if self.coordinator or self.joined or self._joining is not None:
            return
        if self.compatible() == 0:
            self._joining = self.clock.call_later(self.medium.join_delay_ms / 1000, self._joined)

    def _joined(self):
        self._joining = None
        if self.joined or self.compatible() != 0:
            return
        c = self.medium.coordinator
        self.joined = True
        self.network = (c.pan_id, c.ee)
        self.my16 = self._draw16()
        self.counters["joins"] += 1
        self.emit(X.modem_status(X.JOINED))

    def leave(self, rejoin=True):
        """Leave the network (Modem Status 0x03); keeps scanning if rejoin."""
        if self._joining is not None:
            self._joining.cancel()
            self._joining = None
        was = self.joined
        self.joined = False
        self.network = None
        self.my16 = 0xFFFE
        if was:
            self.counters["leaves"] += 1
            self.emit(X.modem_status(X.DISASSOCIATED))
        if rejoin:
            self.try_join()

    def restart(self, reason=X.HARDWARE_RESET):
        """Power cycle: volatile state lost, settings and network kept."""
        if self._joining is not None:
            self._joining.cancel()
            self._joining = None
        self._decoder = X.FrameDecoder(self.ap == 2)
        self._exit_command_mode()
        self._plus = 0
        self.counters["restarts"] += 1
        if not self.coordinator:
            self.joined = False
            self.my16 = 0xFFFE
        self.emit(X.modem_status(reason))
        if self.coordinator:
            self.emit(X.modem_status(X.COORDINATOR_STARTED))
        else:
            self.try_join()

    def deliver(self, src, payload, options):
        self.counters["rx_frames"] += 1
        self.counters["rx_bytes"] += len(payload)
        self.emit(X.rx_packet(src.addr64, src.my16, payload, options))

    def describe(self):
        return {
            "address64": hex64(self.addr64),
            "role": "coordinator" if self.coordinator else "device",
            "ap": self.ap,
            "ee": self.ee,
            "np": self.max_payload(),
            "joined": self.joined,
            "my16": "%04X" % self.my16,
            "ai": self.association(),
        }


class Medium:
    """The shared channel: airtime, latency, loss, delivery, hooks, counters."""

    def __init__(
        self,
        clock,
        loss=0.0,
        latency_ms=5.0,
        seed=0,
        overhead_bytes=30,
        bitrate=250000,
        join_delay_ms=50,
    ):
        self.clock = clock
        self.loss = loss
        self.latency_ms = latency_ms
        self.seed = seed
        self.overhead_bytes = overhead_bytes
        self.bitrate = bitrate
        self.join_delay_ms = join_delay_ms
        self.modules = {}
        self.coordinator = None
        self.taps = []
        self.busy_until = 0.0
        self.totals = {
            "frames": 0,
            "bytes": 0,
            "air_bytes": 0,
            "airtime_ms": 0.0,
            "lost": 0,
            "tap_drops": 0,
            "tampered": 0,
            "injected": 0,
        }

    def add(self, module):
        if module.addr64 in self.modules:
            raise ValueError("address %s already on the medium" % hex64(module.addr64))
        self.modules[module.addr64] = module
        if module.coordinator:
            if self.coordinator is not None:
                raise ValueError("one coordinator per medium")
            self.coordinator = module
        return module

    def module(self, address):
        return self.modules[addr64(address)]

    def airtime_s(self, nbytes):
        return (nbytes + self.overhead_bytes) * 8.0 / self.bitrate

    # -- transmission --------------------------------------------------------------------
    def _status(self, src, fid, dest16, delivery):
        if fid:
            src.emit(X.tx_status(fid, dest16, 0, delivery, 0))

    def transmit(self, src, fid, dest64, dest16, options, payload):
        c = src.counters
        if len(payload) > src.max_payload():
            c["too_large"] += 1
            return self._status(src, fid, 0xFFFE, X.PAYLOAD_TOO_LARGE)
        if not src.joined:
            c["not_joined"] += 1
            return self._status(src, fid, 0xFFFE, X.NOT_JOINED)
        broadcast = dest64 == X.BROADCAST64
        if dest64 == X.COORDINATOR64:
            dst = self.coordinator
        elif broadcast:
            dst = None
        else:
            dst = self.modules.get(bytes(dest64))
            if dst is None:
                c["unroutable"] += 1
                return self._status(src, fid, 0xFFFE, X.ADDRESS_NOT_FOUND)
        if dst is None and not broadcast:
            c["unroutable"] += 1
            return self._status(src, fid, 0xFFFE, X.ADDRESS_NOT_FOUND)
        if dst is src:
            c["unroutable"] += 1
            return self._status(src, fid, 0xFFFE, X.SELF_ADDRESSED)
        end = self._occupy(src, len(payload))
        lost = src.rng.random() < self.loss  # one draw per frame, taps or not
        ev = {
            "time": self.clock.time(),
            "src": src.addr64,
            "src16": src.my16,
            "dst": X.BROADCAST64 if broadcast else dst.addr64,
            "payload": bytes(payload),
            "kind": "broadcast" if broadcast else "unicast",
        }
        payload, dropped = self._run_taps(ev)
        delay = end - self.clock.time() + self.latency_ms / 1000
        self.clock.call_later(
            delay, self._arrive, src, fid, dst, payload, lost or dropped, broadcast
        )

    def _occupy(self, src, nbytes):
        now = self.clock.time()
        air = self.airtime_s(nbytes)
        start = max(now, self.busy_until)
        self.busy_until = start + air
        c = src.counters
        c["tx_frames"] += 1
        c["tx_bytes"] += nbytes
        c["air_bytes"] += nbytes + self.overhead_bytes
        c["airtime_ms"] += air * 1000
        t = self.totals
        t["frames"] += 1
        t["bytes"] += nbytes
        t["air_bytes"] += nbytes + self.overhead_bytes
        t["airtime_ms"] += air * 1000
        return start + air

    def _run_taps(self, ev):
        payload = ev["payload"]
        for tap in list(self.taps):
            r = tap(ev)
            if r is DROP:
                self.totals["tap_drops"] += 1
                return payload, True
            if r is not None:
                payload = ev["payload"] = bytes(r)
                self.totals["tampered"] += 1
        return payload, False

    def _arrive(self, src, fid, dst, payload, lost, broadcast):
        if broadcast:
            if lost:
                self.totals["lost"] += 1
                src.counters["lost"] += 1
            else:
                for m in list(self.modules.values()):
                    if m is not src and m.joined:
                        m.deliver(src, payload, X.RX_BROADCAST)
                src.counters["delivered"] += 1
            return self._status(src, fid, 0xFFFD, X.DELIVERY_SUCCESS)
        if lost or not dst.joined:
            self.totals["lost"] += 1
            src.counters["lost"] += 1
            return self._status(src, fid, 0xFFFE, X.NETWORK_ACK_FAILURE)
        dst.deliver(src, payload, X.RX_ACKED)
        src.counters["delivered"] += 1
        self._status(src, fid, dst.my16, X.DELIVERY_SUCCESS)

    def inject(self, src64, dst64, payload, src16=None, options=X.RX_ACKED):
        """Forge a frame on the air: dst emits an RX Packet claiming src64
        (which need not exist) after airtime + latency; nobody gets a status."""
        dst = self.coordinator if bytes(dst64) == X.COORDINATOR64 else self.module(dst64)
        self.totals["injected"] += 1
        now = self.clock.time()
        air = self.airtime_s(len(payload))
        start = max(now, self.busy_until)
        self.busy_until = start + air
        fake = _Forged(addr64(src64), 0xFFFE if src16 is None else src16)
        self.clock.call_later(
            start + air - now + self.latency_ms / 1000,
            lambda: dst.joined and dst.deliver(fake, bytes(payload), options),
        )

    # -- network events --------------------------------------------------------------------
    def join_window_opened(self):
        for m in list(self.modules.values()):
            if not m.coordinator and not m.joined:
                m.try_join()

    def network_changed(self, module):
        """EE or ID changed: a device leaves and rescans; a coordinator
        re-forms its network, so every device leaves."""
        if module.coordinator:
            for m in list(self.modules.values()):
                if not m.coordinator:
                    m.leave()
        else:
            module.leave()

    def leave(self, address, rejoin=True):
        self.module(address).leave(rejoin)

    def restart(self, address):
        self.module(address).restart()

    def stats(self):
        return {
            "time": self.clock.time(),
            "config": {
                "loss": self.loss,
                "latency_ms": self.latency_ms,
                "seed": self.seed,
                "overhead_bytes": self.overhead_bytes,
                "bitrate": self.bitrate,
            },
            "medium": dict(self.totals),
            "modules": {
                hex64(a): dict(
                    m.describe(), counters=dict(m.counters), decoder=dict(m._decoder.counters)
                )
                for a, m in self.modules.items()
            },
        }


class _Forged:
    def __init__(self, a64, a16):
        self.addr64 = a64
        self.my16 = a16


# -- byte streams: pty (coordinator) and TCP (devices) ---------------------------------------
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


# -- a whole network ------------------------------------------------------------------------------
class RadioNetwork:
    """Coordinator on a pty + N device modules on TCP ports, on one medium
    driven by the running asyncio loop."""

    def __init__(
        self,
        devices=1,
        loss=0.0,
        latency_ms=5.0,
        seed=1,
        coordinator_ap=1,
        device_ap=1,
        ee=0,
        pan_id=0x0A715,
        joined=False,
        join_open=False,
        host="127.0.0.1",
        overhead_bytes=30,
        join_delay_ms=50,
        guard_ms=1000,
    ):
        self.n_devices = devices
        self.opts = dict(
            loss=loss,
            latency_ms=latency_ms,
            seed=seed,
            overhead_bytes=overhead_bytes,
            join_delay_ms=join_delay_ms,
        )
        self.coordinator_ap = coordinator_ap
        self.device_ap = device_ap
        self.ee = ee
        self.pan_id = pan_id
        self.joined = joined
        self.join_open = join_open
        self.host = host
        self.guard_ms = guard_ms
        self.medium = None
        self.pty = None
        self.devices = []  # (module, TcpSerial)

    async def start(self):
        loop = asyncio.get_running_loop()
        self.medium = Medium(loop, **self.opts)
        coord = self.medium.add(
            Module(
                self.medium,
                COORDINATOR_BASE + 1,
                coordinator=True,
                api_mode=self.coordinator_ap,
                ee=self.ee,
                pan_id=self.pan_id,
                guard_ms=self.guard_ms,
            )
        )
        self.pty = PtySerial(loop, coord)
        coord.emit(X.modem_status(X.COORDINATOR_STARTED))
        if self.join_open:
            coord.nj = 0xFF
            coord.open_join(None)
        for _ in range(self.n_devices):
            await self.add_device()
        return self

    async def add_device(self, address=None, api_mode=None, joined=None, ee=None, port=0):
        """Add one more device module (a new TCP port); returns its description."""
        m = self.medium
        if address is None:
            address = DEVICE_BASE + len(self.devices) + 1
        mod = m.add(
            Module(
                m,
                address,
                api_mode=self.device_ap if api_mode is None else api_mode,
                ee=self.ee if ee is None else ee,
                pan_id=self.pan_id,
                joined=self.joined if joined is None else joined,
                guard_ms=self.guard_ms,
            )
        )
        srv = await TcpSerial(mod).start(self.host, port)
        self.devices.append((mod, srv))
        mod.try_join()
        return self._dev(mod, srv)

    def _dev(self, mod, srv):
        return {"address64": hex64(mod.addr64), "host": srv.host, "port": srv.port, "ap": mod.ap}

    def describe(self):
        c = self.medium.coordinator
        return {
            "coordinator": {"address64": hex64(c.addr64), "pty": self.pty.path, "ap": c.ap},
            "devices": [self._dev(m, s) for m, s in self.devices],
            "pan_id": "%X" % self.pan_id,
            "ee": self.ee,
            "np": c.max_payload(),
            "loss": self.medium.loss,
            "latency_ms": self.medium.latency_ms,
            "seed": self.medium.seed,
        }

    def stats(self):
        s = self.medium.stats()
        for m, srv in self.devices:
            s["modules"][hex64(m.addr64)]["tcp_connections"] = srv.connections
        return s

    def close(self):
        for _, srv in self.devices:
            srv.close()
        if self.pty is not None:
            self.pty.close()

    # JSON commands (control port and BackgroundRadio.command)
    def command(self, req):
        cmd = req.get("cmd")
        m = self.medium
        if cmd == "stats":
            return {"ok": True, "stats": self.stats()}
        if cmd == "describe":
            return {"ok": True, "state": self.describe()}
        if cmd in ("leave", "restart", "join", "silence"):
            mod = m.module(req["address64"])
            if cmd == "leave":
                mod.leave(req.get("rejoin", True))
            elif cmd == "restart":
                mod.restart()
            elif cmd == "join":
                mod.try_join()
            else:
                mod.silent = bool(req.get("on", True))
            return {"ok": True, "module": mod.describe()}
        if cmd == "join_window":
            s = req.get("seconds", 60)
            m.coordinator.open_join(None if s is None else float(s))
            return {"ok": True}
        if cmd == "set":
            for k in ("loss", "latency_ms"):
                if k in req:
                    setattr(m, k, float(req[k]))
            return {"ok": True}
        return {"ok": False, "error": "unknown command %r" % cmd}


class BackgroundRadio:
    """A RadioNetwork on its own asyncio loop in a thread (tests, tools).

    with BackgroundRadio(devices=1) as radio:
        state = radio.state            # describe()
        radio.call(radio.net.medium.leave, addr)   # run in the loop thread
    """

    def __init__(self, **kw):
        self.kw = kw
        self.net = None
        self.loop = None
        self.state = None
        self._thread = None

    def start(self):
        ready = threading.Event()
        err = []

        def main():
            self.loop = asyncio.new_event_loop()
            try:
                self.net = self.loop.run_until_complete(RadioNetwork(**self.kw).start())
                self.state = self.net.describe()
            except Exception as e:  # pragma: no cover - reported below
                err.append(e)
            ready.set()
            if not err:
                self.loop.run_forever()
                self.net.close()
            self.loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self.state

    def call(self, fn, *args, timeout=10):
        """Run fn(*args) in the loop thread and return its result."""
        import concurrent.futures

        fut = concurrent.futures.Future()

        def run():
            try:
                fut.set_result(fn(*args))
            except Exception as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def command(self, req):
        return self.call(self.net.command, req)

    def stop(self):
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# -- CLI ------------------------------------------------------------------------------------------
def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


async def _control(net, reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            reply = net.command(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reply = {"ok": False, "error": str(e)}
        writer.write((json.dumps(reply) + "\n").encode())
        await writer.drain()
    writer.close()


async def _amain(a):
    net = RadioNetwork(
        devices=a.devices,
        loss=a.loss,
        latency_ms=a.latency_ms,
        seed=a.seed,
        coordinator_ap=a.coordinator_ap,
        device_ap=a.device_ap,
        ee=a.ee,
        joined=a.joined,
        join_open=a.join_open,
        guard_ms=a.guard_ms,
    )
    await net.start()
    server = await asyncio.start_server(
        lambda r, w: _control(net, r, w), "127.0.0.1", a.control_port
    )
    state = net.describe()
    state["control_port"] = server.sockets[0].getsockname()[1]
    state["pid"] = os.getpid()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if a.state_file:
        _write_json(a.state_file, state)
    print(json.dumps(state), flush=True)  # last: the state file exists when this is read
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), a.stats_interval)
        except asyncio.TimeoutError:
            pass
        if a.stats_file:
            _write_json(a.stats_file, net.stats())
    server.close()
    net.close()


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m sim.radio",
        description="Simulated ZigBee medium with emulated XBee 3 "
        "modules (coordinator on a pty, devices on TCP).",
    )
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0, help="frame loss probability")
    ap.add_argument("--latency-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--coordinator-ap", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--device-ap", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--ee", type=int, choices=(0, 1), default=0, help="network encryption")
    ap.add_argument("--joined", action="store_true", help="devices start joined (paired before)")
    ap.add_argument("--join-open", action="store_true", help="coordinator NJ=0xFF at start")
    ap.add_argument("--guard-ms", type=int, default=1000, help="command-mode guard time GT")
    ap.add_argument("--state-file", help="write the pty path, ports and addresses here (JSON)")
    ap.add_argument("--stats-file", help="write medium.stats() here every --stats-interval s")
    ap.add_argument("--stats-interval", type=float, default=1.0)
    ap.add_argument(
        "--control-port",
        type=int,
        default=0,
        help="JSON-lines control port on 127.0.0.1 (0: any free port)",
    )
    a = ap.parse_args(argv)
    asyncio.run(_amain(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
