"""Messages of the firmware-update channel (channel 2, docs/PROTOCOL.md,
"Firmware update channel").  Every message is one sealed channel payload;
the first byte is its type, integers are big-endian.

    OFFER   0x01  version (3 x u16) | total (u32) | bundle id (8)     19 bytes
    CHUNK   0x02  offset (u32) | data (1..MAX_CHUNK bytes)           5 + n
    STATUS  0x81  code (u8) | offset (u32)                           6 bytes

The service sends OFFER and CHUNK, the device STATUS.  STATUS RECEIVING
carries the next offset the device wants (a cumulative acknowledgement: the
service resumes there after any reconnect or reboot); every other code ends
the transfer (SWITCHED, CURRENT) or refuses it, the offset then says how far
it got.  Parsing is strict: a wrong length is a DecodeError.
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from atls.errors import DecodeError

OFFER = const(0x01)
CHUNK = const(0x02)
STATUS = const(0x81)
OFFER_LEN = const(19)
STATUS_LEN = const(6)
CHUNK_HEAD = const(5)
MAX_CHUNK = const(1024)

# STATUS codes: 0..2 progress, 16.. refusals (the device keeps its firmware)
RECEIVING = const(0)  # offset = next byte wanted
SWITCHED = const(1)  # verified and switched; the device reboots into it
CURRENT = const(2)  # the offered version runs already
BAD_SIGNATURE = const(16)
BAD_HASH = const(17)
ROLLBACK = const(18)  # not newer than the running version
WRONG_BOARD = const(19)
MIN_VERSION = const(20)  # the running version is below the bundle's minimum
NO_SPACE = const(21)
BAD_BUNDLE = const(22)  # malformed header, or not the offered bundle
FAILED_BEFORE = const(23)  # this version already failed to confirm here
UNCONFIRMED = const(24)  # the running version awaits its confirmation
NO_KEY = const(25)  # no release key provisioned
IO_ERROR = const(26)

STATUS_NAMES = {
    0: "receiving",
    1: "switched",
    2: "current",
    16: "bad_signature",
    17: "bad_hash",
    18: "rollback",
    19: "wrong_board",
    20: "min_version",
    21: "no_space",
    22: "bad_bundle",
    23: "failed_before",
    24: "unconfirmed",
    25: "no_key",
    26: "io_error",
}


def push_offer(version, total, bid):
    return struct.pack(">BHHHI", OFFER, version[0], version[1], version[2], total) + bytes(bid)


def push_chunk(offset, data):
    return struct.pack(">BI", CHUNK, offset) + bytes(data)


def push_status(code, offset):
    return struct.pack(">BBI", STATUS, code, offset)


def pull(msg):
    """(type, fields): OFFER -> (version, total, bid); CHUNK -> (offset,
    memoryview of data); STATUS -> (code, offset).  DecodeError otherwise."""
    n = len(msg)
    if n < 1:
        raise DecodeError("ota: empty message")
    t = msg[0]
    if t == OFFER and n == OFFER_LEN:
        a, b, c, total = struct.unpack_from(">HHHI", msg, 1)
        return t, ((a, b, c), total, bytes(msg[11:19]))
    if t == CHUNK and CHUNK_HEAD < n <= CHUNK_HEAD + MAX_CHUNK:
        return t, (struct.unpack_from(">I", msg, 1)[0], memoryview(msg)[CHUNK_HEAD:])
    if t == STATUS and n == STATUS_LEN:
        return t, (msg[1], struct.unpack_from(">I", msg, 2)[0])
    raise DecodeError("ota: bad message")
