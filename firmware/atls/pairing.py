"""Pairing packets between a device and its ZigBee gateway (docs/PROTOCOL.md
§8, pairing version 2), shared by the device and the gateway.

Theory of operation.  Pairing authorises the *network path* through one
gateway; it never carries or changes the end-to-end keys.  It is a
commit/reveal numeric comparison (as Bluetooth LE Secure Connections):

  device -> REQUEST  mode, commit = H(Pd || Nd), device id, service
  gateway -> RESPONSE Ng, Pg, gateway address, gateway id
  device -> REVEAL   Pd, Nd [, proof in install-code mode]

The device commits to its X25519 share Pd and nonce Nd before it sees the
gateway's Ng and Pg, and the gateway chooses those before it sees Nd, so
neither side (nor a third requester) can choose the 6-digit code, which is
taken from the transcript hash `th` over both addresses, both identities,
both shares and both nonces.  K = HKDF(salt = install code or empty,
ikm = X25519(d, P), info = "atls-pair2 key" || th) authenticates what the
gateway says afterwards (ACCEPT, a final REJECT, NOT_PAIRED) and, in
install-code mode, the device's REVEAL (proof).  `decode` bounds every
length and raises DecodeError on anything malformed.  Out of scope: the
device has no input, so in code mode it cannot tell the human confirmed; it
refuses an exchange in which two different gateways answered.
"""

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
RESPONSE = const(4)
REVEAL = const(5)
NOT_PAIRED = const(6)
VERSION = const(2)  # §8: version 1 (a bare nonce, a code over public fields) is refused
MODE_CODE = const(0)
MODE_INSTALL_CODE = const(1)
NONCE_LEN = const(16)
COMMIT_LEN = const(16)
PUB_LEN = const(32)
TAG_LEN = const(16)
IC_LEN = const(16)  # the install code's secret bytes (its 2-byte CRC is not sent)
MAX_NAME = const(32)
MAX_GATEWAY_ID = const(8)
REASONS = {
    0: "ok",
    1: "join window closed",
    2: "refused",
    3: "table full",
    4: "no install code registered",
    5: "unknown exchange",
    6: "ambiguous",
}
_KINDS = ("accept", "reject", "pending")


def is_pairing(packet):
    return len(packet) > 0 and (packet[0] & 0xF8) == MARKER


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def encode_request(mode, commit, device_id, service):
    d = _b(device_id)
    s = _b(service)
    if len(commit) != COMMIT_LEN or mode > 1:
        raise ValueError("commit must be 16 bytes, mode 0 or 1")
    if not 0 < len(d) <= MAX_NAME or not 0 < len(s) <= MAX_NAME:
        raise ValueError("names must be 1..32 bytes")
    return (
        bytes((MARKER | REQUEST, VERSION, mode))
        + bytes(commit)
        + bytes((len(d),))
        + d
        + bytes((len(s),))
        + s
    )


def encode_response(nonce, pub, addr64, gateway_id):
    g = _b(gateway_id)
    if len(nonce) != NONCE_LEN or len(pub) != PUB_LEN or len(addr64) != 8:
        raise ValueError("nonce 16, share 32, address 8 bytes")
    if not 0 < len(g) <= MAX_GATEWAY_ID:
        raise ValueError("gateway id must be 1..8 bytes")
    return bytes((MARKER | RESPONSE,)) + nonce + pub + addr64 + bytes((len(g),)) + g


def encode_reveal(pub, nonce, proof=b""):
    if len(pub) != PUB_LEN or len(nonce) != NONCE_LEN or len(proof) not in (0, TAG_LEN):
        raise ValueError("share 32, nonce 16, proof 0 or 16 bytes")
    return bytes((MARKER | REVEAL,)) + pub + nonce + proof


def encode_reply(kind, reason=0, tag=b""):
    """ACCEPT (tag), REJECT (reason, tag or none), PENDING (reason),
    NOT_PAIRED (tag)."""
    if kind == PENDING:
        return bytes((MARKER | PENDING, reason))
    if kind == REJECT:
        return bytes((MARKER | REJECT, reason)) + tag
    if kind in (ACCEPT, NOT_PAIRED) and len(tag) == TAG_LEN:
        return bytes((MARKER | kind,)) + tag
    raise ValueError("bad reply")


