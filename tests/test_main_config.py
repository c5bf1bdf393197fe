"""Issue 12: a bad configuration gives one clear ATLS config_error line
(never a traceback, never an exit or a reset loop) from the real
firmware/main.py under the unix port, and the device starts by itself once
the files are fixed.  Before the fix: exit(2) or `ValueError: non-hex
digit`, `KeyError: key`, `OSError [addrinfo error -2]` tracebacks."""

import json
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest
from conftest import FIRMWARE, ROOT
from e2e import ServiceProc

PSK = bytes(range(32))
GOOD = {
    "device_id": "dev-1",
    "tls": {"psk": PSK.hex(), "psk_identity": "dev-1"},
    "link": {"host": "127.0.0.1", "port": 9, "rto_ms": 200, "retry_ms": 200},
    "app": {"period_ms": 200, "count": 2, "stats_ms": 100000},
}


class Device:
    """firmware/main.py run in `d` (board_config.json + device.json there),
    the firmware imported from mpy.path (.py, or .mpy with the mpyc fixture)."""

    def __init__(self, mpy, d, heapsize=None):
        path = [p for p in mpy.path if "tests" not in p]  # .frozen, firmware (.py or .mpy)
        cmd = [mpy.binary] + (["-X", "heapsize=%s" % heapsize] if heapsize else [])
        shutil.copy(FIRMWARE / "main.py", d / "main.py")  # as deployed: main.py beside the configs
        self.proc = subprocess.Popen(
            cmd + ["main.py"],
            cwd=d,
            env=dict(os.environ, MICROPYPATH=":".join(path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        self.events = []
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()

    def _read(self, f, out):
        for line in f:
            if not out:
                self.stderr.append(line)
            elif line.startswith("ATLS "):
                self.lines.put(json.loads(line[5:]))
            else:
                self.stderr.append(line)  # MicroPython prints a traceback on stdout

    def wait_for(self, pred, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            try:
                ev = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, "exited %s: %s" % (
                    self.proc.returncode,
                    "".join(self.stderr),
                )
                continue
            self.events.append(ev)
            if pred(ev):
                return ev
        raise AssertionError("timed out; events %s stderr %s" % (self.events, self.stderr))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _dir(tmp_path, dev):
    shutil.copy(ROOT / "boards" / "unix" / "board_config.json", tmp_path / "board_config.json")
    if dev is not None:
        text = dev if isinstance(dev, str) else json.dumps(dev)
        (tmp_path / "device.json").write_text(text)
    return tmp_path


def _with(**tls):
    d = json.loads(json.dumps(GOOD))
    d["tls"].update(tls)
    return d


BAD = {
    "missing": (None, "missing configuration file device.json"),
    "truncated": (json.dumps(GOOD)[:40], "device.json is not valid JSON"),
    "bad_hex": (_with(psk="zz" * 32), "tls.psk is not valid hex"),
    "cert_without_key": (_with(cert="3082"), "tls.cert and tls.key go together"),
    "short_psk": (_with(psk="00" * 4), "tls: psk must be 16..64 bytes"),
    "unknown_host": (
        dict(GOOD, link={"host": "no-such-host.invalid", "port": 1}),
        "cannot reach link.host no-such-host.invalid",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_issue12_bad_config_is_one_clear_line_and_the_device_waits(mpy, tmp_path, case):
    dev, message = BAD[case]
    d = Device(mpy, _dir(tmp_path, dev))
    try:
        ev = d.wait_for(lambda e: e["ev"] == "config_error")
        assert ev["error"].startswith(message), ev
        time.sleep(0.5)
        assert d.proc.poll() is None  # waits for a fix: no exit, no tight loop
        assert "Traceback" not in "".join(d.stderr)
        assert [e["ev"] for e in d.events if e["ev"] != "boot"] == ["config_error"]
    finally:
        d.stop()


def test_issue12_device_starts_once_the_config_is_fixed(mpy, tmp_path):
    (tmp_path / "svc").mkdir()
    svc = ServiceProc(tmp_path / "svc", {"dev-1": PSK})
    try:
        d = Device(mpy, _dir(tmp_path, _with(psk="zz")))
        try:
            d.wait_for(lambda e: e["ev"] == "config_error")
            good = dict(GOOD, link=dict(GOOD["link"], port=svc.addr[1]))
            (tmp_path / "device.json").write_text(json.dumps(good))
            d.wait_for(lambda e: e["ev"] == "up", timeout=30)  # polled every 5 s
            assert [e["ev"] for e in d.events][:2] == ["config_error", "boot"]
        finally:
            d.stop()
    finally:
        svc.stop()
