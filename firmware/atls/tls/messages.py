"""TLS 1.3 handshake codecs the client always needs (RFC 8446 §4).

Built: the handshake header, length-prefixed vectors, extensions and the
ClientHello (§4.1.2).  Parsed: extension blocks (§4.2) and the
ServerHello / HelloRetryRequest (§4.1.3, §4.1.4).  Parsers work on a Buffer
over one message body and must consume it exactly; every length is bounded
before use, unknown extensions are skipped by the caller, duplicates are an
illegal_parameter alert (§4.2).  The certificate-mode codecs live in
atls.tls.auth and the post-handshake ones in atls.tls.tickets and
atls.tls.keyupdate, which are only imported when a handshake needs them
(RAM: .mpy bytecode sits in the heap).
Builders return bytes; every constant is a private const (folded into the
bytecode, no RAM).
"""

from atls.buffer import Buffer
from atls.errors import AlertError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_CLIENT_HELLO = const(1)  # §4 HandshakeType
# §4.2 ExtensionType
_EXT_PRE_SHARED_KEY = const(41)
_EXT_SUPPORTED_VERSIONS = const(43)
_EXT_COOKIE = const(44)
_EXT_KEY_SHARE = const(51)
# §6 AlertDescription
_ILLEGAL_PARAMETER = const(47)
_PROTOCOL_VERSION = const(70)
_UNSUPPORTED_EXTENSION = const(110)

_TLS13 = const(0x0304)
_LEGACY_VERSION = const(0x0303)
_MAX_EXTENSIONS = const(32)  # more than any sane server sends in one block
_MAX_SHARE = const(133)  # largest key_exchange we accept (§4.2.8.2 has 65 for P-256)
# §4.1.3: ServerHello.random of a HelloRetryRequest is SHA-256("HelloRetryRequest")
_HRR_RANDOM = const(
    b"\xcf\x21\xad\x74\xe5\x9a\x61\x11\xbe\x1d\x8c\x02\x1e\x65\xb8\x91"
    b"\xc2\xa2\x11\x16\x7a\xbb\x8c\x5e\x07\x9e\x09\xe2\xc8\xa8\x33\x9c"
)


def push_handshake(msg_type, body):
    """Handshake header (type, uint24 length) + body."""
    n = len(body)
    return bytes((msg_type, n >> 16, (n >> 8) & 0xFF, n & 0xFF)) + body


def vec(size, data):
    """opaque data<0..2^(8*size)-1>: a `size`-byte length, then the bytes."""
    n = len(data)
    if n >> (8 * size):
        raise ValueError("vector too long")
    return n.to_bytes(size, "big") + data


def ext(ext_type, data):
    """One Extension (§4.2): type, then its data as a 2-byte vector."""
    return ext_type.to_bytes(2, "big") + vec(2, data)


def u16_list(values):
    """A 2-byte-length vector of uint16 values (suites, groups, schemes)."""
    out = bytearray()
    for v in values:
        out += v.to_bytes(2, "big")
    return vec(2, out)


def client_hello(random, suites, extensions):
    """ClientHello (§4.1.2), empty legacy_session_id, null compression;
    `extensions` is the encoded list, pre_shared_key last when present."""
    return push_handshake(
        _CLIENT_HELLO,
        b"\x03\x03" + random + b"\x00" + u16_list(suites) + b"\x01\x00" + vec(2, extensions),
    )


def pull_extensions(buf, allowed=None):
    """The extensions block that ends a message -> {type: Buffer over its
    data}; the message must end with it.  `allowed` (a tuple), when given,
    lists the types this message may carry; any other is
    unsupported_extension (§4.2: the client must abort on unsolicited ones)."""
    exts = {}
    block = buf.pull_block(2)
    while not block.eof():
        t = block.pull_uint(2)
        data = block.pull_block(2)
        if t in exts or len(exts) >= _MAX_EXTENSIONS:
            raise AlertError(_ILLEGAL_PARAMETER)  # duplicate extension t
        if allowed is not None and t not in allowed:
            raise AlertError(_UNSUPPORTED_EXTENSION)  # t not allowed here
        exts[t] = data
    buf.expect_end()
    return exts


def is_hello_retry(msg):
    """True when a ServerHello handshake message (header included) carries the
    HelloRetryRequest random (§4.1.3); a short one is left to server_hello."""
    return msg[6:38] == _HRR_RANDOM


def server_hello(body):
    """ServerHello or HelloRetryRequest (§4.1.3, §4.1.4) ->
    (suite, is_hrr, group, key_exchange, selected_identity, cookie).

    group is None without a key_share; key_exchange is None in a HRR (which
    names a group only); selected_identity is None without pre_shared_key;
    cookie (a HRR's Cookie extension, still a Buffer) is None without one.
    A non-empty legacy_session_id_echo is illegal_parameter: we send none."""
    b = Buffer(body)
    if b.pull_uint(2) != _LEGACY_VERSION:
        raise AlertError(_PROTOCOL_VERSION)  # legacy_version
    hrr = b.pull(32) == _HRR_RANDOM
    if b.pull_uint(1) != 0:
        raise AlertError(_ILLEGAL_PARAMETER)  # session id echo
    suite = b.pull_uint(2)
    if b.pull_uint(1) != 0:
        raise AlertError(_ILLEGAL_PARAMETER)  # compression
    exts = pull_extensions(
        b, (_EXT_SUPPORTED_VERSIONS, _EXT_KEY_SHARE, _EXT_COOKIE if hrr else _EXT_PRE_SHARED_KEY)
    )
    sv = exts.get(_EXT_SUPPORTED_VERSIONS)
    if sv is None:
        # a TLS 1.2 (or older) server: we speak only 1.3 (§4.1.3 downgrade)
        raise AlertError(_PROTOCOL_VERSION)  # server does not speak TLS 1.3
    if sv.end - sv.pos != 2 or sv.pull_uint(2) != _TLS13:
        raise AlertError(_ILLEGAL_PARAMETER)  # supported_versions
    group = key = idx = None
    ks = exts.get(_EXT_KEY_SHARE)
    if ks is not None:
        group = ks.pull_uint(2)
        if not hrr:
            key = ks.pull_vector(2, 1, _MAX_SHARE)
        ks.expect_end()
    psk = exts.get(_EXT_PRE_SHARED_KEY)
    if psk is not None:
        idx = psk.pull_uint(2)
        psk.expect_end()
    return suite, hrr, group, key, idx, exts.get(_EXT_COOKIE)
