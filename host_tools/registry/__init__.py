"""The device registry (SQLite, the service's embedded default).

    python -m host_tools.registry --db build/service/registry.sqlite list
    python -m host_tools.registry --db … add dev-01 --psk HEX | --cert-sha256 HEX | --spki-sha256 HEX
    python -m host_tools.registry --db … revoke dev-01
    python -m host_tools.registry --db … import devices.json
    python -m host_tools.registry --db … target dev-01 1.2.0 [--board esp32] | --clear
    python -m host_tools.registry --db … ota dev-01 on|off

`store.Store` is the database (schema versions, migrations, sealed PSKs);
the service reads it through host_tools.service.registry.Registry, which also
keeps reading a devices.json (the compatibility path).
"""

from host_tools.registry.seal import MasterKey, SealError
from host_tools.registry.store import MIGRATIONS, SCHEMA_VERSION, RegistryError, Store

__all__ = ["Store", "RegistryError", "MasterKey", "SealError", "SCHEMA_VERSION", "MIGRATIONS"]
