"""ATLS link packets (docs/PROTOCOL.md §1): a bounded codec.

Every packet starts with a 3-byte header: byte 0 is 1010 v ttt (marker 0xA,
version bit, 3-bit type), bytes 1-2 the session id.  The header layout, the
packet types, the ERROR reasons and `Drop` are protocol facts defined in
atls.protocol; they are re-exported here (wire.HS, wire.DATA, wire.Drop,
...).
`decode` classifies a datagram without keys and bounds every length before
anything is copied; bad input raises `Drop(reason)` (a DecodeError) whose
reason names one of the link's drop counters.  It returns a tuple
  (type, sid, a, b, c), per type:
  HS, HS_END  a = flight,  b = index,  c = fragment (memoryview, >= 1 byte)
  HS_ACK      a = flight,  b = None,   c = bitmap (memoryview, 1..32 bytes)
  DATA, CDATA a = seq & 0xFF (the link expands it), b = 0, c = ciphertext || tag
  ACK         a = ack_seq, b = (next << 32) | bitmap, c = tag
  CLOSE       a = close_seq, b = reason, c = tag
  ERROR       a = reason,  b = None,   c = None, or the reset token (RESET)
For a sealed packet the bytes before c are the AAD (§3).  `encode(type,
sid, body)` is the inverse: header || body.
"""

from atls.protocol import (  # noqa: F401  (re-exported: wire.<NAME>)
    ACK,
    CDATA,
    CLOSE,
    DATA,
    ERROR,
    HEADER_LEN,
    HS,
    HS_ACK,
    HS_END,
    MARKER,
    MARKER_MASK,
    RESET,
    RESET_TOKEN_LEN,
    VERSION_BIT,
    Drop,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MAX_SEQ = const(65534)  # §3: last DATA seq (so that next <= 65535 fits 16 bits)
MAX_COUNTER = const(65535)  # §3: last ACK / CLOSE counter
ACK_SPAN = const(32)  # §4: the ACK bitmap covers next+1 .. next+32

_V2 = const(0xA8)  # MARKER | VERSION_BIT
# per type: shortest packet without the tag, longest (0: no limit) (§1)
_MIN = const(b"\x05\x05\x05\x04\x0b\x06\x04\x04")
_MAX = const(b"\x00\x00\x24\x00\x0b\x06\x14\x00")


def decode(d, tag_len=None, max_len=None):
    """(type, sid, a, b, c) as the module docstring says, or Drop(reason).
    With tag_len the sealed types are length-checked against the tag too
    (short: truncated; long ACK/CLOSE: too_big; a longer DATA is a longer
    message).  Without it only their minimum length is checked."""
    n = len(d)
    if n == 0:
        raise Drop("truncated")
    b0 = d[0]
    if (b0 & MARKER_MASK) != MARKER:
        raise Drop("not_atls")
    if not b0 & VERSION_BIT:
        raise Drop("version")  # a version 1 packet
    if max_len is not None and n > max_len:
        raise Drop("too_big")
    t = b0 & 7
    tag = 0
    if t != ERROR and t >= DATA and tag_len is not None:
        tag = tag_len
    hi = _MAX[t]
    if n < _MIN[t] + tag:
        raise Drop("truncated")
    if hi and n > hi + tag and (tag or t < DATA or t == ERROR):
        raise Drop("too_big")
    mv = d if isinstance(d, memoryview) else memoryview(d)
    sid = (d[1] << 8) | d[2]
    if t <= HS_END:
        if n == 5 or d[4] == 255:  # §2: fragments are never empty, index <= 254
            raise Drop("bad_fragment")
        return t, sid, d[3], d[4], mv[5:]
    if t == HS_ACK:
        return t, sid, d[3], None, mv[4:]
    if t == ERROR:  # 4 bytes, or 20 for RESET || token (§5)
        want = HEADER_LEN + 1 + (RESET_TOKEN_LEN if d[3] == RESET else 0)
        if n != want:
            raise Drop("truncated" if n < want else "too_big")
        return t, sid, d[3], None, mv[4:] if n > 4 else None
    if t == DATA or t == CDATA:
        return t, sid, d[3], 0, mv[4:]
    a = (d[3] << 8) | d[4]
    if t == ACK:
        return t, sid, a, int.from_bytes(bytes(mv[5:11]), "big"), mv[11:]
    return t, sid, a, d[5], mv[6:]


def encode(ptype, sid, body):
    return bytes((_V2 | ptype, (sid >> 8) & 0xFF, sid & 0xFF)) + body


def expand_seq(t, expected):
    """The full DATA seq from its low byte `t`, nearest to `expected` (the
    receiver's next seq): RFC 9000 §A.3 with an 8-bit window (§3)."""
    c = (expected & ~0xFF) | t
    if c + 128 <= expected and c + 256 <= MAX_SEQ:
        c += 256
    elif c > expected + 128 and c >= 256:
        c -= 256
    return c


def encode_hs(sid, flight, index, fragment, last=False):
    return encode(HS_END if last else HS, sid, bytes((flight, index)) + fragment)


def make_bitmap(indexes, count):
    """HS_ACK bitmap (§2): bit 7 of byte 0 = fragment 0."""
    bm = bytearray((count + 7) >> 3)
    for i in indexes:
        bm[i >> 3] |= 0x80 >> (i & 7)
    return bytes(bm)
