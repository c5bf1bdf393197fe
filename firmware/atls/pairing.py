"""Pairing packets between a device and its ZigBee gateway (docs/PROTOCOL.md
§8), shared by the device and the gateway.  Pairing authorises the network
path only; no key material is ever carried.  `decode` bounds every length
and raises DecodeError on anything malformed."""

from atls.crypto.backend import sha256
from atls.errors import DecodeError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MARKER = const(0xB0)  # §8: high nibble 0xB, never confused with ATLS (0xA)
REQUEST = const(0)
ACCEPT = const(1)
REJECT = const(2)
PENDING = const(3)
VERSION = const(1)
NONCE_LEN = const(8)
MAX_NAME = const(32)
REASONS = {0: "ok", 1: "join window closed", 2: "refused", 3: "table full"}


def is_pairing(packet):
    return len(packet) > 0 and (packet[0] & 0xF8) == MARKER


def encode_request(nonce, device_id, service):
    d = device_id.encode() if isinstance(device_id, str) else device_id
    s = service.encode() if isinstance(service, str) else service
    if len(nonce) != NONCE_LEN or not 0 < len(d) <= MAX_NAME or not 0 < len(s) <= MAX_NAME:
        raise ValueError("nonce must be 8 bytes, names 1..32 bytes")
    return bytes((MARKER | REQUEST, VERSION)) + nonce + bytes((len(d),)) + d + bytes((len(s),)) + s


def encode_reply(kind, nonce, reason=0):
    return bytes((MARKER | kind,)) + bytes(nonce) + bytes((reason,))


def decode(packet):
    """("request", nonce, device_id, service) or (kind, nonce, reason) with
    kind "accept" / "reject" / "pending"."""
    n = len(packet)
    if n < 1 or (packet[0] & 0xF8) != MARKER:
        raise DecodeError("not a pairing packet")
    t = packet[0] & 7
    if t == REQUEST:
        if n < 12 or packet[1] != VERSION:
            raise DecodeError("pairing request: short or unknown version")
        nonce = bytes(packet[2:10])
        dl = packet[10]
        if dl == 0 or dl > MAX_NAME or n < 12 + dl:
            raise DecodeError("pairing request: device id length")
        dev = bytes(packet[11 : 11 + dl])
        sl = packet[11 + dl]
        if sl == 0 or sl > MAX_NAME or n != 12 + dl + sl:
            raise DecodeError("pairing request: service length")
        try:
            return ("request", nonce, dev.decode(), bytes(packet[12 + dl :]).decode())
        except UnicodeError:
            raise DecodeError("pairing request: names must be UTF-8")
    if t in (ACCEPT, REJECT, PENDING) and n == 10:
        kind = ("accept", "reject", "pending")[t - 1]
        return (kind, bytes(packet[1:9]), packet[9])
    raise DecodeError("pairing packet: bad type or length")


def confirmation_code(addr64, nonce, device_id, service):
    """The 6-digit code both sides show (§8)."""
    d = device_id.encode() if isinstance(device_id, str) else device_id
    s = service.encode() if isinstance(service, str) else service
    h = sha256(b"atls-pair" + bytes(addr64) + bytes(nonce) + d + s).digest()
    return "%06d" % (int.from_bytes(h[:4], "big") % 1000000)
