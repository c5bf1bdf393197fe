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
kill test: it kills a worker and returns figures to add); traffic goes on
until every device's next message is acknowledged: recovery_ms from the
call (a device's next message leaves up to one period later),
recovery_max_latency_ms the longest send-to-acknowledgement of those.
"""

import shutil
import tempfile
import time
from pathlib import Path

from host_tools.loadgen.fleet import Fleet
from host_tools.loadgen.provision import ServiceProcess, identities, write_config
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
):
    """Metrics of one run (module doc); `keep`: a directory to run in and
    leave in place (logs, records), else a temporary one removed after."""
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="atls-loadgen-"))
    tmp.mkdir(parents=True, exist_ok=True)
    psks = identities(devices)
    config = write_config(tmp, psks, extra=extra_config)
    svc = ServiceProcess(tmp, config, workers=workers, args=service_args)
    fleet = None
    try:
        period_ms = max(1, int(devices * 1000 / rate))
        fleet = Fleet(psks, svc.addr, period_ms, size, concurrency, per_ip)
        res = {"devices": devices, "workers": workers or 1, "rate_target_per_s": rate}
        # handshakes
        c0, w0 = svc.cpu_s(), time.monotonic()
        limit = handshake_timeout_s or 60 + devices * 0.02
        fleet.run_until(lambda: len(fleet.up_at) >= devices, limit)
        c1, w1 = svc.cpu_s(), time.monotonic()
        n_up = len(fleet.up_at)
        res["established"] = n_up
        res["handshake_failures_seen"] = fleet.counts["failed"]
        res["handshakes_per_s"] = round(n_up / (w1 - w0), 1)
        res["cpu_us_per_handshake"] = round((c1 - c0) / n_up * 1e6, 1) if n_up else None
        if n_up < devices:
            res["error"] = "%d of %d devices up after %.0f s" % (n_up, devices, limit)
        # steady traffic: one period to settle, then measured
        fleet.start_sending()
        fleet.run_until(lambda: False, min(period_ms / 1000.0, duration / 2))
        a0, c0, w0 = fleet.counts["acks"], svc.cpu_s(), time.monotonic()
        fleet.run_until(lambda: False, duration)
        a1, c1, w1 = fleet.counts["acks"], svc.cpu_s(), time.monotonic()
        msgs = a1 - a0
        res["messages_per_s"] = round(msgs / (w1 - w0), 1)
        res["cpu_us_per_msg"] = round((c1 - c0) / msgs * 1e6, 1) if msgs else None
        res["service_cpu_share"] = round((c1 - c0) / (w1 - w0), 3)
        if during is not None:  # e.g. kill a worker, then every device's next message
            fleet.watch_all()
            res.update(during(fleet, svc) or {})
            devs = len(fleet.devices)
            fleet.run_until(lambda: len(fleet.recovered) >= devs, 4 * period_ms / 1000.0 + 30)
            rec = fleet.recovered
            res["recovered_devices"] = len(rec)
            res["recovery_ms"] = max(r[1] for r in rec) if rec else None
            res["recovery_max_latency_ms"] = max(r[2] for r in rec) if rec else None
        # drain, then count
        fleet.stop_sending()
        fleet.run_until(lambda: fleet.unacked() == 0, drain_s)
        time.sleep(0.2)
        res.update(tally(fleet, svc.record_dir))
        res["service_counters"] = {
            k: v
            for k, v in svc.counters().items()
            if k in ("handshakes_ok", "messages_in", "drops")
        }
        return res
    finally:
        if fleet is not None:
            fleet.close()
        svc.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
