"""TLS 1.3 keys: (EC)DHE key shares (RFC 8446 §4.2.8, §7.4), the key
schedule (§7.1) and record protection (§5.2-§5.3).

All three supported suites use SHA-256, so the schedule is fixed to it.
Invariants: a secret is derived only from the transcript hash its section
names; record nonces are the static IV XOR the 64-bit record sequence number,
which never wraps (the connection fails first).  Key shares: x25519 (32-byte
u-coordinate) and secp256r1 (65-byte uncompressed point); the peer's share
is validated by the curve code and a bad one is illegal_parameter.  Curve
and AEAD modules are imported only when a handshake selects them (their
bytecode sits in the heap when loaded from .mpy).
"""

from atls.crypto.backend import FAST, sha256
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

# §4.2.7 NamedGroup
X25519 = const(0x001D)
SECP256R1 = const(0x0017)
GROUP_NAMES = {X25519: "x25519", SECP256R1: "secp256r1"}

_KEY_LEN = const(16)
_IV_LEN = const(12)
_HASH_LEN = const(32)
_EMPTY_HASH = sha256(b"").digest()  # a global: a bytes const() is copied into each use

_CT_APPLICATION_DATA = const(23)
_MAX_CIPHERTEXT = const(16640)  # 2^14 + 256 (§5.2)
_SEQ_LIMIT = const(0xFFFFFFFF)  # far below 2^64; records per connection are few


def key_share(group, rng):
    """(private, public) ephemeral key pair for `group`; rng(n) gives the
    private bytes."""
    if group == X25519:
        from atls.crypto.x25519 import x25519_base

        priv = rng(32)
        return priv, x25519_base(priv)
    if group != SECP256R1:
        raise ValueError("unsupported group")
    from atls.crypto import p256

    while True:  # rejection sampling: a scalar in [1, n-1]
        priv = rng(32)
        try:
            return priv, p256.public_key(priv)
        except (CryptoError, ValueError):
            pass


def shared_secret(group, priv, peer):
    """The (EC)DHE shared secret; illegal_parameter for a bad peer share."""
    try:
        if group == X25519:
            from atls.crypto.x25519 import x25519

            return x25519(priv, peer)
        from atls.crypto import p256

        return p256.ecdh(priv, peer)
    except (CryptoError, ValueError):
        raise AlertError(47)  # bad key share from peer


def suite_tag_len(suite):
    return 8 if suite == TLS_AES_128_CCM_8_SHA256 else 16


def new_aead(suite, key):
    """The AEAD of a suite with `key` (used by the record layer and by the
    exported-key channel alike).  Only the negotiated suite's module is
    imported: the pure classes themselves, or the `cryptography`-backed
    facade (atls.crypto.aead) when backend.FAST."""
    if suite == TLS_AES_128_GCM_SHA256:
        if FAST:
            from atls.crypto.aead import AESGCM as GCM
        else:
            from atls.crypto.gcm import GCM
        return GCM(key)
    if suite != TLS_AES_128_CCM_SHA256 and suite != TLS_AES_128_CCM_8_SHA256:
        raise ValueError("unsupported suite")
    if FAST:
        from atls.crypto.aead import AESCCM as CCM
    else:
        from atls.crypto.ccm import CCM
    return CCM(key, suite_tag_len(suite))


def finished_mac(base_key, transcript_hash):
    """verify_data of a Finished message (§4.4.4)."""
    return hmac_sha256(hkdf_expand_label(base_key, b"finished", b"", _HASH_LEN), transcript_hash)


def equal(a, b):
    """Compare MACs without stopping at the first difference."""
    if len(a) != len(b):
        return False
    return int.from_bytes(bytes(a), "big") ^ int.from_bytes(bytes(b), "big") == 0


class KeySchedule:
    """Secrets of one handshake, computed stage by stage (§7.1); each stage
    drops the secret it came from."""

    def __init__(self, psk=None):
        self.early = hkdf_extract(None, psk if psk is not None else bytes(_HASH_LEN))
        self.master = None

    def binder_key(self, resumption):
        label = b"res binder" if resumption else b"ext binder"
        return derive_secret(self.early, label, _EMPTY_HASH)

    def handshake_traffic(self, shared_secret, th):
        """(client, server) handshake traffic secrets from the (EC)DHE
        secret and the hash through ServerHello."""
        hs = hkdf_extract(derive_secret(self.early, b"derived", _EMPTY_HASH), shared_secret)
        self.early = None
        self.master = hkdf_extract(derive_secret(hs, b"derived", _EMPTY_HASH), bytes(_HASH_LEN))
        return derive_secret(hs, b"c hs traffic", th), derive_secret(hs, b"s hs traffic", th)

    def application_traffic(self, th):
        """(client, server, exporter master) from the hash through server Finished."""
        m = self.master
        return (
            derive_secret(m, b"c ap traffic", th),
            derive_secret(m, b"s ap traffic", th),
            derive_secret(m, b"exp master", th),
        )

    def resumption_master(self, th):
        rms = derive_secret(self.master, b"res master", th)
        self.master = None
        return rms


def exporter(exporter_master, label, context, length):
    """TLS-Exporter(label, context_value, key_length) (§7.5)."""
    secret = derive_secret(exporter_master, label, _EMPTY_HASH)
    return hkdf_expand_label(secret, b"exporter", sha256(context).digest(), length)


class RecordProtection:
    """AEAD protection of records in one direction under one traffic secret.
    The key, IV and AEAD object are derived on the first record: a direction
    that never carries one (often the case after an ATLS handshake) costs
    no AES state in RAM."""

    def __init__(self, suite, secret):
        self.suite = suite
        self.secret = secret
        self.aead = None
        self.seq = 0

    def _nonce(self):
        if self.aead is None:
            s = self.secret
            self.aead = new_aead(self.suite, hkdf_expand_label(s, b"key", b"", _KEY_LEN))
            self.iv = int.from_bytes(hkdf_expand_label(s, b"iv", b"", _IV_LEN), "big")
        if self.seq >= _SEQ_LIMIT:
            raise AlertError(80)  # record sequence exhausted
        n = (self.iv ^ self.seq).to_bytes(_IV_LEN, "big")
        self.seq += 1
        return n

    def seal(self, content_type, data, tag_len):
        """One TLSCiphertext record carrying `data` of `content_type`."""
        n = len(data) + 1 + tag_len
        header = bytes((_CT_APPLICATION_DATA, 3, 3, n >> 8, n & 0xFF))
        inner = bytearray(data)
        inner.append(content_type)
        nonce = self._nonce()
        return header + self.aead.seal(nonce, header, inner)

    def open(self, header, body):
        """(content_type, plaintext) of a protected record; bad_record_mac on
        any failure, unexpected_message when the inner plaintext is all zero."""
        if len(body) > _MAX_CIPHERTEXT:
            raise AlertError(22)  # record overflow
        nonce = self._nonce()
        try:
            inner = self.aead.open(nonce, header, body)
        except (CryptoError, ValueError):
            raise AlertError(20)  # bad record mac
        i = len(inner) - 1
        while i >= 0 and inner[i] == 0:
            i -= 1
        if i < 0:
            raise AlertError(10)  # record without content type
        if i > 16384:
            raise AlertError(22)  # inner plaintext overflow
        return inner[i], memoryview(inner)[:i]
