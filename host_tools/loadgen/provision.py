"""Provisioning for a load run: N device identities with fresh PSKs in a
registry file, a service.json that runs the counting application, and the
service as a real process (`python -m host_tools.service`, optionally with
--workers), all in a temporary directory.

The service's admission limits are set for a capacity test: every device is
an honest, separate address, so the per-address rate limit stays, while the
caps that exist to stop a flood from a few addresses (sessions, half-open
sessions and first flights per IP) are raised to the fleet size: behind a
balancer (nginx) every device has the balancer's IP.  PSKs never leave the
directory (the registry file is 0600) and are never logged.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from atls.protocol import SUITE_NAMES, TLS_AES_128_CCM_8_SHA256
from host_tools.bench.procs import stop, wait_path
from host_tools.loadgen.app import RECORD_ENV
from host_tools.toolchain import ROOT

__all__ = ["identities", "write_config", "ServiceProcess", "tree_cpu_s", "children"]


def identities(n, prefix="ld"):
    """{identity bytes: 16-byte PSK} for n devices, fresh keys."""
    return {("%s-%05d" % (prefix, i)).encode(): os.urandom(16) for i in range(n)}


def service_limits(n):
    """Admission limits for a fleet of n honest devices (module doc)."""
    cap = max(n, 64)
    return {
        "max_sessions": cap + 64,
        "max_sessions_per_ip": cap + 64,
        "max_half_open": 1024,
        "max_half_open_per_ip": 1024,
        "max_first_flights": 1024,
        "max_first_flights_per_ip": 1024,
        "first_flights_per_ip_per_s": 100000,
        "first_flights_per_ip_burst": 100000,
        "intake_per_ip": 1024,
        "intake_max": 4096,
    }


def write_config(tmp, psks, suite=TLS_AES_128_CCM_8_SHA256, listen="127.0.0.1:0", extra=None):
    """devices.json (0600) and service.json in `tmp`; returns the config path."""
    tmp = Path(tmp)
    reg = tmp / "devices.json"
    fd = os.open(str(reg), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"devices": {k.decode(): {"psk": v.hex()} for k, v in psks.items()}}, f)
    cfg = {
        "listen": listen,
        "registry": "devices.json",
        "suites": [SUITE_NAMES[suite]],
        "app": "host_tools.loadgen.app:CountingApp",
        "link": {"mtu": 1200, "rto_ms": 1000, "rto_max_ms": 8000},
        "limits": service_limits(len(psks)),
    }
    cfg.update(extra or {})
    path = tmp / "service.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


class ServiceProcess:
    """The service as a real process in `tmp`: `addr` once it listens,
    `counters()` from its --stats file, `record_dir` for CountingApp.
    workers: None (one process) or N (`--workers N`, the supervisor);
    python: the interpreter command (e.g. with `-m cProfile -o F` to profile)."""

    def __init__(self, tmp, config, workers=None, log_name="service.log", args=(), python=None):
        self.tmp = Path(tmp)
        self.record_dir = self.tmp / "record"
        self.record_dir.mkdir(exist_ok=True)
        self.ready = self.tmp / "service.ready"
        self.stats = self.tmp / "service.stats.json"
        for stale in (self.ready, self.stats):
            stale.unlink(missing_ok=True)
        cmd = list(python or [sys.executable]) + [
            "-m",
            "host_tools.service",
            "--config",
            str(config),
        ]
        cmd += ["--ready-file", str(self.ready), "--stats", str(self.stats)]
        if workers:
            cmd += ["--workers", str(workers)]
        cmd += list(args)
        env = dict(os.environ, **{RECORD_ENV: str(self.record_dir)})
        self.log = open(self.tmp / log_name, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        try:
            host, port = wait_path(self.ready, self.proc, "service", timeout=60).rsplit(":", 1)
        except Exception:
            self.stop()
            raise
        self.addr = (host, int(port))

    @property
    def pid(self):
        return self.proc.pid

    def cpu_s(self):
        return tree_cpu_s(self.proc.pid)

    def counters(self):
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self):
        stop(self.proc)
        self.log.close()


def children(pid):
    """The pids of a process's live children (/proc/<pid>/task/*/children)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def tree_cpu_s(pid):
    """utime + stime of a process and its live descendants, plus the
    children it has reaped (cutime + cstime), seconds."""
    total = 0.0
    todo = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick
        todo += children(p)
    return total
