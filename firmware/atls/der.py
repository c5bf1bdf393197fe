"""A minimal, bounded DER reader (ITU-T X.690 §8 and §10, the subset X.509 uses).

Theory of operation: a `Reader` is a cursor over a window [pos, end) of one
buffer (bytes or memoryview).  `read_tlv()` decodes one tag-length-value and
returns the *offsets* of the value, so nothing is copied; `enter(tag)` returns
a Reader over a constructed value.  Typed helpers (`read_int`, `read_oid`,
`read_time`, ...) sit on top of `read_tlv` and return Python values.

Strictness (DER, X.690 §10.1): definite lengths only, in minimal form (short
form below 128; long form without a leading zero octet, at most 4 length
octets); every length must fit inside the enclosing window; low tag numbers
only (one identifier octet; X.509 needs no others).  Every violation raises
atls.errors.DecodeError (alert decode_error, 50): no IndexError or ValueError
can escape on hostile input.

RAM: the module is kept small (MicroPython loads .mpy bytecode into RAM when
not frozen), so errors carry no message text and tags are private consts.
Out of scope: BER, indefinite lengths, high tag numbers, REAL, string type
checks beyond what x509 needs, and encoding (the device never writes DER).
"""

from atls.errors import DecodeError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# Universal tags, X.680 §8.4.
_BOOLEAN = const(0x01)
_INTEGER = const(0x02)
_BIT_STRING = const(0x03)
_OID = const(0x06)
_UTC_TIME = const(0x17)
_GENERALIZED_TIME = const(0x18)
_MAX_LEN_BYTES = const(4)  # long-form length octets accepted (X.690 §8.1.3.5)
# days per month, February as 29 (leap years are checked separately)
_MDAYS = const(b"\x1f\x1d\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f")


class Reader:
    """Cursor over buf[start:end]; the window never grows."""

    def __init__(self, buf, start=0, end=None):
        if not isinstance(buf, memoryview):
            buf = memoryview(buf)
        if end is None:
            end = len(buf)
        if start < 0 or start > end or end > len(buf):
            raise DecodeError()
        self.buf = buf
        self.pos = start
        self.end = end

    def eof(self):
        return self.pos >= self.end

    def expect_end(self):
        """A constructed value must be consumed exactly (trailing bytes: 50)."""
        if self.pos != self.end:
            raise DecodeError()

    def peek(self):
        """The next tag, or None at the end of the window."""
        if self.pos >= self.end:
            return None
        return self.buf[self.pos]

    def read_tlv(self, expected_tag=None):
        """Decode one TLV; return (tag, value_start, value_end) in buf."""
        buf = self.buf
        p = self.pos
        end = self.end
        if end - p < 2:
            raise DecodeError()
        tag = buf[p]
        # high tag numbers (X.690 §8.1.2.4) are not used by X.509
        if tag & 0x1F == 0x1F or (expected_tag is not None and tag != expected_tag):
            raise DecodeError()
        ln = buf[p + 1]
        p += 2
        if ln & 0x80:
            k = ln & 0x7F
            # 0x80 is the indefinite form, forbidden in DER (X.690 §10.1)
            if k == 0 or k > _MAX_LEN_BYTES or end - p < k or buf[p] == 0:
                raise DecodeError()
            ln = 0
            for i in range(p, p + k):
                ln = (ln << 8) | buf[i]
            if ln < 0x80:  # long form for a short length (X.690 §10.1)
                raise DecodeError()
            p += k
        if ln > end - p:
            raise DecodeError()
        self.pos = p + ln
        return tag, p, p + ln

    def enter(self, tag):
        """A Reader over the value of the next TLV, which must carry `tag`."""
        _, s, e = self.read_tlv(tag)
        return Reader(self.buf, s, e)

    def read_raw(self, expected_tag=None):
        """(start, end) of the whole next TLV, header included."""
        s = self.pos
        self.read_tlv(expected_tag)
        return s, self.pos


