"""Helpers for end-to-end tests: real service process (CPython), real device
processes (MicroPython unix port), optional lossy relay, loopback UDP only."""

import json
import subprocess
import sys
import time
from pathlib import Path

import conftest
from cryptography.hazmat.primitives import hashes, serialization

from host_tools import pki

ROOT = conftest.ROOT


def wait_file(path, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(
                "process exited early: %s"
                % (proc.stderr.read() if proc.stderr else proc.returncode)
            )
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for %s" % path)


def der_hex(cert):
    return cert.public_bytes(serialization.Encoding.DER).hex()


class ServiceProc:
    """The service as a real process, configured in `tmp`."""

    def __init__(
        self,
        tmp,
        devices=None,
        server=None,
        device_ca=None,
        link=None,
        limits=None,
        extra=None,
        certs=None,
    ):
        """devices: {name: PSK}; certs: {name: device certificate} registered
        by fingerprint (with device_ca)."""
        self.tmp = Path(tmp)
        reg = {"devices": {k: {"psk": v.hex()} for k, v in (devices or {}).items()}}
        for name, cert in (certs or {}).items():
            fp = cert.fingerprint(hashes.SHA256()).hex()
            reg["devices"].setdefault(name, {})["cert_sha256"] = fp
        if device_ca is not None:
            (self.tmp / "device-ca.pem").write_bytes(pki.pem(device_ca.cert))
            reg["device_ca"] = "device-ca.pem"
        (self.tmp / "devices.json").write_text(json.dumps(reg))
        cfg = {
            "listen": "127.0.0.1:0",
            "registry": "devices.json",
            "link": link or {"mtu": 1200, "rto_ms": 300, "rto_max_ms": 2000},
        }
        if server is not None:
            (self.tmp / "server.pem").write_bytes(pki.pem(server.cert))
            (self.tmp / "server.key").write_bytes(pki.pem(server.key))
            cfg.update(cert="server.pem", key="server.key")
        if limits:
            cfg["limits"] = limits
        cfg.update(extra or {})
        (self.tmp / "service.json").write_text(json.dumps(cfg))
        self.ready = self.tmp / "service.ready"
        for stale in (self.ready, self.tmp / "service.ready.json"):  # a restart: wait for ours
            stale.unlink(missing_ok=True)
        self.stats = self.tmp / "service.stats.json"
        self.log = open(self.tmp / "service.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "host_tools.service",
                "--config",
                str(self.tmp / "service.json"),
                "--stats",
                str(self.stats),
                "--ready-file",
                str(self.ready),
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        host, port = wait_file(self.ready, self.proc).rsplit(":", 1)
        self.addr = (host, int(port))

    def counters(self, settle=1.3):
        time.sleep(settle)  # stats are written every second
        return json.loads(self.stats.read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def logs(self):
        return (self.tmp / "service.log").read_text()


class Relay:
    def __init__(self, tmp, target, loss, seed=1):
        self.ready = Path(tmp) / ("relay-%d.ready" % seed)
        self.stats = Path(tmp) / ("relay-%d.stats" % seed)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "lossy_relay.py"),
                "--target",
                "%s:%d" % target,
                "--loss",
                str(loss),
                "--seed",
                str(seed),
                "--ready-file",
                str(self.ready),
                "--stats",
                str(self.stats),
            ],
            stderr=subprocess.PIPE,
        )
        host, port = wait_file(self.ready, self.proc).rsplit(":", 1)
        self.addr = (host, int(port))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def run_device(mpy, tmp, cfg, name="device", heapsize=None, timeout=120):
    path = Path(tmp) / (name + ".json")
    path.write_text(json.dumps(cfg))
    res = mpy.run(
        script=ROOT / "tests" / "mpy" / "device_echo.py",
        args=[path],
        heapsize=heapsize,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.json()


def start_device(mpy, tmp, cfg, name="device", heapsize=None):
    path = Path(tmp) / (name + ".json")
    path.write_text(json.dumps(cfg))
    return mpy.popen(
        ROOT / "tests" / "mpy" / "device_echo.py",
        args=[path],
        heapsize=heapsize,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
