"""TLS 1.3 key schedule (RFC 8446 §7.1) and record protection (§5.2-§5.3).

All three supported suites use SHA-256, so the schedule is fixed to it.
Invariants: a secret is derived only from the transcript hash its section
names; record nonces are the static IV XOR the 64-bit record sequence number,
which never wraps (the connection fails first).
"""
from atls.crypto.aead import AESCCM, AESGCM
from atls.crypto.backend import sha256
from atls.crypto.hkdf import derive_secret, hkdf_expand_label, hkdf_extract, hmac_sha256
from atls.errors import AlertError, CryptoError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# §B.4 cipher suites (all SHA-256)
TLS_AES_128_GCM_SHA256 = const(0x1301)
TLS_AES_128_CCM_SHA256 = const(0x1304)
TLS_AES_128_CCM_8_SHA256 = const(0x1305)

SUITE_NAMES = {
    TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    TLS_AES_128_CCM_SHA256: "TLS_AES_128_CCM_SHA256",
    TLS_AES_128_CCM_8_SHA256: "TLS_AES_128_CCM_8_SHA256",
}

KEY_LEN = const(16)
IV_LEN = const(12)
HASH_LEN = const(32)
ZEROS = bytes(32)
EMPTY_HASH = sha256(b"").digest()

_CT_HANDSHAKE = const(22)
_CT_APPLICATION_DATA = const(23)
_MAX_CIPHERTEXT = const(16384 + 256)  # §5.2
_SEQ_LIMIT = const(0xFFFFFFFF)  # far below 2^64; records per connection are few


def suite_tag_len(suite):
    return 8 if suite == TLS_AES_128_CCM_8_SHA256 else 16


def new_aead(suite, key):
    """The AEAD of a suite with `key` (used by the record layer and by the
    exported-key channel alike)."""
    if suite == TLS_AES_128_GCM_SHA256:
        return AESGCM(key)
    if suite == TLS_AES_128_CCM_SHA256:
        return AESCCM(key, 16)
    if suite == TLS_AES_128_CCM_8_SHA256:
        return AESCCM(key, 8)
    raise ValueError("unsupported suite")


def finished_mac(base_key, transcript_hash):
    """verify_data of a Finished message (§4.4.4)."""
    fk = hkdf_expand_label(base_key, b"finished", b"", HASH_LEN)
    return hmac_sha256(fk, transcript_hash)


def equal(a, b):
    """Compare MACs without stopping at the first difference."""
    if len(a) != len(b):
        return False
    return int.from_bytes(bytes(a), "big") ^ int.from_bytes(bytes(b), "big") == 0


class KeySchedule:
    """Secrets of one handshake, computed stage by stage (§7.1)."""

    def __init__(self, psk=None):
        self.early = hkdf_extract(ZEROS, psk if psk is not None else ZEROS)
        self.handshake = None
        self.master = None

    def binder_key(self, resumption):
        label = b"res binder" if resumption else b"ext binder"
        return derive_secret(self.early, label, EMPTY_HASH)

    def to_handshake(self, shared_secret):
        self.handshake = hkdf_extract(derive_secret(self.early, b"derived", EMPTY_HASH),
                                      shared_secret)
        self.early = None
        self.master = hkdf_extract(derive_secret(self.handshake, b"derived", EMPTY_HASH), ZEROS)

    def handshake_traffic(self, th):
        return (derive_secret(self.handshake, b"c hs traffic", th),
                derive_secret(self.handshake, b"s hs traffic", th))

    def application_traffic(self, th):
        """(client, server, exporter master) from the hash through server Finished."""
        m = self.master
        return (derive_secret(m, b"c ap traffic", th), derive_secret(m, b"s ap traffic", th),
                derive_secret(m, b"exp master", th))

    def resumption_master(self, th):
        rms = derive_secret(self.master, b"res master", th)
        self.handshake = None
        self.master = None
        return rms


def exporter(exporter_master, label, context, length):
    """TLS-Exporter(label, context_value, key_length) (§7.5)."""
    secret = derive_secret(exporter_master, label, EMPTY_HASH)
    return hkdf_expand_label(secret, b"exporter", sha256(context).digest(), length)


def next_traffic_secret(secret):
    """application_traffic_secret_N+1 (§7.2)."""
    return hkdf_expand_label(secret, b"traffic upd", b"", HASH_LEN)


class RecordProtection:
    """AEAD protection of records in one direction under one traffic secret."""

    def __init__(self, suite, secret):
        self.secret = secret
        self.aead = new_aead(suite, hkdf_expand_label(secret, b"key", b"", KEY_LEN))
        self.iv = int.from_bytes(hkdf_expand_label(secret, b"iv", b"", IV_LEN), "big")
        self.seq = 0

    def _nonce(self):
        if self.seq >= _SEQ_LIMIT:
            raise AlertError(80, "record sequence exhausted")
        n = (self.iv ^ self.seq).to_bytes(IV_LEN, "big")
        self.seq += 1
        return n

    def seal(self, content_type, data, tag_len):
        """One TLSCiphertext record carrying `data` of `content_type`."""
        length = len(data) + 1 + tag_len
        header = bytes((_CT_APPLICATION_DATA, 3, 3, length >> 8, length & 0xFF))
        inner = bytearray(data)
        inner.append(content_type)
        return header + self.aead.seal(self._nonce(), header, inner)

    def open(self, header, body):
        """(content_type, plaintext) of a protected record; bad_record_mac on
        any failure, unexpected_message when the inner plaintext is all zero."""
        if len(body) > _MAX_CIPHERTEXT:
            raise AlertError(22, "record overflow")
        try:
            inner = self.aead.open(self._nonce(), header, body)
        except (CryptoError, ValueError):
            raise AlertError(20, "bad record mac")
        i = len(inner) - 1
        while i >= 0 and inner[i] == 0:
            i -= 1
        if i < 0:
            raise AlertError(10, "record without content type")
        if i > 16384:
            raise AlertError(22, "inner plaintext overflow")
        return inner[i], memoryview(inner)[:i]
