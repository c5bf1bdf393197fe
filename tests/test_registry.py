"""The SQLite device registry (host_tools.registry): schema versions and
migration, sealed PSKs and file modes, the CLI, the service's live view of
it, and provisioning/revocation while the service runs."""

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from e2e import ServiceProc, run_device

from host_tools.registry import MIGRATIONS, SCHEMA_VERSION, RegistryError, Store
from host_tools.registry.__main__ import main as cli
from host_tools.service.errors import ConfigError
from host_tools.service.registry import Registry

PSK1 = bytes(range(32))


def test_files_are_0600_and_psks_are_sealed(tmp_path):
    db = tmp_path / "r.sqlite"
    st = Store(db)
    st.add("dev-1", PSK1)
    st.close()
    for p in (db, tmp_path / "r.sqlite.key"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert PSK1 not in db.read_bytes() and PSK1.hex().encode() not in db.read_bytes()
    assert Store(db).credentials()[0] == {b"dev-1": PSK1}
    (tmp_path / "other.key").write_bytes(os.urandom(32))
    with pytest.raises(RegistryError):
        Store(db, tmp_path / "other.key").credentials()  # another master key: does not open


def test_a_lost_master_key_is_not_silently_replaced(tmp_path):
    db = tmp_path / "r.sqlite"
    Store(db).add("dev-1", PSK1)
    os.unlink(tmp_path / "r.sqlite.key")
    with pytest.raises(RegistryError, match="master key file .* is missing"):
        Store(db)
    assert not (tmp_path / "r.sqlite.key").exists()


def test_sealed_psk_is_bound_to_its_device(tmp_path):
    st = Store(tmp_path / "r.sqlite")
    st.add("dev-1", PSK1)
    st.add("dev-2", bytes(32))
    st.db.execute(
        "UPDATE devices SET psk_sealed = (SELECT psk_sealed FROM devices WHERE id = 'dev-1')"
        " WHERE id = 'dev-2'"
    )
    with pytest.raises(RegistryError):
        st.credentials()


def test_schema_version_and_migration_from_version_1(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(MIGRATIONS[0])
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO devices (id, cert_sha256, created) VALUES ('d', ?, 1)", ("ab" * 32,))
    con.commit()
    con.close()
    st = Store(db)
    assert st.version() == SCHEMA_VERSION >= 2
    assert [d["id"] for d in st.devices()] == ["d"]
    names = {r[0] for r in st.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "devices_last_seen" in names
    st.db.execute("PRAGMA user_version = 99")
    st.close()
    with pytest.raises(RegistryError, match="newer"):
        Store(db)


def test_cli_import_list_add_revoke(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    (tmp_path / "devices.json").write_text(
        json.dumps(
            {
                "devices": {"a": {"psk": PSK1.hex()}, "b": {"spki_sha256": "cd" * 32}},
                "device_ca": "ca.pem",
            }
        )
    )
    assert cli(["--db", db, "import", str(tmp_path / "devices.json")]) == 0
    assert cli(["--db", db, "add", "c", "--psk", "11" * 16]) == 0
    assert cli(["--db", db, "add", "c", "--psk", "11" * 16]) == 2  # exists
    assert cli(["--db", db, "add", "d", "--psk", "11"]) == 2  # too short
    assert cli(["--db", db, "revoke", "a"]) == 0
    assert cli(["--db", db, "revoke", "a"]) == 2
    capsys.readouterr()
    assert cli(["--db", db, "list", "--json"]) == 0
    rows = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"a", "b", "c"} and rows["a"]["revoked"] and not rows["c"]["revoked"]
    assert PSK1.hex() not in json.dumps(rows)
    st = Store(db)
    psks, certs, spkis = st.credentials()
    assert set(psks) == {b"c"} and spkis == {"cd" * 32: "b"}
    assert st.setting("device_ca") == str((tmp_path / "ca.pem").resolve())
    assert cli(["--db", db, "add", "a", "--psk", PSK1.hex(), "--force"]) == 0  # re-provisioned
    assert b"a" in Store(db).credentials()[0]


def test_service_registry_sees_additions_and_revocations(tmp_path):
    db = tmp_path / "r.sqlite"
    Store(db).add("dev-1", PSK1)
    reg = Registry(db)
    table = reg.psks
    assert table == {b"dev-1": PSK1} and not reg.changed()
    other = Store(db)  # another process: the CLI
    other.add("dev-2", bytes(32))
    assert reg.changed()
    reg.reload()
    assert set(table) == {b"dev-1", b"dev-2"}  # the same dict, updated in place
    other.revoke("dev-1")
    assert reg.changed()
    reg.reload()
    assert set(table) == {b"dev-2"} and not reg.changed()


def test_json_registry_still_works_and_bad_sqlite_is_a_config_error(tmp_path):
    (tmp_path / "devices.json").write_text(json.dumps({"devices": {"x": {"psk": PSK1.hex()}}}))
    assert Registry(tmp_path / "devices.json").psks == {b"x": PSK1}
    (tmp_path / "bad.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError):
        Registry(tmp_path / "bad.sqlite")


def test_provision_and_revoke_while_the_service_runs(mpyc, tmp_path):
    """dev-a is registered at start, dev-b is added while the service runs
    and works at once; then dev-b is revoked: its next handshake fails and
    dev-a is untouched."""
    db = tmp_path / "registry.sqlite"
    psk_a, psk_b = os.urandom(32), os.urandom(32)
    Store(db).add("dev-a", psk_a)
    svc = ServiceProc(
        tmp_path, extra={"registry": "registry.sqlite", "limits": {"registry_check_s": 1}}
    )
    reg_cli = [sys.executable, "-m", "host_tools.registry", "--db", str(db)]

    def device(name, psk, count=3):
        cfg = {"host": svc.addr[0], "port": svc.addr[1], "psk": psk.hex(), "psk_identity": name}
        cfg.update(count=count, timeout_ms=6000, handshake_timeout_ms=3000)
        return run_device(mpyc, tmp_path, cfg, name=name)

    try:
        assert device("dev-a", psk_a)["ok"]
        subprocess.run(reg_cli + ["add", "dev-b", "--psk", psk_b.hex()], check=True)
        svc.counters(settle=1.5)  # the service notices within registry_check_s
        assert device("dev-b", psk_b)["ok"]
        subprocess.run(reg_cli + ["revoke", "dev-b"], check=True)
        svc.counters(settle=1.5)
        assert not device("dev-b", psk_b)["ok"]
        # dev-a again: its session works (link protocol v2 may also hand it an
        # echo its first run exited without acknowledging: received >= count)
        r = device("dev-a", psk_a)
        assert r["failed"] is None and r["delivered"] == 3 and r["received"] >= 3, r
        c = svc.counters()
        assert c["handshakes_ok"] == 3 and c["handshakes_failed"] >= 1
    finally:
        svc.stop()
    assert psk_a.hex() not in svc.logs() and psk_b.hex() not in svc.logs()
