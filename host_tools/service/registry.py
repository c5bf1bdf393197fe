"""The devices the service accepts (the JSON devices file, "registry" in the
service config; paths in it are relative to the file):

    {"devices": {"device-1": {"psk": "00112233..."},          # 16..64-byte PSK, hex
                 "device-2": {"cert_sha256": "ab12..."},       # SHA-256 of the DER cert
                 "device-3": {"spki_sha256": "cd34..."}},      # or of its public key (SPKI)
     "device_ca": "device-ca.pem"}      # CA(s) of device certificates (certificate devices)

Two separate identity namespaces: a PSK session's identity is the PSK
identity (the device name), a certificate session's identity is the name of
the device whose registered fingerprint/SPKI matches the client certificate -
never the certificate's CN (`lookup_cert`).  A certificate must both chain to
device_ca (OpenSSL) and be registered here: removing or re-provisioning a
device and reloading (the service reloads when the file changes) revokes its
old certificate at once.  device_ca without registered certificates, or
registered certificates without device_ca, is a ConfigError.

`Registry.psks` is the {identity bytes: key} table OpenSSL's PSK callback
reads live: reload() updates that same dict in place.

A registry path ending in `.json` is that file (the compatibility path,
reloaded when its mtime changes); any other path is the SQLite registry
(host_tools.registry: sealed PSKs, revocation, last seen), reloaded when
another process commits to it (`python -m host_tools.registry add|revoke`).
"""

import hashlib
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host_tools.registry.store import RegistryError, Store
from host_tools.service.errors import ConfigError

__all__ = ["Registry", "cert_sha256", "spki_sha256", "authenticate", "still_registered"]


def cert_sha256(cert):
    """Hex SHA-256 of a certificate's DER (what provisioning records)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def spki_sha256(cert):
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo (DER)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _digest(ident, entry, key):
    v = entry.get(key)
    if v is None:
        return None
    try:
        b = bytes.fromhex(v)
    except (TypeError, ValueError):
        b = b""
    if len(b) != 32:
        raise ConfigError("registry: device %r %s must be 64 hex digits" % (ident, key))
    return b.hex()


class Registry:
    """Devices the service accepts: PSK per identity, registered client
    certificates (fingerprint or SPKI per device) and the device CA."""

    def __init__(self, path, key_path=None):
        self.path = Path(path)
        self.psks = {}
        self.certs = {}  # cert sha256 hex -> device name
        self.spkis = {}  # spki sha256 hex -> device name
        self.device_ca = []
        self.mtime = None
        self.store = None  # host_tools.registry.Store unless the path is a .json file
        if self.path.suffix != ".json":
            try:
                self.store = Store(self.path, key_path)
            except RegistryError as e:
                raise ConfigError(str(e))
        self.reload()

    def reload(self):
        if self.store is not None:
            return self._reload_store()
        try:
            self.mtime = self.path.stat().st_mtime_ns
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError("registry %s: %s" % (self.path, e))
        psks, certs, spkis = {}, {}, {}
        for ident, entry in (data.get("devices") or {}).items():
            if not isinstance(entry, dict):
                raise ConfigError("registry: device %r must be an object" % ident)
            try:
                key = bytes.fromhex(entry["psk"]) if "psk" in entry else None
            except (TypeError, ValueError):
                raise ConfigError("registry: device %r has a PSK that is not hex" % ident)
            if key is not None:
                if not 16 <= len(key) <= 64:
                    raise ConfigError("registry: device %r PSK must be 16..64 bytes" % ident)
                psks[ident.encode()] = key
            for table, name in ((certs, "cert_sha256"), (spkis, "spki_sha256")):
                d = _digest(ident, entry, name)
                if d is not None:
                    if table.get(d, ident) != ident:
                        raise ConfigError("registry: %s of %r is also %r's" % (name, ident, d))
                    table[d] = ident
        self._apply(psks, certs, spkis, data.get("device_ca"))

    def _reload_store(self):
        self.store.changed()  # the version this load reads
        try:
            psks, certs, spkis = self.store.credentials()
        except RegistryError as e:
            raise ConfigError(str(e))
        self._apply(psks, certs, spkis, self.store.setting("device_ca"))

    def _apply(self, psks, certs, spkis, ca):
        device_ca = []
        if ca:
            try:
                pem = (self.path.parent / ca).read_bytes()
                device_ca = x509.load_pem_x509_certificates(pem)
            except (OSError, ValueError) as e:
                raise ConfigError("registry: device_ca %s: %s" % (ca, e))
        if device_ca and not (certs or spkis):
            raise ConfigError(
                "registry: device_ca needs devices with cert_sha256 or spki_sha256 "
                "(certificates are accepted only when registered)"
            )
        if (certs or spkis) and not device_ca:
            raise ConfigError("registry: registered certificates need a device_ca")
        self.psks.clear()  # the same dict object: OpenSSL's callback reads it live
        self.psks.update(psks)
        self.certs, self.spkis = certs, spkis
        self.device_ca = device_ca

    def changed(self):
        """True when the file changed since the last (re)load."""
        if self.store is not None:
            return self.store.changed()
        try:
            return self.path.stat().st_mtime_ns != self.mtime
        except OSError:
            return False

    def touch(self, device_id, firmware=None):
        """Record a device's contact (SQLite registry only; never fails the caller)."""
        if self.store is not None:
            try:
                self.store.touch(device_id, firmware=firmware)
            except Exception:
                pass

    def devices(self):
        """Registered devices without secrets (SQLite: with created, revoked,
        last seen, firmware)."""
        if self.store is not None:
            return self.store.devices()
        names = {i.decode("utf-8", "replace") for i in self.psks}
        names.update(self.certs.values(), self.spkis.values())
        return [
            {"id": n, "revoked": None, "last_seen": None, "firmware": None} for n in sorted(names)
        ]

    def lookup_cert(self, cert):
        """The device name a client certificate is registered to, or None."""
        return self.certs.get(cert_sha256(cert)) or self.spkis.get(spki_sha256(cert))


def authenticate(info, psks, registry):
    """(auth, identity, credential) of a finished handshake (info: the
    ServerConnection's info()), or None: a registered PSK identity, or a
    client certificate registered to a device (never its CN).  Resumed and
    anonymous handshakes get None.  `credential` (a key digest, or the
    certificate's fingerprints) lets still_registered notice revocation."""
    ident = info["psk_identity"]
    if ident is not None:
        key = psks.get(ident) if psks is not None else None
        if key is None:
            return None
        return "psk", ident.decode("utf-8", "replace"), hashlib.sha256(key).digest()
    cert = info["client_cert"]
    if cert is not None and info["mode"] == "cert" and registry is not None:
        name = registry.lookup_cert(cert)
        if name is not None:
            return "cert", name, (cert_sha256(cert), spki_sha256(cert))
    return None


def still_registered(sess, psks, registry):
    """False once the session's PSK or certificate is no longer its device's."""
    if sess.auth == "psk":
        key = psks.get(sess.identity.encode()) if psks is not None else None
        return key is not None and hashlib.sha256(key).digest() == sess.credential
    cert, spki = sess.credential
    return sess.identity in (registry.certs.get(cert), registry.spkis.get(spki))
