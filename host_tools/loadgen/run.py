"""One measured load run against the real service process: provision,
handshake ramp, steady traffic, drain, exact tally.  The CLI
(`python -m host_tools.loadgen`) and `make bench` (section scale) use it.

Phases and what is measured (service CPU is the process tree's utime +
stime from /proc, workers included; wall time is noisy on a shared machine,
CPU time much less):
  handshakes  every device handshakes once (at most `concurrency` at a time):
              handshakes_per_s (wall), cpu_us_per_handshake (service CPU)
  steady      each device sends every devices/rate seconds for `duration`
              seconds: messages_per_s (acknowledged, wall),
              cpu_us_per_msg (service CPU per acknowledged message)
  drain       sending stops; the fleet waits until every message is
              acknowledged (or drain_s passes), then the tally:
              lost, duplicated, rehandshakes (host_tools.loadgen.tally)
`during(fleet, service)`, if given, is called after the steady phase (the
kill test: it kills a worker, may name the affected devices in
fleet.affected, and returns figures to add); traffic goes on until every
device's next message is acknowledged: recovery_ms is the longest
send-to-acknowledgement of an affected device's first message after the
call, all_next_acked_ms the time from the call until every device's next
message was acknowledged (a device's next message leaves up to one period
later).
"""

import shutil
import tempfile
import time
from pathlib import Path

from host_tools.loadgen.fleet import Fleet
from host_tools.loadgen.provision import ServiceProcess, identities, tree_cpu_s, write_config
from host_tools.loadgen.tally import tally

__all__ = ["load_run"]


def load_run(
    devices,
    rate,
    duration,
    workers=None,
    concurrency=32,
    size=16,
    per_ip=16,
    extra_config=None,
    service_args=(),
    during=None,
    handshake_timeout_s=None,
    drain_s=30,
    keep=None,
    redis=False,
    nginx=False,
):
    """Metrics of one run (module doc); `keep`: a directory to run in and
    leave in place (logs, records), else a temporary one removed after.
    redis: a private redis-server and the service's `redis` section;
    nginx: the devices reach the service through nginx (balancer)."""
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="atls-loadgen-"))
    tmp.mkdir(parents=True, exist_ok=True)
    psks = identities(devices)
    extra = dict(extra_config or {})
    helpers = []  # (name, object with pid and stop())
    svc = fleet = None
    try:
        if redis:
            from host_tools.service.redis_server import RedisServer

            rs = RedisServer(tmp / "redis")
            helpers.append(("redis", rs.proc, rs))
            extra["redis"] = dict({"url": rs.url}, **extra.get("redis", {}))
        config = write_config(tmp, psks, extra=extra)
        svc = ServiceProcess(tmp, config, workers=workers, args=service_args)
        target = svc.addr
        if nginx:
            from host_tools.loadgen.balancer import Nginx

            ng = Nginx(tmp / "nginx", [svc.addr])
            helpers.append(("nginx", ng.proc, ng))
            target = ng.addr
        period_ms = max(1, int(devices * 1000 / rate))
        fleet = Fleet(psks, target, period_ms, size, concurrency, per_ip)
        res = {"devices": devices, "workers": workers or 1, "rate_target_per_s": rate}
        res.update(redis=bool(redis), nginx=bool(nginx))

        def cpu():
            return [svc.cpu_s()] + [tree_cpu_s(p.pid) for _, p, _ in helpers]

        # handshakes
        c0, w0 = cpu(), time.monotonic()
        limit = handshake_timeout_s or 60 + devices * 0.02
        fleet.run_until(lambda: len(fleet.up_at) >= devices, limit)
        c1, w1 = cpu(), time.monotonic()
        n_up = len(fleet.up_at)
        res["established"] = n_up
        res["handshake_failures_seen"] = fleet.counts["failed"]
        res["handshakes_per_s"] = round(n_up / (w1 - w0), 1)
        res["cpu_us_per_handshake"] = round((c1[0] - c0[0]) / n_up * 1e6, 1) if n_up else None
        for k, (name, _, _) in enumerate(helpers, 1):
            res["%s_cpu_us_per_handshake" % name] = (
                round((c1[k] - c0[k]) / n_up * 1e6, 1) if n_up else None
            )
        if n_up < devices:
            res["error"] = "%d of %d devices up after %.0f s" % (n_up, devices, limit)
        # steady traffic: one period to settle, then measured
        fleet.start_sending()
        fleet.run_until(lambda: False, min(period_ms / 1000.0, duration / 2))
        a0, c0, w0, p0 = fleet.counts["acks"], cpu(), time.monotonic(), time.process_time()
        fleet.run_until(lambda: False, duration)
        a1, c1, w1, p1 = fleet.counts["acks"], cpu(), time.monotonic(), time.process_time()
        msgs = a1 - a0
        res["messages_per_s"] = round(msgs / (w1 - w0), 1)
        res["cpu_us_per_msg"] = round((c1[0] - c0[0]) / msgs * 1e6, 1) if msgs else None
        res["service_cpu_share"] = round((c1[0] - c0[0]) / (w1 - w0), 3)
        res["loadgen_cpu_us_per_msg"] = round((p1 - p0) / msgs * 1e6, 1) if msgs else None
        for k, (name, _, _) in enumerate(helpers, 1):
            res["%s_cpu_us_per_msg" % name] = (
                round((c1[k] - c0[k]) / msgs * 1e6, 1) if msgs else None
            )
        if during is not None:  # e.g. kill a worker, then every device's next message
            fleet.watch_all()
            res.update(during(fleet, svc) or {})
            devs = len(fleet.devices)
            fleet.run_until(lambda: len(fleet.recovered) >= devs, 2 * period_ms / 1000.0 + 30)
            rec = fleet.recovered
            hit = fleet.affected
            mine = [r for r in rec if hit is None or r[0] in hit]
            res["recovered_devices"] = len(mine)
            res["recovery_ms"] = max(r[2] for r in mine) if mine else None
            res["all_next_acked_ms"] = max(r[1] for r in rec) if len(rec) == devs else None
        # drain, then count
        fleet.stop_sending()
        fleet.run_until(lambda: fleet.unacked() == 0, drain_s)
        res.update(tally(fleet, svc.record_dir))
        time.sleep(1.1)  # the stats file is written every second
        c = svc.counters()
        c = c.get("total", c)  # --workers: the supervisor sums the workers'
        res["service_counters"] = {
            k: c.get(k) for k in ("handshakes_ok", "handshakes_failed", "messages_in", "drops")
        }
        return res
    finally:
        if fleet is not None:
            fleet.close()
        for name, _, h in helpers:
            if name == "nginx":
                h.stop()
        if svc is not None:
            svc.stop()
        for name, _, h in helpers:
            if name == "redis":
                h.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
