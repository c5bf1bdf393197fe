"""Issue 19's kill test at small scale (docs/SCALE.md "When a worker dies"):
2 workers (`--workers 2`, SO_REUSEPORT) sharing sessions through a real
Redis, 50 devices (the firmware's DeviceSession, tests/udp_devices.py) in
steady traffic; one worker gets SIGKILL.  Checked at the application
(sim.sim_app.RecordingEchoApp, every delivery of every worker): nothing
lost, nothing duplicated; no established session handshakes again; the
recovery time (kill until every affected device's next message is
acknowledged) is reported (build/kill_test.json).  The same with SIGTERM
(the worker drains, service.worker, and the supervisor starts it again)."""

import json
import os
import signal

import conftest
import pytest
from test_workers import Workers
from udp_devices import Devices, read_records

from host_tools.service.redis_server import RedisServer

ROOT = conftest.ROOT
N_DEVICES = 50


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_killed_worker_loses_duplicates_and_rehandshakes_nothing(tmp_path, sig):
    """SIGKILL: the worker vanishes mid-traffic; SIGTERM: it drains (service.worker)."""
    names = ["k%02d" % i for i in range(N_DEVICES)]
    rds = RedisServer(tmp_path / "redis")
    redis_cfg = {"url": rds.url, "seal_key_file": "seal.key", "key_prefix": "kill:"}
    per_ip = {"max_half_open_per_ip": 64, "max_first_flights_per_ip": 64}  # all on 127.0.0.1
    w = Workers(tmp_path, 2, names, extra={"redis": redis_cfg, "limits": per_ip})
    devs = None
    try:
        rows = w.info()["workers"]
        devs = Devices(names, w.addr, period_ms=400)
        devs.run(devs.all_up, 60, "every device up")
        steady = lambda: min(d.s.counters["delivered"] for d in devs.devs) >= 4  # noqa: E731
        devs.run(steady, 30, "steady traffic: four readings of each acknowledged")
        before = devs.lost_sessions()  # a slow start may time out a handshake: not the kill's
        victim = rows[1]
        assert w.health(victim)["redis"] is True
        affected = [d for d in devs.devs if d.sids[-1] >> 15 == victim["server_id"]]
        sid_at_kill = {d.name: d.sids[-1] for d in devs.devs}
        assert affected, "no session on the worker to kill"
        mark = {d.name: d.n for d in affected}  # readings queued before the kill
        os.kill(victim["pid"], getattr(signal, sig))
        killed_at = devs.now()

        def recovered():
            return all(d.s.counters["delivered"] > mark[d.name] for d in affected)

        devs.run(recovered, 30, "every affected device's next reading acknowledged")
        recovery_ms = devs.now() - killed_at
        stop_at = devs.now() + 1500  # a little more steady traffic after the recovery
        devs.run(lambda: devs.now() >= stop_at, 10, "traffic after the recovery")
        devs.sending = False
        devs.run(devs.settled, 60, "every reading acknowledged and echoed")
        stats = json.loads(w.stats.read_text())
    finally:
        if devs is not None:
            devs.close()
        w.stop()
        rds.stop()
    got = read_records(w.records)
    sent = [(d.name, n) for d in devs.devs for n in range(d.n)]
    lost = set(sent) - set(got)
    duplicated = len(got) - len(set(got))
    rehandshakes = devs.lost_sessions(killed_at)  # established sessions ended since the kill
    report = {
        "signal": sig,
        "devices": N_DEVICES,
        "workers": 2,
        "affected": len(affected),
        "messages": len(sent),
        "kill_lost": len(lost),
        "kill_duplicated": duplicated,
        "kill_rehandshakes": rehandshakes,
        "kill_recovery_ms": recovery_ms,
        "killed_at_ms": killed_at,
        "sessions_lost_before_kill": before,
        "restarts": stats.get("restarts"),
    }
    (ROOT / "build").mkdir(exist_ok=True)
    out = ROOT / "build" / "kill_test.json"
    runs = json.loads(out.read_text()) if out.exists() else {}
    runs[sig] = report
    out.write_text(json.dumps(runs, indent=1, sort_keys=True))
    print("kill test:", json.dumps(report))
    assert not lost, sorted(lost)[:10]
    assert duplicated == 0
    assert set(got) == set(sent)  # nothing the devices did not send
    assert rehandshakes == 0, [(d.name, d.up_at, d.downs) for d in devs.devs if d.downs]
    assert all(d.sids[-1] == d.sid() == sid_at_kill[d.name] for d in devs.devs)  # same sessions
    assert all(sorted(set(d.echoes)) == list(range(d.n)) for d in devs.devs)
    assert recovery_ms < 15000
