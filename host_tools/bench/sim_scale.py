"""Section `sim_scale` (issue 6): the simulator with 10 and 100 devices (2
and 4 with --quick): wall time, time to all up, peak RSS per process.  Each
run is `python -m host_tools.bench.sim_child`, the simulator with probes."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.toolchain import ROOT

NOTE = "python -m sim (default scenario) as a subprocess; RSS from /proc VmHWM"


def _sim_run(n, duration, period, tmp):
    report = Path(tmp) / ("report-%d.json" % n)
    out = Path(tmp) / ("probe-%d.json" % n)
    cmd = [sys.executable, "-m", "host_tools.bench.sim_child", "--out", str(out), "--"]
    cmd += ["--devices", str(n), "--duration", str(duration), "--period", str(period)]
    cmd += ["--seed", "1", "--report", str(report)]
    cmd += ["--workdir", str(Path(tmp) / ("sim-%d" % n))]
    r0 = os.times()
    t0 = time.time()
    p = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(900, 20 * n + duration * 3)
    )
    wall = time.time() - t0
    r1 = os.times()
    if not out.exists():
        raise RuntimeError("sim-child (%d devices) failed: %s" % (n, (p.stderr or p.stdout)[-800:]))
    probe = json.loads(out.read_text())
    rep = json.loads(report.read_text()) if report.exists() else {}
    tot = rep.get("totals", {})
    k = "n%d_" % n
    res = {
        k + "wall_s": round(wall, 1),
        k + "cpu_s": round(
            (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 1
        ),
        k + "all_paired_s": probe["all_paired_s"],
        k + "first_up_s": probe["first_up_s"],
        k + "all_up_s": probe["all_up_s"],
        k + "up": probe["up"],
        k + "verdict": rep.get("verdict", "no report"),
        k + "handshake_ms_median": tot.get("handshake_ms_median"),
        k + "handshake_ms_p95": tot.get("handshake_ms_p95"),
        k + "messages_acknowledged": tot.get("acknowledged"),
        k + "retransmissions": tot.get("retransmissions"),
        k + "service_busy_drops": (rep.get("service") or {}).get("drops", {}).get("busy", 0),
        k + "device_peak_rss_kb_max": probe["device_peak_rss_kb_max"],
        k + "device_peak_rss_kb_mean": probe["device_peak_rss_kb_mean"],
        k + "devices_peak_rss_mb_total": round(probe["devices_concurrent_rss_kb_peak"] / 1024, 1),
        k + "all_processes_peak_rss_mb_total": round(probe["all_concurrent_rss_kb_peak"] / 1024, 1),
    }
    for name, kb in sorted(probe["host_peak_rss_kb"].items()):
        res[k + "%s_peak_rss_kb" % name] = kb
    failed = [c["check"] for c in rep.get("checks", []) if not c["passed"]]
    if failed:
        res[k + "failed_checks"] = "; ".join(failed)
    return res


def sim_scale(quick=False):
    """The simulator with 10 and 100 devices (2 and 4 with quick)."""
    small, large = (2, 4) if quick else (10, 100)
    duration, period = (1, 1000) if quick else (30, 5000)
    tmp = tempfile.mkdtemp(prefix="atls-bench-sim-")
    try:
        res = {"duration_s": duration, "period_ms": period}
        for n in (small, large):
            res.update(_sim_run(n, duration, period, tmp))
        a, b = "n%d_" % small, "n%d_" % large
        res["growth_devices_x"] = large / small
        res["growth_wall_x"] = round(res[b + "wall_s"] / res[a + "wall_s"], 2)
        if res[a + "all_up_s"] and res[b + "all_up_s"]:
            res["growth_all_up_x"] = round(res[b + "all_up_s"] / res[a + "all_up_s"], 2)
        if res[a + "cpu_s"]:
            res["growth_cpu_x"] = round(res[b + "cpu_s"] / res[a + "cpu_s"], 2)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