def _int_span(r, tag, max_len):
    """INTEGER content (X.690 §8.3): non-empty, minimal (§8.3.2)."""
    _, s, e = r.read_tlv(tag)
    buf = r.buf
    if e == s or e - s > max_len + 1:
        raise DecodeError()
    if e - s > 1:
        b1 = buf[s + 1] & 0x80
        if (buf[s] == 0 and not b1) or (buf[s] == 0xFF and b1):
            raise DecodeError()
    return s, e


def read_int(r, max_len=64, tag=_INTEGER):
    """INTEGER of at most max_len octets -> int (two's complement, signed)."""
    s, e = _int_span(r, tag, max_len)
    if e - s > max_len:
        raise DecodeError()
    v = int.from_bytes(bytes(r.buf[s:e]), "big")
    if r.buf[s] & 0x80:
        v -= 1 << (8 * (e - s))
    return v


def read_uint_span(r, max_len=64, tag=_INTEGER):
    """A non-negative INTEGER as (start, end) of its magnitude octets (the
    0x00 sign octet dropped), at most max_len of them."""
    s, e = _int_span(r, tag, max_len)
    b0 = r.buf[s]
    if b0 & 0x80:
        raise DecodeError()
    if b0 == 0 and e - s > 1:
        s += 1
    if e - s > max_len:
        raise DecodeError()
    return s, e


def read_bool(r):
    """BOOLEAN: one octet, 0x00 or 0xFF in DER (X.690 §11.1)."""
    _, s, e = r.read_tlv(_BOOLEAN)
    if e - s != 1 or r.buf[s] not in (0, 0xFF):
        raise DecodeError()
    return r.buf[s] == 0xFF


def read_oid(r):
    """OBJECT IDENTIFIER (X.690 §8.19): its content octets as bytes, checked
    for base-128 form (no 0x80 padding octet, last octet terminates)."""
    _, s, e = r.read_tlv(_OID)
    buf = r.buf
    if e == s or buf[e - 1] & 0x80:
        raise DecodeError()
    first = True
    for i in range(s, e):
        if first and buf[i] == 0x80:  # X.690 §8.19.2
            raise DecodeError()
        first = not buf[i] & 0x80
    return bytes(buf[s:e])


def read_bit_string(r):
    """BIT STRING (X.690 §8.6, §11.2): (unused_bits, start, end) of the octets
    after the unused-bits octet; the unused bits must be zero."""
    _, s, e = r.read_tlv(_BIT_STRING)
    buf = r.buf
    if e == s:
        raise DecodeError()
    u = buf[s]
    if u > 7 or (u and (e - s == 1 or buf[e - 1] & ((1 << u) - 1))):
        raise DecodeError()
    return u, s + 1, e


def days_from_civil(y, m, d):
    """Days from 1970-01-01 to a proleptic Gregorian date (no time module)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def read_time(r):
    """Time (RFC 5280 §4.1.2.5) -> seconds since 1970-01-01T00:00:00Z.

    UTCTime YYMMDDHHMMSSZ, YY >= 50 meaning 19YY (§4.1.2.5.1);
    GeneralizedTime YYYYMMDDHHMMSSZ, no fractions (§4.1.2.5.2).
    """
    tag, s, e = r.read_tlv()
    n = e - s
    buf = r.buf
    if not ((tag == _UTC_TIME and n == 13) or (tag == _GENERALIZED_TIME and n == 15)) or (
        buf[e - 1] != 0x5A
    ):  # 'Z'
        raise DecodeError()
    f = []  # (YY)YY MM DD HH MM SS as two-digit integers
    for i in range(s, e - 1, 2):
        a = buf[i] - 48
        b = buf[i + 1] - 48
        if a < 0 or a > 9 or b < 0 or b > 9:
            raise DecodeError()
        f.append(a * 10 + b)
    if n == 13:
        y = f[0] + (1900 if f[0] >= 50 else 2000)
    else:
        y = f.pop(0) * 100 + f[0]
    mo, d, hh, mi, ss = f[1], f[2], f[3], f[4], f[5]
    if mo < 1 or mo > 12 or d < 1 or d > _MDAYS[mo - 1] or hh > 23 or mi > 59 or ss > 59:
        raise DecodeError()
    if mo == 2 and d == 29 and (y % 4 or (y % 100 == 0 and y % 400)):
        raise DecodeError()
    return days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
