"""The SQLite registry meets firmware updates (docs/OTA.md, docs/CONFIG.md):
schema 3 (target_version, board, ota per device) and its migration, the CLI's
`target` and `ota`, OtaApp reading the targets live from SQLite through the
real service loader, and the firmware version a device's HELLO reports
recorded in the registry and shown by `list` and the fleet tracker."""

import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_ota_app import FILES, Clock, FakeSession, Inner

from host_tools.ota import bundle
from host_tools.ota.app import OtaApp, RegistryTargets
from host_tools.registry import MIGRATIONS, SCHEMA_VERSION, Store
from host_tools.registry.__main__ import main as cli

PSK1 = bytes(range(32))


def test_migration_from_schema_2_keeps_the_devices(tmp_path):
    db = tmp_path / "r.sqlite"
    st = Store(db)  # PSKs sealed by the current code, then the schema is put back to 2
    st.add("dev-1", PSK1)
    st.add("dev-2", cert_sha256="ab" * 32)
    st.touch("dev-1", last_seen=5.0, firmware="1.0.0")
    st.revoke("dev-2")
    st.close()
    con = sqlite3.connect(db)
    for col in ("target_version", "board", "ota"):
        con.execute("ALTER TABLE devices DROP COLUMN %s" % col)
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    assert SCHEMA_VERSION == len(MIGRATIONS) == 3
    st = Store(db)
    assert st.version() == 3
    rows = {d["id"]: d for d in st.devices()}
    assert rows["dev-1"]["firmware"] == "1.0.0" and rows["dev-1"]["last_seen"] == 5.0
    assert rows["dev-2"]["revoked"] and rows["dev-2"]["cert_sha256"] == "ab" * 32
    assert all(
        d["target_version"] is None and d["board"] is None and d["ota"] for d in rows.values()
    )
    assert st.credentials()[0] == {b"dev-1": PSK1}  # the sealed PSK still opens
    assert st.ota_target("dev-1") == {"target_version": None, "board": None, "ota": True}
    assert st.ota_target("dev-2") is None  # revoked: nothing


