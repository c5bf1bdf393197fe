"""Section `ota` (issue 20): what a firmware update costs on ZigBee.

typical update   frames, bytes on air and airtime of a 104 KB bundle (the
                 58 modules of the firmware as .mpy) at the default rate,
                 by host_tools.ota.service.airtime (no loss)
10 devices       the update model of sim/ota_scenario.py (the real
                 OtaService and device Updater, sealed frames, ~326
                 frames/s of shared air, readings every second): simulated
                 time until all ten run the new version, frames on air,
                 reading latency during the update against after it
real run         scenario `ota` of the simulator (sim/ota_run.py): MicroPython
                 device processes, emulated radio, the tampering gateway and
                 the service's OTA app; readings' ack latency (device tx to
                 device ack, wall clock) while the update runs and outside
                 it, wall time until every device settled, air used during
                 the update, one update's bytes on air (a device that took B
                 minus the one that refused after the header)
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.ota.service import airtime
from host_tools.toolchain import ROOT

BITRATE = 250_000  # 802.15.4 at 2.4 GHz, as sim/radio/medium.py
TYPICAL_BUNDLE = 104_051  # docs/OTA.md: the 58 modules as .mpy

NOTE = (
    "typical: airtime() of a 104,051-byte bundle, 66-byte frames, CCM_8, rate 10 frames/s "
    "per device; fleet: sim/ota_scenario.py model (simulated seconds, not wall time), 10 "
    "devices updating at once at 10 frames/s each, readings every 1 s sharing ~326 frames/s; "
    "real_*: `python -m sim --scenario ota --devices 10` (4 with --quick, at 200 frames/s), "
    "wall clock on this machine, update frames at 40 frames/s per device, 250 for all"
)


def _stats(xs):
    xs = sorted(xs)
    if not xs:
        return None, None
    return round(sum(xs) / len(xs), 1), xs[min(len(xs) - 1, int(len(xs) * 0.95))]


def ota(quick=False, real=True):
    from sim.ota_scenario import run_model

    a = airtime(TYPICAL_BUNDLE)
    out = {
        "typical_bundle_bytes": TYPICAL_BUNDLE,
        "typical_frames_down": a["frames_down"],
        "typical_frames_up": a["frames_up"],
        "typical_bytes_on_air": a["bytes_on_air"],
        "typical_seconds_at_10fps": round(a["seconds"], 1),
        "typical_network_share": round(a["network_share"], 3),
    }
    kb = 12 if quick else 100
    r = run_model(devices=10, seed=1, files_kb=kb, tamper=0.0, faults=False, rate=(10, None))
    devs = r["devices"].values()
    during = [x for d in devs for x in d["latency_during"]]
    outside = [x for d in devs for x in d["latency_outside"]]
    out.update(
        {
            "fleet_devices": 10,
            "fleet_bundle_bytes": r["bundle_bytes"],
            "fleet_all_updated": all(d["version"] == "1.1.0" for d in devs),
            "fleet_update_s": r["update_s"],
            "fleet_frames_on_air": r["air"]["frames"],
            "fleet_bytes_on_air": r["air"]["bytes"],
            "fleet_resent_bytes": r["counters"]["resent_bytes"],
        }
    )
    out["reading_latency_ms_mean_during"], out["reading_latency_ms_p95_during"] = _stats(during)
    out["reading_latency_ms_mean_outside"], out["reading_latency_ms_p95_outside"] = _stats(outside)
    if real:  # tests/test_ota_scenario.py checks real_figures() on its own run
        out.update(real_run(4 if quick else 10, ["--ota-rate", "200"] if quick else []))
    return out


def real_run(devices, extra=()):
    """Scenario `ota` as processes (sim/ota_run.py): its figures, prefixed real_."""
    with tempfile.TemporaryDirectory() as tmp:
        rep = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "sim", "--scenario", "ota", "--devices", str(devices)]
        cmd += ["--duration", "10", "--report", str(rep), "--workdir", str(Path(tmp) / "w")]
        p = subprocess.run(cmd + list(extra), cwd=ROOT, capture_output=True, text=True)
        if not rep.exists():
            raise RuntimeError("sim --scenario ota: %s" % (p.stdout + p.stderr)[-800:])
        return real_figures(json.loads(rep.read_text()))


def real_figures(report):
    """The real_* metrics of a scenario `ota` report (python -m sim --report)."""
    r = report["ota"]
    devs = {d["device"]: d for d in report["devices"]}
    took, refused = devs["dev-01"], devs["dev-03"]  # B in full / refused after the header
    return {
        "real_devices": len(devs),
        "real_verdict": report["verdict"],
        "real_bundle_bytes": r["bundle_bytes"],
        "real_update_s": r["update_s"],
        "real_ack_ms_p50_during": r["ack_ms_during"]["p50"],
        "real_ack_ms_p95_during": r["ack_ms_during"]["p95"],
        "real_ack_ms_p50_outside": r["ack_ms_outside"]["p50"],
        "real_ack_ms_p95_outside": r["ack_ms_outside"]["p95"],
        "real_readings_during": r["ack_ms_during"]["n"],
        "real_readings_outside": r["ack_ms_outside"]["n"],
        "real_max_gap_s": max(d["max_gap_s"] or 0 for d in r["devices"].values()),
        "real_air_frames_during": r["air_during"]["frames"],
        "real_air_bytes_during": r["air_during"]["bytes"],
        "real_airtime_s_during": round(r["air_during"]["airtime_ms"] / 1000, 1),
        "real_update_bytes_on_air": took["bytes_on_air"] - refused["bytes_on_air"],
        "real_update_frames_on_air": took["frames_on_air"] - refused["frames_on_air"],
        "real_update_airtime_s": round(
            (took["bytes_on_air"] - refused["bytes_on_air"]) * 8 / BITRATE, 1
        ),
        "real_tampered_chunks": r["tamper_update"],
    }
