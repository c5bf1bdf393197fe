"""XBee 3 Zigbee API frames (sans-I/O): encode, stream-decode, build, parse."""

# Theory of operation (Digi XBee 3 Zigbee RF Module User Guide, 90001539,
# "Operate in API mode" and "Frame descriptions").
#
# An API frame on the UART is  0x7E | length (uint16, big-endian) | frame
# data | checksum, where frame data starts with the frame type byte and the
# checksum is 0xFF - (sum of frame data & 0xFF); a receiver checks that the
# sum of frame data and checksum is 0xFF.  With AP=2 ("API with escaping")
# every byte after the start delimiter that is 0x7E, 0x7D, 0x11 or 0x13 is
# sent as 0x7D followed by the byte XOR 0x20, so in that mode a raw 0x7E
# always starts a frame.  AP=1 does not escape: a 0x7E can appear inside a
# frame, and the decoder resynchronises only when a length or checksum check
# fails (it then retries from the byte after the failed start delimiter, so
# a good frame that followed a damaged one is never lost).  AP=2 is the more
# robust choice on the coordinator's UART: in AP=1 a damaged frame whose
# payload embeds frame-like bytes can resynchronise onto them.
#
# FrameDecoder.feed(bytes) -> list of frame data (type byte .. last data
# byte) accepts any chunking (escapes split across calls included; frames
# and counters do not depend on how the stream is cut), never raises on
# input bytes, and counts what it drops:
#   garbage_bytes  bytes dropped outside good frames, other than the start
#                  delimiter of a frame counted below (AP=1 rescans a
#                  dropped frame from its second byte, so its bytes end up
#                  here; AP=2 drops everything up to the next 0x7E)
#   bad_checksum   complete frames whose checksum is wrong
#   bad_escape     (AP=2) 0x7D followed by a byte that is not an escaped
#                  0x7E/0x7D/0x11/0x13 (strict: a module escapes only those)
#   oversized      length field > max_len
#   empty          length field 0 (no frame type)
#   truncated      a frame cut short by a new 0x7E (AP=2: certain; AP=1: a
#                  checksum failure with a 0x7E inside the frame)
#   frames         good frames returned
# max_len defaults to 300: the largest frame data an XBee 3 Zigbee module
# sends or accepts is an explicit addressing frame carrying the 255-byte API
# payload limit (0x11: 20 + 255, 0x91: 18 + 255 bytes); anything above 300 is
# corruption, and the bound caps the decoder's buffer.
#
# parse(frame data) returns a tuple per frame type (see parse below) and
# raises DecodeError for a frame too short for its type (or a fixed-size
# frame with trailing bytes).  Builders raise UsageError on impossible
# arguments (wrong address length, frame id outside 0..255).
from atls.errors import DecodeError, UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# API frame types (user guide, "Frame descriptions")
AT_COMMAND = const(0x08)  # Local AT Command Request
AT_RESPONSE = const(0x88)  # Local AT Command Response
TX_REQUEST = const(0x10)  # Transmit Request
EXPLICIT_TX = const(0x11)  # Explicit Addressing Command Frame (not built here)
TX_STATUS = const(0x8B)  # Extended Transmit Status
RX_PACKET = const(0x90)  # Receive Packet
EXPLICIT_RX = const(0x91)  # Explicit Receive Indicator (parsed as "unknown")
MODEM_STATUS = const(0x8A)  # Modem Status
# Transmit Status 0x8B delivery status
DELIVERY_SUCCESS = const(0x00)
MAC_ACK_FAILURE = const(0x01)
CCA_FAILURE = const(0x02)
INDIRECT_PURGED = const(0x03)
INVALID_ENDPOINT = const(0x15)
NETWORK_ACK_FAILURE = const(0x21)
NOT_JOINED = const(0x22)
SELF_ADDRESSED = const(0x23)
ADDRESS_NOT_FOUND = const(0x24)
ROUTE_NOT_FOUND = const(0x25)
BROADCAST_RELAY_FAILURE = const(0x26)
RESOURCE_ERROR = const(0x32)
PAYLOAD_TOO_LARGE = const(0x74)
# Modem Status 0x8A
HARDWARE_RESET = const(0x00)
WATCHDOG_RESET = const(0x01)
JOINED = const(0x02)
DISASSOCIATED = const(0x03)
COORDINATOR_STARTED = const(0x06)
SECURITY_KEY_UPDATED = const(0x07)
# AT Command Response 0x88 status
AT_OK = const(0)
AT_ERROR = const(1)
AT_INVALID_COMMAND = const(2)
AT_INVALID_PARAMETER = const(3)
# Receive options (0x90) and transmit options (0x10)
RX_ACKED = const(0x01)
RX_BROADCAST = const(0x02)
RX_APS_ENCRYPTED = const(0x20)
RX_FROM_END_DEVICE = const(0x40)
TX_DISABLE_RETRIES = const(0x01)
TX_APS_ENCRYPTION = const(0x20)
TX_EXTENDED_TIMEOUT = const(0x40)

