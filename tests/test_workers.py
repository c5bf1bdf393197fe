"""`python -m host_tools.service --workers N` (service.supervisor, service.worker;
docs/SCALE.md): real worker processes sharing one UDP port with SO_REUSEPORT,
devices from the firmware's DeviceSession over loopback (tests/udp_devices.py)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import conftest
import pytest
from e2e import wait_file
from udp_devices import Devices, psk_of, read_records

ROOT = conftest.ROOT


class Workers:
    """The supervisor with `n` workers, configured in `tmp`; the app records
    deliveries (sim.sim_app.RecordingEchoApp) to tmp/deliveries.jsonl."""

    def __init__(self, tmp, n, names, extra=None, grace=5):
        self.tmp = Path(tmp)
        reg = {"devices": {k: {"psk": psk_of(k).hex()} for k in names}}
        (self.tmp / "devices.json").write_text(json.dumps(reg))
        cfg = {
            "listen": "127.0.0.1:0",
            "registry": "devices.json",
            "app": "sim.sim_app:RecordingEchoApp",
            "metrics_listen": "127.0.0.1:0",
            "link": {"mtu": 1200, "rto_ms": 200, "rto_max_ms": 800},
        }
        cfg.update(extra or {})
        (self.tmp / "service.json").write_text(json.dumps(cfg))
        self.ready = self.tmp / "ready"
        self.stats = self.tmp / "stats.json"
        self.records = self.tmp / "deliveries.jsonl"
        env = dict(os.environ, ATLS_SIM_RECORD=str(self.records))
        self.log = open(self.tmp / "service.log", "w")
        argv = [
            sys.executable,
            "-m",
            "host_tools.service",
            "--config",
            str(self.tmp / "service.json"),
        ]
        argv += ["--workers", str(n), "--grace", str(grace)]
        argv += ["--ready-file", str(self.ready), "--stats", str(self.stats)]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        host, port = wait_file(self.ready, self.proc, timeout=60).rsplit(":", 1)
        self.addr = (host, int(port))

    def info(self):
        return json.loads((self.tmp / "ready.json").read_text())

    def health(self, row):
        with urllib.request.urlopen("http://%s/healthz" % row["metrics"], timeout=30) as r:
            return json.loads(r.read())

    def logs(self):
        return (self.tmp / "service.log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_and_route_by_sid(tmp_path):
    """Both workers bind the same UDP and HTTP ports (SO_REUSEPORT);
    sessions spread over both workers; each worker holds exactly the
    sessions whose sid carries its server id; SIGKILL of a worker: the
    supervisor starts it again; SIGTERM: every worker drains and exits."""
    names = ["w%02d" % i for i in range(16)]
    w = Workers(tmp_path, 2, names, extra={"http_listen": "127.0.0.1:0"})
    devs = None
    try:
        rows = w.info()["workers"]
        assert [r["server_id"] for r in rows] == [0, 1]
        http = {json.loads((tmp_path / ("ready.w%d.json" % i)).read_text())["http"] for i in (0, 1)}
        assert len(http) == 1 and not http.pop().endswith(":0")  # one HTTP port, shared too
        devs = Devices(names, w.addr, period_ms=200)
        devs.run(devs.all_up, 60, "every device up")
        devs.run(lambda: all(d.n >= 3 for d in devs.devs), 30, "three readings each")
        devs.sending = False
        devs.run(devs.settled, 30, "every reading acknowledged and echoed")
        by_server = {0: 0, 1: 0}
        for d in devs.devs:
            assert len(d.sids) == 1  # one handshake each
            by_server[d.sids[0] >> 15] += 1
        assert by_server[0] and by_server[1], by_server  # the kernel spread them
        held = {r["server_id"]: w.health(r) for r in rows}
        assert {k: h["sessions"] for k, h in held.items()} == by_server
        assert all(h["ok"] and h["redis"] is None for h in held.values())
        got = read_records(w.records)
        assert sorted(got) == sorted((d.name, n) for d in devs.devs for n in range(d.n))

        victim = rows[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            now = w.info()["workers"][1]["pid"]
            if now != victim and w.health(w.info()["workers"][1])["ok"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("worker 1 was not restarted:\n" + w.logs()[-3000:])
        stats = json.loads(w.stats.read_text())
        deadline = time.time() + 5
        while stats["restarts"] != {"1": 1} and time.time() < deadline:
            time.sleep(0.3)
            stats = json.loads(w.stats.read_text())
        assert stats["restarts"] == {"1": 1} and stats["given_up"] == []
        pids = [r["pid"] for r in w.info()["workers"]]
    finally:
        if devs is not None:
            devs.close()
        w.stop()
    assert w.proc.returncode == 0, w.logs()[-3000:]
    assert not any(_alive(p) for p in pids)
    assert w.logs().count('"event": "draining"') >= 2


def test_a_worker_that_keeps_dying_is_given_up(tmp_path):
    """Bounded restarts: a worker index that exits MAX_RESTARTS times within
    the window is not started again; with all given up the supervisor exits 1."""
    from host_tools.service import supervisor

    (tmp_path / "devices.json").write_text('{"devices": {}}')
    (tmp_path / "service.json").write_text('{"listen": "127.0.0.1:0"}')
    crash = [sys.executable, "-c", "import sys; sys.exit(3)"]
    sup = supervisor.Supervisor(2, crash, ready=None, stats=tmp_path / "s.json", grace_s=1)
    t0 = time.time()
    assert sup.run() == 2  # never ready: reported as a start failure
    assert time.time() - t0 < 20
    assert sup.given_up == {0, 1}
    assert dict(sup.restarts) == {0: supervisor.MAX_RESTARTS, 1: supervisor.MAX_RESTARTS}


@pytest.mark.parametrize("workers", ["0"])
def test_workers_must_be_positive(workers):
    r = subprocess.run(
        [sys.executable, "-m", "host_tools.service", "--config", "x.json", "--workers", workers],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--workers must be at least 1" in r.stderr


def test_a_draining_worker_starts_no_session_and_keeps_its_own():
    """service.worker.drain (SIGTERM): a new device's first flight gets
    ERROR(busy); an established session goes on until the process exits."""
    import asyncio

    from atls import protocol
    from atls.link import LinkConfig
    from atls.session import DeviceSession
    from atls.tls.client import ClientConfig
    from host_tools.service.core import Service
    from host_tools.service.tls_engine import ServerConfig
    from host_tools.service.worker import drain, health

    psks = {b"old": psk_of("old"), b"new": psk_of("new")}
    svc = Service(ServerConfig(psks=psks), LinkConfig(mtu=1200))
    sent = []
    svc._send = lambda data, addr: sent.append((bytes(data), addr))

    def device(name, addr):
        d = DeviceSession(ClientConfig(psk=psks[name], psk_identity=name), LinkConfig(mtu=1200))
        d.connect(0)
        return d, addr

    def pump(dev, addr, now):
        for _ in range(20):
            for out in dev.datagrams(now):
                svc.datagram_received(out, addr)
            svc.start_queued(now)
            mine = [d for d, a in sent if a == addr]
            sent[:] = [(d, a) for d, a in sent if a != addr]
            for d in mine:
                dev.receive(d, now)
            if not mine:
                return

    old, a1 = device(b"old", ("192.0.2.1", 1))
    pump(old, a1, 0)
    assert old.state == "up"
    asyncio.run(drain(svc))
    assert svc.draining and health(svc, 0)["ok"] is False
    new, a2 = device(b"new", ("192.0.2.2", 2))
    for out in new.datagrams(0):
        svc.datagram_received(out, a2)
    svc.start_queued(0)
    answers = [d for d, a in sent if a == a2]
    assert answers and all(protocol.peek(d) == (protocol.ERROR, 0) for d in answers)
    assert answers[0][3] == protocol.BUSY and svc.counters["drops"]["busy"] == 1
    old.send(b"still here", 10)
    pump(old, a1, 10)
    assert svc.counters["messages_in"] == 1 and health(svc, 0)["sessions"] == 1


def test_each_worker_has_its_own_mqtt_client_id_and_state(tmp_path):
    """Two MQTT clients with one id take turns at the broker (each connect
    drops the other): under --workers each worker gets its own id and file."""
    from host_tools.service.config import build_from_config

    (tmp_path / "devices.json").write_text('{"devices": {}}')
    cfg = {"app": "mqtt", "mqtt": {"client_id": "svc", "prefix": "p"}}
    (tmp_path / "service.json").write_text(json.dumps(cfg))
    apps = [build_from_config(tmp_path / "service.json", worker=(i, 2))[0].app for i in (0, 1)]
    assert [a.cfg.client_id for a in apps] == ["svc-0", "svc-1"]
    assert [Path(a.cfg.state).name for a in apps] == [
        "mqtt-state.sqlite.server-0",
        "mqtt-state.sqlite.server-1",
    ]
    single = build_from_config(tmp_path / "service.json")[0].app
    assert single.cfg.client_id == "svc"
