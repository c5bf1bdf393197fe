"""The pairing table: the gateway's allowlist of ZigBee devices, on disk.

    {"version": 1, "devices": {"<addr64 hex>": {"device": id, "service": name,
                                                "paired_at": unix time}}}

Written whole to a temporary file and renamed over the old one, so a crash
never leaves half a table.  Pairing itself (docs/PROTOCOL.md §8) is the
bridge's; this module only keeps its result.
"""

import json
import os
import time
from pathlib import Path

from host_tools.gateway.config import GatewayError

__all__ = ["PairingTable"]


class PairingTable:
    """The allowlist: 64-bit address → device id and service, on disk."""

    def __init__(self, path):
        self.path = Path(path)
        self.devices = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.devices = dict(data.get("devices", {}))
            except ValueError as e:
                raise GatewayError("pairing table %s is corrupt: %s" % (self.path, e))

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"version": 1, "devices": self.devices}, indent=1, sort_keys=True)
        )
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a table

    def add(self, addr64, device_id, service):
        self.devices[addr64.hex()] = {
            "device": device_id,
            "service": service,
            "paired_at": int(time.time()),
        }
        self.save()

    def remove(self, key):
        """Unpair by 64-bit address (hex) or device id; returns what was removed."""
        key = key.lower()
        gone = [a for a, d in self.devices.items() if a == key or d["device"].lower() == key]
        for a in gone:
            del self.devices[a]
        if gone:
            self.save()
        return gone

    def get(self, addr64):
        return self.devices.get(addr64.hex())

    def __len__(self):
        return len(self.devices)
