"""Section `ota` (issue 20): what a firmware update costs on ZigBee.

typical update   frames, bytes on air and airtime of a 104 KB bundle (the
                 58 modules of the firmware as .mpy) at the default rate,
                 by host_tools.ota.service.airtime (no loss)
10 devices       the update model of sim/ota_scenario.py (the real
                 OtaService and device Updater, sealed frames, ~326
                 frames/s of shared air, readings every second): simulated
                 time until all ten run the new version, frames on air,
                 reading latency during the update against after it
"""

from host_tools.ota.service import airtime

TYPICAL_BUNDLE = 104_051  # docs/OTA.md: the 58 modules as .mpy

NOTE = (
    "typical: airtime() of a 104,051-byte bundle, 66-byte frames, CCM_8, rate 10 frames/s "
    "per device; fleet: sim/ota_scenario.py model (simulated seconds, not wall time), 10 "
    "devices updating at once at 10 frames/s each, readings every 1 s sharing ~326 frames/s"
)


def _stats(xs):
    xs = sorted(xs)
    if not xs:
        return None, None
    return round(sum(xs) / len(xs), 1), xs[min(len(xs) - 1, int(len(xs) * 0.95))]


def ota(quick=False):
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
    return out
