"""`make provision REGISTRY=….sqlite` registers the device in the SQLite
registry (the PSK sealed), against the unix port behind a pty as in
tests/test_boards.py."""

import json

from test_boards import APP, failed, make, unix_board  # noqa: F401  (fixture)

from host_tools.registry import Store
from host_tools.toolchain import free_port


def test_provision_psk_into_the_sqlite_registry(unix_board, tmp_path):  # noqa: F811
    db = tmp_path / "svc" / "registry.sqlite"
    common = dict(BOARD="unix", PORT=unix_board["tty"], REGISTRY=db, APP=APP)
    common["SERVICE"] = "127.0.0.1:%d" % free_port()
    res = make("provision", DEVICE="dev-s", **common)
    assert res.returncode == 0, res.stdout + res.stderr
    psk = json.loads((unix_board["fs"] / "device.json").read_text())["tls"]["psk"]
    assert Store(db).credentials()[0] == {b"dev-s": bytes.fromhex(psk)}
    assert bytes.fromhex(psk) not in db.read_bytes()
    failed(make("provision", DEVICE="dev-s", **common), 2, "already registered")
    res = make("provision", DEVICE="dev-s", FORCE=1, **common)
    assert res.returncode == 0, res.stdout + res.stderr
    psk2 = json.loads((unix_board["fs"] / "device.json").read_text())["tls"]["psk"]
    assert psk2 != psk and Store(db).credentials()[0] == {b"dev-s": bytes.fromhex(psk2)}
