"""The devices the service accepts (the JSON devices file, "registry" in the
service config; paths in it are relative to the file):

    {"devices": {"device-1": {"psk": "00112233..."}, ...},   # 16..64-byte PSKs, hex
     "device_ca": "device-ca.pem"}                          # optional: CA(s) of device certificates

`Registry.psks` is the {identity bytes: key} table OpenSSL's PSK callback
reads live: reload() updates that same dict in place.
"""

import json
from pathlib import Path

from cryptography import x509

from host_tools.service.errors import ConfigError

__all__ = ["Registry"]


class Registry:
    """Devices the service accepts: PSK per identity and/or a device CA."""

    def __init__(self, path):
        self.path = Path(path)
        self.psks = {}
        self.device_ca = []
        self.reload()

    def reload(self):
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError("registry %s: %s" % (self.path, e))
        psks = {}
        for ident, entry in (data.get("devices") or {}).items():
            try:
                key = bytes.fromhex(entry["psk"]) if "psk" in entry else None
            except (TypeError, ValueError):
                raise ConfigError("registry: device %r has a PSK that is not hex" % ident)
            if key is not None:
                if not 16 <= len(key) <= 64:
                    raise ConfigError("registry: device %r PSK must be 16..64 bytes" % ident)
                psks[ident.encode()] = key
        self.psks.clear()  # the same dict object: OpenSSL's callback reads it live
        self.psks.update(psks)
        ca = data.get("device_ca")
        if ca:
            pem = (self.path.parent / ca).read_bytes()
            self.device_ca = x509.load_pem_x509_certificates(pem)
