"""TLS 1.3 handshake message codecs (RFC 8446 §4), client side.

Only what a client sends is built (`push_*`) and only what a client receives
is parsed (`pull_*`).  Parsers take a Buffer over one handshake message body
and must consume it exactly; every length is bounded before use, unknown
extensions are kept as raw bytes and ignored by the caller, duplicates are an
illegal_parameter alert (§4.2).
"""
from atls.buffer import Buffer, Writer
from atls.errors import AlertError, DecodeError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# §4 HandshakeType
CLIENT_HELLO = const(1)
SERVER_HELLO = const(2)
NEW_SESSION_TICKET = const(4)
END_OF_EARLY_DATA = const(5)
ENCRYPTED_EXTENSIONS = const(8)
CERTIFICATE = const(11)
CERTIFICATE_REQUEST = const(13)
CERTIFICATE_VERIFY = const(15)
FINISHED = const(20)
KEY_UPDATE = const(24)
MESSAGE_HASH = const(254)

# §4.2 ExtensionType
EXT_SERVER_NAME = const(0)
EXT_SUPPORTED_GROUPS = const(10)
EXT_SIGNATURE_ALGORITHMS = const(13)
EXT_PRE_SHARED_KEY = const(41)
EXT_EARLY_DATA = const(42)
EXT_SUPPORTED_VERSIONS = const(43)
EXT_COOKIE = const(44)
EXT_PSK_KEY_EXCHANGE_MODES = const(45)
EXT_KEY_SHARE = const(51)

# §6 AlertDescription codes used here
ALERT_UNEXPECTED_MESSAGE = const(10)
ALERT_BAD_RECORD_MAC = const(20)
ALERT_RECORD_OVERFLOW = const(22)
ALERT_HANDSHAKE_FAILURE = const(40)
ALERT_BAD_CERTIFICATE = const(42)
ALERT_ILLEGAL_PARAMETER = const(47)
ALERT_DECODE_ERROR = const(50)
ALERT_DECRYPT_ERROR = const(51)
ALERT_PROTOCOL_VERSION = const(70)
ALERT_INTERNAL_ERROR = const(80)
ALERT_MISSING_EXTENSION = const(109)
ALERT_UNSUPPORTED_EXTENSION = const(110)
ALERT_CERTIFICATE_REQUIRED = const(116)

TLS13 = const(0x0304)
LEGACY_VERSION = const(0x0303)

# §4.1.3: ServerHello.random of a HelloRetryRequest is SHA-256("HelloRetryRequest")
HRR_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

MAX_EXTENSIONS = const(32)  # more than any sane server sends in one block


