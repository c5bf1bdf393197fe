"""Dialect-neutral helper for tests/test_der.py: one atls.der helper applied
to some bytes, the result as a string ("E" for DecodeError), so CPython and
MicroPython are held to the same expected output."""

from binascii import hexlify

from atls import der
from atls.errors import DecodeError


def der_op(op, data):
    r = der.Reader(data)
    try:
        if op == "tlv":
            out = "%d,%d,%d" % r.read_tlv()
        elif op == "int":
            out = str(der.read_int(r, 600))
        elif op == "uint":
            s, e = der.read_uint_span(r)
            out = hexlify(data[s:e]).decode()
        elif op == "oid":
            out = hexlify(der.read_oid(r)).decode()
        elif op == "bits":
            out = "%d,%d,%d" % der.read_bit_string(r)
        elif op == "bool":
            out = str(int(der.read_bool(r)))
        elif op == "time":
            out = str(der.read_time(r))
        elif op == "walk":
            out = str(walk(r))
        else:
            raise ValueError(op)
        r.expect_end()
        return out
    except DecodeError:
        return "E"


def walk(r, depth=0):
    """Decode every TLV, descending into constructed ones; count them."""
    n = 0
    while not r.eof():
        tag, s, e = r.read_tlv()
        n += 1
        if tag & 0x20 and depth < 16:
            n += walk(der.Reader(r.buf, s, e), depth + 1)
    return n
