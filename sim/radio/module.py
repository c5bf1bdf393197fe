"""One emulated XBee 3 Zigbee module: its UART and its network state.

The module speaks real API frames (firmware/atls/xbee.py) on a byte stream,
as a module does on its UART: bytes in through serial_in(), bytes out
through the sink given to attach().  Sans-I/O: sim/radio/serial_ends.py moves
its bytes over a pty or TCP, and the medium (sim/radio/medium.py) carries its
Transmit Requests.  AT commands are answered from sim/radio/at_commands.py,
in API frames or, in transparent mode (AP=0), in command mode
(sim/radio/command_mode.py).

Joining: an unjoined device module keeps scanning and joins (after
join_delay_ms) while the coordinator's join window is open, its ID is 0 or the
coordinator's and its EE equals the coordinator's; it then emits Modem Status
0x02.  A module that was joined before rejoins after a restart without a
window (ZigBee rejoin); one that left (0x03) needs a window again.  A module
created with joined=True starts joined (as if paired earlier).

Security (EE=1, docs/BOARDS.md): the coordinator holds the network key NK
(random unless written) and the trust-center link key KY.  A device joins an
encrypted network only with the right link key (a coordinator with KY=0
sends the network key in the clear to anyone, as Digi documents): its KY
equal to the coordinator's, or a key registered for its address on the
coordinator (Register Joining Device 0x24, a link key or an install code);
with DC bit 0 the device's link key is derived from its install code (I?).
The emulator stands SHA-256 in for Zigbee's AES-MMO hash (only equality of
keys matters here).  A refused join reports AI 0xAF.  A joined device holds
the network key: the medium delivers, on an encrypted network, only frames
whose sender holds it (sim/radio/medium.py).

Settings: a restart (power cycle, watchdog, FR) comes back with the API
mode last written to flash with WR (`saved_ap`; the mode it was created
with until then), as a real module reverts every unsaved setting; the other
settings are kept across restarts here.
"""

import hashlib
import random

from atls import xbee as X
from sim.radio import at_commands
from sim.radio.addresses import addr64, hex64
from sim.radio.command_mode import CommandMode

NP_PLAIN = 84  # XBee 3 Zigbee NP without encryption (Digi XBee 3 Zigbee user guide, NP)
NP_ENCRYPTED = 66  # with network encryption (EE=1)
COUNTERS = (
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
    "no_key",
    "registered",
)
ZERO_KEY = bytes(16)
BAD_LINK_KEY = 0xAF  # AI: secure join error, joining device lacks the right link key


def link_key_from_install_code(code):
    """Stand-in for Zigbee's AES-MMO hash of an install code (16 + 2 bytes)."""
    return hashlib.sha256(b"zigbee-ic" + bytes(code[:16])).digest()[:16]


# Register Joining Device (XBee 3 Zigbee user guide, trust center); built by
# host_tools.install_code.register_device_frame
REGISTER_DEVICE = 0x24
REGISTER_STATUS = 0xA4


def _crc16_x25(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


class Module:
    """One emulated XBee 3 Zigbee module: the serial side (bytes in, bytes
    out through `sink`) and its network state.  Sans-I/O: the transports
    move its bytes."""

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
        self.saved_ap = api_mode  # what WR wrote to flash: the AP after a restart
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
        self._command_mode = CommandMode(self)
        self._pending_ap = None
        self.counters = {k: 0 for k in COUNTERS}
        self.eo = 0
        self.dc = 0
        self.ky = ZERO_KEY
        # keys from their own RNG: the loss and address draws stay as they were
        self.key_rng = random.Random("keys:%s:%s" % (medium.seed, hex64(self.addr64)))
        self.nk = self.key_rng.randbytes(16) if coordinator else None  # devices: on joining
        code = self.key_rng.randbytes(16)
        self.install_code = code + _crc16_x25(code).to_bytes(2, "little")  # I?
        self.registered = {}  # coordinator: addr64 -> link key (0x24 frames)

    # -- serial side -----------------------------------------------------------------
    def attach(self, sink):
        """sink(bytes) receives everything the module writes to its UART;
        None: nobody listens and output is lost (counted)."""
        self.sink = sink

    def write(self, data):
        """Write raw bytes to the UART (command-mode text, encoded frames)."""
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
            self.write(X.encode_frame(frame_data, self.ap == 2))

    def serial_in(self, data):
        if self.silent:
            return
        self.counters["serial_in_bytes"] += len(data)
        if self.ap == 0:
            self._command_mode.feed(data)
            return
        for fd in self._decoder.feed(data):
            self._on_frame(fd)

    def decoder_counters(self):
        """The API frame decoder's counters (a copy)."""
        return dict(self._decoder.counters)

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
            self.apply_deferred()
        elif f[0] == "unknown" and f[1] == REGISTER_DEVICE and self.coordinator and len(fd) > 13:
            fid, a64, options, key = fd[1], bytes(fd[2:10]), fd[12], bytes(fd[13:])
            self.registered[a64] = (
                link_key_from_install_code(key) if options & 1 else key.rjust(16, b"\0")
            )
            self.counters["registered"] += 1
            if fid:
                self.emit(bytes((REGISTER_STATUS, fid, 0)))
        elif f[0] == "tx_request":
            _, fid, dest64, dest16, _radius, options, payload = f
            self.medium.transmit(self, fid, dest64, dest16, options, payload)
        else:
            self.counters["unknown_frames"] += 1

    # -- AT commands -------------------------------------------------------------------
    def at(self, cmd, p):
        """-> (status, value).  A change that must follow the response (AP)
        waits for apply_deferred()."""
        self.counters["at_commands"] += 1
        return at_commands.answer(self, bytes(cmd).upper(), p)

    def defer_api_mode(self, mode):
        """Switch to API mode `mode` once the current response is out."""
        self._pending_ap = mode

    def write_settings(self):
        """WR: the API mode (a change still pending included) survives a restart."""
        self.saved_ap = self.ap if self._pending_ap is None else self._pending_ap

    def apply_deferred(self):
        if self._pending_ap is not None:
            self._set_ap(self._pending_ap)
            self._pending_ap = None

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
        if c.ee and not self.has_link_key(c):
            return BAD_LINK_KEY
        if self.network is not True and self.network != (c.pan_id, c.ee) and not c.join_open():
            return 0x23
        return 0

    def link_key(self):
        return link_key_from_install_code(self.install_code) if self.dc & 1 else self.ky

    def has_link_key(self, c):
        """Would coordinator c hand this device the network key?"""
        key = self.link_key()
        if c.ky == ZERO_KEY or c.registered.get(self.addr64) == key:
            return True  # KY=0 on the coordinator: the network key goes out in the clear
        return key == c.ky

    def holds_network_key(self):
        c = self.medium.coordinator
        if c is None or not c.ee:
            return True
        if self.nk is None and self.network is True:  # created joined: holds the key
            return self.joined
        return bool(self.ee and self.joined and self.nk == c.nk)

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
        self.nk = c.nk if c.ee else None  # transported under the link key
        c.registered.pop(self.addr64, None)  # a registration is used once
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
        self._command_mode.reset()
        self._pending_ap = None
        self._set_ap(self.saved_ap)  # unsaved settings are lost
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