def test_cli_target_ota_list_and_import(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    assert cli(["--db", db, "add", "a", "--psk", PSK1.hex()]) == 0
    assert cli(["--db", db, "target", "a", "1.2.0", "--board", "esp32"]) == 0
    assert cli(["--db", db, "ota", "a", "off"]) == 0
    assert cli(["--db", db, "target", "nobody", "1.2.0"]) == 2
    assert cli(["--db", db, "target", "a", "1.2"]) == 2  # not x.y.z
    assert cli(["--db", db, "ota", "nobody", "on"]) == 2
    for bad in (["target", "a"], ["target", "a", "1.0.0", "--clear"], ["ota", "a", "maybe"]):
        with pytest.raises(SystemExit):
            cli(["--db", db] + bad)
    Store(db).touch("a", firmware=b"1.1.0")
    capsys.readouterr()
    assert cli(["--db", db, "list"]) == 0
    line = capsys.readouterr().out
    assert "firmware 1.1.0 target 1.2.0 (esp32) ota off" in line
    # --force re-provisions the credential, keeps the update settings
    assert cli(["--db", db, "add", "a", "--psk", "22" * 16, "--force"]) == 0
    assert Store(db).ota_target("a") == {"target_version": "1.2.0", "board": "esp32", "ota": False}
    assert cli(["--db", db, "target", "a", "--clear"]) == 0
    assert cli(["--db", db, "ota", "a", "on"]) == 0
    assert Store(db).ota_target("a") == {"target_version": None, "board": None, "ota": True}
    # import carries the JSON registry's update fields
    devices = {
        "b": {"psk": PSK1.hex(), "target_version": "2.0.0", "board": "rp2", "ota": False},
        "c": {"psk": PSK1.hex(), "board": "esp32"},
    }
    (tmp_path / "devices.json").write_text(json.dumps({"devices": devices}))
    assert cli(["--db", db, "import", str(tmp_path / "devices.json")]) == 0
    capsys.readouterr()
    assert cli(["--db", db, "list", "--json"]) == 0
    rows = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    assert (rows["b"]["target_version"], rows["b"]["board"], rows["b"]["ota"]) == (
        "2.0.0",
        "rp2",
        False,
    )
    assert (rows["c"]["target_version"], rows["c"]["board"], rows["c"]["ota"]) == (
        None,
        "esp32",
        True,
    )
    devices["d"] = {"psk": PSK1.hex(), "target_version": "x"}
    (tmp_path / "devices.json").write_text(json.dumps({"devices": devices}))
    assert cli(["--db", db, "import", str(tmp_path / "devices.json"), "--force"]) == 2
    assert "d" not in {d["id"] for d in Store(db).devices()}  # all or nothing


def test_touch_records_the_hello_version_and_ignores_garbage(tmp_path):
    st = Store(tmp_path / "r.sqlite")
    st.add("d", PSK1)
    st.touch("d", firmware=b"1.0.0")
    st.touch("d", firmware=b"")  # an older firmware reports nothing: keep what is known
    st.touch("d", firmware=b"\xff\x00")
    assert st.devices()[0]["firmware"] == "1.0.0"


@pytest.fixture
def sqlite_ota(tmp_path):
    """The service loaded from service.json with `registry: registry.sqlite`
    and an "ota" object; bundle 1.1.0 for board unix in its store."""
    from host_tools.service.config import build_from_config

    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_text(key.public_key().public_bytes_raw().hex())
    (tmp_path / "bundles").mkdir()
    db = tmp_path / "registry.sqlite"
    st = Store(db)
    st.add("d1", PSK1)
    st.add("d2", bytes(32))
    st.close()
    cfg = {
        "registry": "registry.sqlite",
        "ota": {"bundles": "bundles", "release_pub": "release.pub", "rate_fps": 500},
    }
    (tmp_path / "service.json").write_text(json.dumps(cfg))
    service, _ = build_from_config(tmp_path / "service.json")
    app = service.app
    assert isinstance(app, OtaApp) and isinstance(app.targets, RegistryTargets)
    app.ota.store.add(bundle.build(FILES, "1.1.0", "0.0.0", "unix", key))
    return db, app


def _offered(app, clock, ident, version):
    sess = FakeSession(clock, ident, version)
    app.on_connect(sess)
    clock.now += 20
    app.poll(clock.now)
    app.on_close(sess, "gone")
    return [ch for _, ch in sess.out]


def test_ota_app_reads_targets_live_from_the_sqlite_registry(sqlite_ota):
    db, app = sqlite_ota
    clock = Clock()
    assert _offered(app, clock, "d1", b"1.0.0") == []  # no target yet
    # the CLI, another process, while the service runs: no restart
    assert cli(["--db", str(db), "target", "d1", "1.1.0", "--board", "unix"]) == 0
    assert app.targets.target_version("d1") == "1.1.0" and app.targets.device_board("d1") == "unix"
    offer = _offered(app, clock, "d1", b"1.0.0")
    assert offer and set(offer) == {2}  # the OFFER, on the update channel
    assert app.status("d1")["state"] != "DONE"
    assert _offered(app, clock, "d2", b"1.0.0") == []  # d2 has no target
    assert cli(["--db", str(db), "ota", "d1", "off"]) == 0
    assert app.granted_channels(FakeSession(clock, "d1", b"1.0.0")) == 0
    assert _offered(app, clock, "d1", b"1.0.0") == []
    assert cli(["--db", str(db), "ota", "d1", "on"]) == 0
    assert app.granted_channels(FakeSession(clock, "d1", b"1.0.0")) == 0x04
    assert cli(["--db", str(db), "revoke", "d1"]) == 0
    assert not app.targets.ota_granted("d1") and app.targets.target_version("d1") is None


def test_registry_targets_on_a_bad_sqlite_file_is_a_config_error(tmp_path):
    from host_tools.service.errors import ConfigError

    (tmp_path / "bad.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError):
        RegistryTargets(tmp_path / "bad.sqlite")


def test_the_service_records_the_firmware_version_of_the_device_hello(tmp_path):
    """A real handshake (in process): the device's v2 HELLO carries "1.0.0";
    the service stores it in the SQLite registry and the fleet tracker shows it."""
    from atls.link import LinkConfig
    from host_tools.bench.pair import CCM8, IDENTITY, PSK, Device, Transport, exchange, quiet_stderr
    from host_tools.service import Service
    from host_tools.service.metrics import Fleet
    from host_tools.service.registry import Registry
    from host_tools.service.tls_engine import ServerConfig

    db = tmp_path / "registry.sqlite"
    Store(db).add(IDENTITY.decode(), PSK)
    reg = Registry(db)
    fleet = Fleet(Inner(), reg)
    with quiet_stderr():
        svc = Service(
            ServerConfig(psks=reg.psks, suites=("TLS_AES_128_CCM_8_SHA256",)),
            LinkConfig(mtu=1200),
            limits={"rate_per_s": 10**9, "rate_burst": 10**9},
            app=fleet,
            registry=reg,
        )
        tr = Transport()
        svc.connection_made(tr)
        dev = Device(CCM8, 1200)
        start = dev.link.start_channel
        dev.link.start_channel = lambda kb, suite, base=0: start(kb, suite, base, b"1.0.0")
        dev.start(0)
        exchange(dev, svc, tr, ("10.0.0.1", 5684))
    assert dev.up
    (row,) = Store(db).devices()
    assert row["firmware"] == "1.0.0" and row["last_seen"]
    (frow,) = fleet.rows()
    assert frow["firmware"] == "1.0.0" and frow["online"]


def test_fleet_rows_show_the_hello_version_and_the_target(tmp_path):
    """Without a SQLite registry (devices.json) the fleet page still shows the
    version the live session's HELLO reported; with one, the target too."""
    from host_tools.service.metrics import Fleet

    class Sess(FakeSession):
        suite, handshake_ms = "TLS_AES_128_CCM_8_SHA256", 1

    fleet = Fleet(Inner())
    fleet.on_connect(Sess(None, "d", None))  # HELLO not in yet
    assert fleet.rows()[0]["firmware"] is None
    fleet.devices["d"]["session"].device_hello = b"1.0.0"
    assert fleet.rows()[0]["firmware"] == "1.0.0"
    db = tmp_path / "r.sqlite"
    st = Store(db)
    st.add("d", PSK1)
    st.set_target("d", "1.1.0")
    from host_tools.service.registry import Registry

    fleet = Fleet(Inner(), Registry(db))
    st.touch("d", firmware="1.0.0")
    (row,) = fleet.rows()
    assert (row["firmware"], row["target"], row["online"]) == ("1.0.0", "1.1.0", False)


def test_a_target_set_while_the_device_is_online_is_offered_in_that_session(sqlite_ota):
    from host_tools.ota.app import RETARGET_MS

    db, app = sqlite_ota
    clock = Clock()
    sess = FakeSession(clock, "d1", b"1.0.0")
    app.on_connect(sess)
    app.poll(clock.now)
    assert sess.out == [] and app.status("d1")["state"] == "IDLE"
    assert cli(["--db", str(db), "target", "d1", "1.1.0"]) == 0  # one board has 1.1.0
    clock.now += RETARGET_MS
    app.poll(clock.now)
    assert [ch for _, ch in sess.out] == [2] and app.status("d1")["state"] == "OFFERED"
    # a target changed mid-transfer does not restart it
    sess.out = []
    assert cli(["--db", str(db), "target", "d1", "1.2.0"]) == 0
    clock.now += RETARGET_MS
    app.poll(clock.now)
    assert sess.out == [] and app.status("d1")["target"] == "1.1.0"
