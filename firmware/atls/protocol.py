"""Protocol facts, defined once: the device and the host both import them.

Nothing here does work beyond reading a header.  The link packet codec is
`atls.wire`, the channel `atls.channel`; both take their numbers from here,
and so do the service, the gateway, the relay, the probe and the benchmarks.
A test (tests/test_protocol_facts.py) fails if the exporter label or a suite
code point is spelled out anywhere else in the product code.

The name tables SUITE_NAMES (code -> name), SUITES (name -> code),
GROUP_NAMES, GROUPS and ERROR_NAMES (and VERSION, the channel numbers) are read here like the other names but live in
atls.protocol_names, imported on first use (module __getattr__, PEP 562;
MicroPython's MICROPY_MODULE_GETATTR, on from the "core features" level that
every supported port has): configuration and logs need them, moving packets
does not, and on a device their strings cost heap (~1.5 KiB as .mpy).
"""

from atls.errors import DecodeError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# -- ATLS key export (draft-friel-tls-atls §7; docs/PROTOCOL.md §3) -----------
EXPORTER_LABEL = b"application-layer-tls"
KEY_BLOCK_LEN = const(56)  # 2 x (16-byte key + 12-byte IV): RFC 8446 §B.4, §5.3

# -- TLS 1.3 cipher suites the device speaks (RFC 8446 §B.4, RFC 8446 §9.1) ---
TLS_AES_128_GCM_SHA256 = const(0x1301)
TLS_AES_128_CCM_SHA256 = const(0x1304)
TLS_AES_128_CCM_8_SHA256 = const(0x1305)


def suite_tag_len(suite):
    """AEAD tag length of a suite: 8 for CCM_8, 16 for CCM and GCM."""
    if suite == TLS_AES_128_CCM_8_SHA256:
        return 8
    if suite == TLS_AES_128_GCM_SHA256 or suite == TLS_AES_128_CCM_SHA256:
        return 16
    raise ValueError("unsupported suite")


# -- TLS 1.3 named groups (RFC 8446 §4.2.7) ------------------------------------
X25519 = const(0x001D)
SECP256R1 = const(0x0017)

# -- link packet header (docs/PROTOCOL.md §1) ----------------------------------
# byte 0 = 1010 v ttt: marker nibble 0xA (draft-friel-tls-atls §6.1.2), version
# bit (set = version 2, this one; clear = version 1, dropped as `version`),
# 3-bit type; bytes 1-2 the session id.
MARKER = const(0xA0)
MARKER_MASK = const(0xF0)
VERSION_BIT = const(0x08)
HEADER_LEN = const(3)
HS = const(0)
HS_END = const(1)
HS_ACK = const(2)
DATA = const(3)
ACK = const(4)
CLOSE = const(5)
ERROR = const(6)
CDATA = const(7)  # DATA on a channel other than 0: the sealed plaintext starts with it
HELLO_LEN = const(8)  # §4: HELLO = id base (8) [|| channels (1) || reset token (16)]
RESET_TOKEN_LEN = const(16)  # §5
# VERSION (2) and the channel numbers CHANNEL_APP/CONTROL/UPDATE are in
# atls.protocol_names (read here like the other names)

# -- CLOSE reasons (docs/PROTOCOL.md §5) ---------------------------------------
CLOSE_NORMAL = const(0)
CLOSE_REKEY = const(1)  # the seq or counter space is used up: a new session follows
CLOSE_IDLE = const(2)  # LinkConfig.idle_timeout_ms passed without a message

# -- ERROR reasons (docs/PROTOCOL.md §5) ---------------------------------------
UNKNOWN_SESSION = const(1)
HANDSHAKE_FAILED = const(2)
BUSY = const(3)
RESET = const(4)  # followed by the session's 16-byte reset token (§5)
# ERROR_NAMES (reason -> name) is in atls.protocol_names: read only when an
# ERROR arrives or is logged


def __getattr__(name):
    # SUITE_NAMES, SUITES, GROUP_NAMES, GROUPS, ERROR_NAMES, VERSION, CHANNEL_*:
    # from atls.protocol_names
    if name[:1] == "_":  # __path__, __all__, ...: not a fact
        raise AttributeError(name)
    from atls import protocol_names

    value = getattr(protocol_names, name)
    globals()[name] = value  # later reads find it here
    return value


class Drop(DecodeError):
    """A packet dropped without an answer; `reason` names the drop counter."""

    def __init__(self, reason):
        DecodeError.__init__(self, reason)
        self.reason = reason


def is_atls(data):
    """True when a datagram carries the ATLS marker (the gateway's filter)."""
    return len(data) > 0 and (data[0] & MARKER_MASK) == MARKER


def peek(data):
    """(type, session id) from the clear header, or Drop(reason): the service
    chooses a session by it before decoding, without keys."""
    if len(data) < HEADER_LEN:
        raise Drop("truncated")
    b0 = data[0]
    if (b0 & MARKER_MASK) != MARKER:
        raise Drop("not_atls")
    if not b0 & VERSION_BIT:
        raise Drop("version")  # version 1
    return b0 & 7, (data[1] << 8) | data[2]
