"""TLS 1.3 key schedule (RFC 8446 §7.1), Finished MACs (§4.4.4), PSK binder
keys (§4.2.11.2) and the exporter (§7.5).

All suites the device speaks use SHA-256, so the schedule is fixed to it.
Invariants: a secret is derived only from the transcript hash its section
names; each stage drops the secret it came from (early -> handshake ->
master), so at most one stage's secrets are in RAM.  Traffic keys and IVs
are not derived here: atls.tls.record derives them from a traffic secret.
"""

from atls.crypto.backend import sha256
from atls.crypto.hkdf import derive_secret, hkdf_expand_label, hkdf_extract, hmac_sha256

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_HASH_LEN = const(32)
_EMPTY_HASH = sha256(b"").digest()  # a global: a bytes const() is copied into each use


def finished_mac(base_key, transcript_hash):
    """verify_data of a Finished message (§4.4.4), also a PSK binder (§4.2.11.2)."""
    return hmac_sha256(hkdf_expand_label(base_key, b"finished", b"", _HASH_LEN), transcript_hash)


def equal(a, b):
    """Compare MACs without stopping at the first difference."""
    if len(a) != len(b):
        return False
    return int.from_bytes(bytes(a), "big") ^ int.from_bytes(bytes(b), "big") == 0


def exporter(exporter_master, label, context, length):
    """TLS-Exporter(label, context_value, key_length) (§7.5)."""
    secret = derive_secret(exporter_master, label, _EMPTY_HASH)
    return hkdf_expand_label(secret, b"exporter", sha256(context).digest(), length)


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
        """The resumption master secret from the hash through client Finished;
        the master secret is dropped."""
        rms = derive_secret(self.master, b"res master", th)
        self.master = None
        return rms