def push_handshake(msg_type, body):
    """Handshake header (type, uint24 length) + body."""
    n = len(body)
    return bytes((msg_type, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + body


def push_extension(w, ext_type, data):
    w.push_uint16(ext_type)
    w.push_vector(2, data)


def push_client_hello(random, session_id, suites, extensions):
    """ClientHello body (§4.1.2); `extensions` is the encoded list, already
    ordered with pre_shared_key last when present."""
    w = Writer()
    w.push_uint16(LEGACY_VERSION)
    w.push_bytes(random)
    w.push_vector(1, session_id)
    s = w.start_block(2)
    for cs in suites:
        w.push_uint16(cs)
    w.end_block(s, 2)
    w.push_vector(1, b"\x00")  # legacy_compression_methods = null
    w.push_vector(2, extensions)
    return w.getvalue()


def pull_extensions(buf, allowed=None):
    """Extensions block -> {type: bytes}.  `allowed` (a tuple), when given,
    lists the types this message may carry; any other is
    unsupported_extension (§4.2: the client must abort on unsolicited ones)."""
    exts = {}
    block = buf.pull_block(2)
    while not block.eof():
        t = block.pull_uint16()
        data = block.pull_vector(2)
        if t in exts or len(exts) >= MAX_EXTENSIONS:
            raise AlertError(ALERT_ILLEGAL_PARAMETER, "duplicate extension %d" % t)
        if allowed is not None and t not in allowed:
            raise AlertError(ALERT_UNSUPPORTED_EXTENSION, "extension %d not allowed here" % t)
        exts[t] = data
    return exts


class ServerHello:
    """A parsed ServerHello or HelloRetryRequest (§4.1.3, §4.1.4)."""

    __slots__ = ("random", "session_id", "suite", "extensions", "is_hrr")

    def __init__(self, body):
        b = Buffer(body)
        if b.pull_uint16() != LEGACY_VERSION:
            raise AlertError(ALERT_PROTOCOL_VERSION, "legacy_version")
        self.random = b.pull_bytes(32)
        self.session_id = b.pull_vector(1, 0, 32)
        self.suite = b.pull_uint16()
        if b.pull_uint8() != 0:
            raise AlertError(ALERT_ILLEGAL_PARAMETER, "compression")
        self.is_hrr = self.random == HRR_RANDOM
        if self.is_hrr:
            allowed = (EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE, EXT_COOKIE)
        else:
            allowed = (EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE, EXT_PRE_SHARED_KEY)
        self.extensions = pull_extensions(b, allowed)
        b.expect_end()
        sv = self.extensions.get(EXT_SUPPORTED_VERSIONS)
        if sv is None:
            # a TLS 1.2 (or older) server: we speak only 1.3 (§4.1.3 downgrade)
            raise AlertError(ALERT_PROTOCOL_VERSION, "server does not speak TLS 1.3")
        if len(sv) != 2 or (sv[0] << 8 | sv[1]) != TLS13:
            raise AlertError(ALERT_ILLEGAL_PARAMETER, "supported_versions")

    def key_share(self):
        """(group, key_exchange) from a ServerHello; (group, None) from a HRR."""
        data = self.extensions.get(EXT_KEY_SHARE)
        if data is None:
            return None, None
        b = Buffer(data)
        group = b.pull_uint16()
        if self.is_hrr:
            b.expect_end()
            return group, None
        key = b.pull_vector(2, 1, 133)
        b.expect_end()
        return group, key

    def selected_psk(self):
        data = self.extensions.get(EXT_PRE_SHARED_KEY)
        if data is None:
            return None
        b = Buffer(data)
        idx = b.pull_uint16()
        b.expect_end()
        return idx


def pull_certificate(body, max_entries):
    """Certificate (§4.4.2) -> (context, [cert_data, ...]); entry extensions
    (OCSP, SCT) are skipped."""
    b = Buffer(body)
    context = b.pull_vector(1)
    certs = []
    lst = b.pull_block(3)
    while not lst.eof():
        if len(certs) >= max_entries:
            raise AlertError(ALERT_BAD_CERTIFICATE, "certificate chain too long")
        certs.append(lst.pull_vector(3, 1))
        lst.pull_block(2)  # CertificateEntry.extensions, ignored
    b.expect_end()
    return context, certs


def push_certificate(context, certs):
    w = Writer()
    w.push_vector(1, context)
    s = w.start_block(3)
    for c in certs:
        w.push_vector(3, c)
        w.push_uint16(0)
    w.end_block(s, 3)
    return push_handshake(CERTIFICATE, w.getvalue())


def pull_certificate_request(body):
    """CertificateRequest (§4.3.2) -> (context, [signature schemes])."""
    b = Buffer(body)
    context = b.pull_vector(1)
    exts = pull_extensions(b)
    b.expect_end()
    sa = exts.get(EXT_SIGNATURE_ALGORITHMS)
    if sa is None:
        raise AlertError(ALERT_MISSING_EXTENSION, "certificate_request without signature_algorithms")
    return context, pull_uint16_list(sa)


def pull_uint16_list(data):
    b = Buffer(data)
    lst = b.pull_block(2, 2)
    b.expect_end()
    out = []
    while not lst.eof():
        out.append(lst.pull_uint16())
    return out


def pull_certificate_verify(body):
    """CertificateVerify (§4.4.3) -> (scheme, signature)."""
    b = Buffer(body)
    scheme = b.pull_uint16()
    sig = b.pull_vector(2, 1, 600)
    b.expect_end()
    return scheme, sig


def push_certificate_verify(scheme, signature):
    w = Writer()
    w.push_uint16(scheme)
    w.push_vector(2, signature)
    return push_handshake(CERTIFICATE_VERIFY, w.getvalue())


class NewSessionTicket:
    """NewSessionTicket (§4.6.1)."""

    __slots__ = ("lifetime", "age_add", "nonce", "ticket")

    def __init__(self, body, max_ticket):
        b = Buffer(body)
        self.lifetime = b.pull_uint32()
        self.age_add = b.pull_uint32()
        self.nonce = b.pull_vector(1)
        self.ticket = b.pull_vector(2, 1)
        if len(self.ticket) > max_ticket:
            raise AlertError(ALERT_DECODE_ERROR, "ticket larger than configured maximum")
        pull_extensions(b)
        b.expect_end()
        if self.lifetime > 604800:  # §4.6.1: at most seven days
            raise AlertError(ALERT_ILLEGAL_PARAMETER, "ticket lifetime")


def check_empty(body):
    if len(body):
        raise DecodeError("unexpected body")