START = const(0x7E)
ESCAPE = const(0x7D)
COORDINATOR64 = b"\x00" * 8  # 0x10 destination meaning "the coordinator"
BROADCAST64 = b"\x00\x00\x00\x00\x00\x00\xff\xff"
UNKNOWN16 = const(0xFFFE)
MAX_FRAME = const(300)

_START = b"\x7e"
_ESC = b"\x7d"
_HUNT = const(0)  # FrameDecoder AP=2 states: looking for 0x7E
_IN_FRAME = const(1)  # after a 0x7E, collecting the frame
_DISCARD = const(2)  # frame finished or dropped: skip to the next 0x7E


class XBeeError(OSError):
    # The module did not answer (in time), or refused a command.
    pass


def checksum(frame_data):
    return 0xFF - (sum(frame_data) & 0xFF)


def escape(data):
    # AP=2 escaping of everything after the start delimiter; C-level replace
    # per special byte rather than a Python loop per byte.
    if not (b"\x7d" in data or b"\x7e" in data or b"\x11" in data or b"\x13" in data):
        return data
    data = bytes(data).replace(b"\x7d", b"\x7d\x5d")  # first: later ones insert 0x7D
    return (
        data.replace(b"\x7e", b"\x7d\x5e")
        .replace(b"\x11", b"\x7d\x31")
        .replace(b"\x13", b"\x7d\x33")
    )


def encode_frame(frame_data, escaped=False):
    n = len(frame_data)
    if n == 0 or n > 0xFFFF:
        raise UsageError("frame data length must be 1..65535")
    body = bytes((n >> 8, n & 0xFF)) + bytes(frame_data) + bytes((checksum(frame_data),))
    return _START + (escape(body) if escaped else body)


class FrameDecoder:
    def __init__(self, escaped=False, max_len=MAX_FRAME):
        if max_len < 1 or max_len > 0xFFFF:
            raise UsageError("max_len must be 1..65535")
        self.escaped = escaped
        self.max_len = max_len
        self.counters = {
            "garbage_bytes": 0,
            "bad_checksum": 0,
            "bad_escape": 0,
            "oversized": 0,
            "empty": 0,
            "truncated": 0,
            "frames": 0,
        }
        self.reset()

    def reset(self):
        self._acc = bytearray()  # AP=1: raw bytes; AP=2: unescaped bytes after 0x7E
        self._st = _HUNT  # AP=2 only
        self._need = 2
        self._raw = 0
        self._esc = False

    def pending(self):
        return len(self._acc)

    def feed(self, data):
        out = []
        if self.escaped:
            self._feed_escaped(bytes(data), out)
        else:
            buf = self._acc
            buf.extend(data)
            i = self._plain_pass(buf, out)
            if i:
                self._acc = buf[i:]
        return out

    # AP=1: frames are found by length and checksum; a failed check retries
    # from the byte after the start delimiter.
    def _plain_pass(self, buf, out):
        c = self.counters
        mv = memoryview(buf)
        i = 0
        n = len(buf)
        while True:
            s = buf.find(_START, i)
            if s < 0:
                c["garbage_bytes"] += n - i
                return n
            c["garbage_bytes"] += s - i
            i = s
            if n - i < 3:
                return i
            ln = (buf[i + 1] << 8) | buf[i + 2]
            if ln == 0 or ln > self.max_len:
                c["empty" if ln == 0 else "oversized"] += 1
                i += 1
                continue
            end = i + 4 + ln
            if end > n:
                return i
            if (sum(mv[i + 3 : end]) & 0xFF) != 0xFF:
                c["truncated" if buf.find(_START, i + 3, end - 1) >= 0 else "bad_checksum"] += 1
                i += 1
                continue
            c["frames"] += 1
            out.append(bytes(mv[i + 3 : end - 1]))
            i = end

    # AP=2: a raw 0x7E always starts a frame; bytes after it are unescaped
    # into _acc until the length field, then the frame and checksum, are in.
    def _feed_escaped(self, data, out):
        c = self.counters
        pos = 0
        n = len(data)
        while pos < n:
            e = data.find(_START, pos)
            stop = n if e < 0 else e
            if self._st == _IN_FRAME:
                self._take(data, pos, stop, out)
            else:
                c["garbage_bytes"] += stop - pos
            if e < 0:
                return
            if self._st == _IN_FRAME:  # cut short by a new start delimiter
                c["truncated"] += 1
                c["garbage_bytes"] += self._raw
            self.reset()
            self._st = _IN_FRAME
            pos = e + 1

    def _take(self, data, a, b, out):
        acc = self._acc
        while a < b:
            if self._esc:
                x = data[a] ^ 0x20
                a += 1
                self._raw += 1
                self._esc = False
                if x != 0x7E and x != 0x7D and x != 0x11 and x != 0x13:
                    self._drop("bad_escape", b - a)
                    return
                acc.append(x)
            else:
                k = data.find(_ESC, a, b)
                take = min((b if k < 0 else k) - a, self._need - len(acc))
                if take > 0:
                    acc.extend(data[a : a + take])
                    a += take
                    self._raw += take
                if len(acc) < self._need:
                    if a < b:  # at a 0x7D
                        self._esc = True
                        a += 1
                        self._raw += 1
                    continue
            if len(acc) == self._need and self._step(out):
                self.counters["garbage_bytes"] += b - a  # nothing until the next 0x7E
                return

    def _step(self, out):
        # True when the frame is finished (returned or dropped)
        acc = self._acc
        ln = (acc[0] << 8) | acc[1]
        if len(acc) == 2:
            if ln == 0 or ln > self.max_len:
                self._drop("empty" if ln == 0 else "oversized", 0)
                return True
            self._need = ln + 3
            return False
        if (sum(acc) - acc[0] - acc[1]) & 0xFF != 0xFF:
            self._drop("bad_checksum", 0)
        else:
            self.counters["frames"] += 1
            out.append(bytes(acc[2 : 2 + ln]))
            self._st = _DISCARD
        return True

    def _drop(self, why, rest):
        c = self.counters
        c[why] += 1
        c["garbage_bytes"] += self._raw + rest
        self._st = _DISCARD


