"""The service's registry on the SQLite store (host_tools.service.registry
with host_tools.registry.Store: any path not ending in .json), behaviour
`make mutants` found no test pinning down: its devices, reloads when another
process commits, contacts recorded without ever failing the caller, and a
store that cannot be read is a ConfigError (the service refuses to start)."""

import pytest

from host_tools.registry.store import Store
from host_tools.service.errors import ConfigError
from host_tools.service.registry import Registry

PSK = bytes(range(32))


def test_a_sqlite_registry_serves_its_devices_and_notices_other_writers(tmp_path):
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    reg = Registry(path)
    assert reg.psks == {b"dev-a": PSK}
    assert not reg.changed()  # nothing committed since the load
    other = Store(path)  # `python -m host_tools.registry add` in another process
    other.add("dev-b", psk=bytes(16))
    assert reg.changed()
    reg.reload()
    assert reg.psks == {b"dev-a": PSK, b"dev-b": bytes(16)}
    other.revoke("dev-a")
    assert reg.changed()
    reg.reload()
    assert reg.psks == {b"dev-b": bytes(16)}
    listed = {d["id"]: d for d in reg.devices()}  # the store's rows: revoked ones too
    assert set(listed) == {"dev-a", "dev-b"} and listed["dev-a"]["revoked"]
    assert listed["dev-b"]["created"] and listed["dev-b"]["last_seen"] is None


def test_touch_records_a_contact_and_never_fails_the_caller(tmp_path):
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    reg = Registry(path)
    reg.touch("dev-a", firmware="1.2.3")
    [d] = Store(path).devices()
    assert d["last_seen"] and d["firmware"] == "1.2.3"
    reg.store.close()  # the database is gone (a disk error, say)
    reg.touch("dev-a", firmware="1.2.4")  # logged nowhere, raised nowhere


def test_an_unreadable_store_is_a_config_error(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ConfigError):
        Registry(bad)
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    Store(tmp_path / "other.db")  # makes other.db.key, another master key
    with pytest.raises(ConfigError):  # the sealed PSK does not open under it
        Registry(path, key_path=str(tmp_path / "other.db.key"))


def test_valid_psk_is_16_to_64_bytes():
    """The service accepts PSKs of 16..64 bytes (docs/SECURITY.md, the same
    bounds as the device's ClientConfig), both ends included."""
    from host_tools.service.tls_hooks import valid_psk

    assert [valid_psk(bytes(n)) for n in (15, 16, 64, 65)] == [False, True, True, False]
    assert valid_psk(bytearray(16)) and not valid_psk("x" * 16)
