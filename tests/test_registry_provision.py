"""`make provision REGISTRY=….sqlite` registers the device in the SQLite
registry (the PSK sealed), against the unix port's REPL behind a pty as in
tests/test_boards.py (provisioning copies only device.json: no deploy)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_boards import APP, MICROPYTHON, failed, make

from host_tools.registry import Store
from host_tools.toolchain import free_port


@pytest.fixture
def pty_board(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    tty = tmp_path / "ttyV0"
    log = open(tmp_path / "ptyboard.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_tools.boards.ptyboard", "--link", str(tty)]
        + ["--micropython", MICROPYTHON],
        cwd=fs,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 15
        while not tty.exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        yield {"tty": tty, "fs": fs}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        log.close()


def test_provision_psk_into_the_sqlite_registry(pty_board, tmp_path):
    unix_board = pty_board
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