def _u16(v):
    return bytes((v >> 8 & 0xFF, v & 0xFF))


def _check(frame_id, addr=None):
    if frame_id < 0 or frame_id > 255:
        raise UsageError("frame id must be 0..255")
    if addr is not None and len(addr) != 8:
        raise UsageError("64-bit address must be 8 bytes")


def _cmd(command):
    if isinstance(command, str):
        command = command.encode()
    if len(command) != 2:
        raise UsageError("AT command must be 2 characters")
    return bytes(command)


def at_command(frame_id, command, parameter=b""):
    _check(frame_id)
    return bytes((AT_COMMAND, frame_id)) + _cmd(command) + bytes(parameter)


def at_response(frame_id, command, status, value=b""):
    _check(frame_id)
    return bytes((AT_RESPONSE, frame_id)) + _cmd(command) + bytes((status,)) + bytes(value)


def tx_request(frame_id, dest64, payload, dest16=UNKNOWN16, radius=0, options=0):
    _check(frame_id, dest64)
    return (
        bytes((TX_REQUEST, frame_id))
        + bytes(dest64)
        + _u16(dest16)
        + bytes((radius, options))
        + bytes(payload)
    )


def tx_status(frame_id, dest16, retries, delivery, discovery=0):
    _check(frame_id)
    return bytes((TX_STATUS, frame_id)) + _u16(dest16) + bytes((retries, delivery, discovery))


def rx_packet(src64, src16, payload, options=RX_ACKED):
    _check(0, src64)
    return bytes((RX_PACKET,)) + bytes(src64) + _u16(src16) + bytes((options,)) + bytes(payload)


def modem_status(status):
    return bytes((MODEM_STATUS, status))


def parse(d):
    # ("at_response", frame_id, command, status, value)
    # ("at_command", frame_id, command, parameter)
    # ("tx_request", frame_id, dest64, dest16, radius, options, payload)
    # ("tx_status", frame_id, dest16, retries, delivery, discovery)
    # ("rx", src64, src16, options, payload)
    # ("modem_status", status)
    # ("unknown", frame_type, frame_data)
    n = len(d)
    if n == 0:
        raise DecodeError("empty XBee frame")
    t = d[0]
    if t == RX_PACKET:
        if n < 12:
            raise DecodeError("short RX packet")
        return ("rx", bytes(d[1:9]), (d[9] << 8) | d[10], d[11], bytes(d[12:]))
    if t == TX_STATUS:
        if n != 7:
            raise DecodeError("bad transmit status length")
        return ("tx_status", d[1], (d[2] << 8) | d[3], d[4], d[5], d[6])
    if t == AT_RESPONSE:
        if n < 5:
            raise DecodeError("short AT response")
        return ("at_response", d[1], bytes(d[2:4]), d[4], bytes(d[5:]))
    if t == MODEM_STATUS:
        if n != 2:
            raise DecodeError("bad modem status length")
        return ("modem_status", d[1])
    if t == TX_REQUEST:
        if n < 14:
            raise DecodeError("short transmit request")
        return (
            "tx_request",
            d[1],
            bytes(d[2:10]),
            (d[10] << 8) | d[11],
            d[12],
            d[13],
            bytes(d[14:]),
        )
    if t == AT_COMMAND:
        if n < 4:
            raise DecodeError("short AT command")
        return ("at_command", d[1], bytes(d[2:4]), bytes(d[4:]))
    return ("unknown", t, bytes(d))