def _names(packet, i, n, most):
    ln = packet[i]
    if ln == 0 or ln > most or n < i + 1 + ln:
        raise DecodeError("pairing: name length")
    try:
        return bytes(packet[i + 1 : i + 1 + ln]).decode(), i + 1 + ln
    except UnicodeError:
        raise DecodeError("pairing: names must be UTF-8")


def decode(packet):
    """One of ("request", mode, commit, device_id, service),
    ("response", nonce, pub, addr64, gateway_id), ("reveal", pub, nonce, proof),
    ("accept", tag), ("reject", reason, tag), ("pending", reason),
    ("not_paired", tag)."""
    n = len(packet)
    if n < 1 or (packet[0] & 0xF8) != MARKER:
        raise DecodeError("not a pairing packet")
    t = packet[0] & 7
    if t == REQUEST:
        if n < 21 or packet[1] != VERSION or packet[2] > 1:
            raise DecodeError("pairing request: short, unknown version or mode")
        dev, i = _names(packet, 19, n, MAX_NAME)
        if i >= n:
            raise DecodeError("pairing request: service length")
        svc, i = _names(packet, i, n, MAX_NAME)
        if i != n:
            raise DecodeError("pairing request: trailing bytes")
        return ("request", packet[2], bytes(packet[3:19]), dev, svc)
    if t == RESPONSE:
        if n < 59:
            raise DecodeError("pairing response: short")
        gid, i = _names(packet, 57, n, MAX_GATEWAY_ID)
        if i != n:
            raise DecodeError("pairing response: trailing bytes")
        return ("response", bytes(packet[1:17]), bytes(packet[17:49]), bytes(packet[49:57]), gid)
    if t == REVEAL and n in (49, 65):
        return ("reveal", bytes(packet[1:33]), bytes(packet[33:49]), bytes(packet[49:]))
    if (t == ACCEPT or t == NOT_PAIRED) and n == 17:
        return ("accept" if t == ACCEPT else "not_paired", bytes(packet[1:]))
    if t == REJECT and n in (2, 18):
        return ("reject", packet[1], bytes(packet[2:]))
    if t == PENDING and n == 2:
        return ("pending", packet[1])
    raise DecodeError("pairing packet: bad type or length")


def encode(m):
    """The packet of a `decode` result (decode(encode(m)) == m)."""
    k = m[0]
    if k == "request":
        return encode_request(m[1], m[2], m[3], m[4])
    if k == "response":
        return encode_response(m[1], m[2], m[3], m[4])
    if k == "reveal":
        return encode_reveal(m[1], m[2], m[3])
    if k == "reject":
        return encode_reply(REJECT, m[1], m[2])
    if k == "pending":
        return encode_reply(PENDING, m[1])
    return encode_reply(ACCEPT if k == "accept" else NOT_PAIRED, tag=m[1])


# -- derivations (§8.2) ------------------------------------------------------------------
def commitment(pub, nonce):
    return sha256(b"atls-pair2 commit" + bytes(pub) + bytes(nonce)).digest()[:COMMIT_LEN]


def transcript(addr_d, addr_g, request, response, pub_d, nonce_d):
    """th: both addresses, the REQUEST and RESPONSE packets (mode, commit,
    device id, service; Ng, Pg, gateway id) and the revealed Pd, Nd."""
    return sha256(
        b"atls-pair2"
        + bytes(addr_d)
        + bytes(addr_g)
        + bytes(request)
        + bytes(response)
        + bytes(pub_d)
        + bytes(nonce_d)
    ).digest()


def confirmation_code(th):
    """The 6-digit code both sides show (§8.2)."""
    h = sha256(b"atls-pair2 code" + th).digest()
    return "%06d" % (int.from_bytes(h[:4], "big") % 1000000)


def pairing_key(shared, th, install_code=None):
    from atls.crypto.hkdf import hkdf_expand, hkdf_extract

    prk = hkdf_extract(bytes(install_code[:IC_LEN]) if install_code else b"", shared)
    return hkdf_expand(prk, b"atls-pair2 key" + th, 32)


def tag(key, label):
    """HMAC-SHA256(K, label)[:16]; labels: b"device" (the install-code proof),
    b"accept", b"reject" + reason, b"not paired"."""
    from atls.crypto.hkdf import hmac_sha256

    return hmac_sha256(key, label)[:TAG_LEN]


def same(a, b):
    """Comparison of tags without an early exit."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0
