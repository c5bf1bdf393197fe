"""The `sim_scale` section's child process: `python -m sim` run in this
process with probes added: the first "up" (and "paired"/"handshaking") of each
device, and the peak RSS of every process of the fleet (sampled every 0.5 s).

    python -m host_tools.bench.sim_child --out PROBE.json -- SIM ARGS...
"""

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from host_tools.bench.procs import proc_status


def _sample(probe):
    fleet = probe["fleet"]
    if fleet is None:
        return
    total = devs = 0
    for name, p in list(fleet.procs.items()):
        st = proc_status(p.pid)
        if not st:
            continue
        key = "%s:%d" % (name, p.pid)
        probe["peak_kb"][key] = max(probe["peak_kb"].get(key, 0), st.get("VmHWM", 0))
        total += st.get("VmRSS", 0)
        if name.startswith("dev-"):
            devs += st.get("VmRSS", 0)
    probe["peak_total_kb"] = max(probe["peak_total_kb"], total)
    probe["peak_devices_kb"] = max(probe["peak_devices_kb"], devs)


def _install_probes(probe):
    """Wrap sim.fleet's DeviceState.feed (device events) and Fleet.__init__
    (to find the fleet and its processes)."""
    import sim.fleet as sf

    feed = sf.DeviceState.feed

    def probe_feed(self, ev):
        k = ev.get("ev")
        now = time.time()
        if k == "up":
            probe["up"].setdefault(self.name, now)
        elif k in ("paired", "handshaking"):
            probe["paired"].setdefault(self.name, now)
        return feed(self, ev)

    sf.DeviceState.feed = probe_feed
    init = sf.Fleet.__init__

    def probe_init(self, *args, **kw):
        init(self, *args, **kw)
        probe["fleet"] = self

    sf.Fleet.__init__ = probe_init


def run(out_path, sim_args):
    import sim.__main__ as sm

    probe = {
        "up": {},
        "paired": {},
        "peak_kb": {},
        "peak_total_kb": 0,
        "peak_devices_kb": 0,
        "fleet": None,
    }
    _install_probes(probe)
    stop = threading.Event()

    def sampler():
        while not stop.wait(0.5):
            _sample(probe)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.time()
    rc = sm.main(sim_args)
    wall = time.time() - t0
    stop.set()
    th.join(2)
    fleet = probe["fleet"]
    started = fleet.started if fleet is not None else t0
    dev_peaks = [v for k, v in probe["peak_kb"].items() if k.startswith("dev-")]
    host = {k.split(":")[0]: v for k, v in probe["peak_kb"].items() if not k.startswith("dev-")}
    all_up = fleet is not None and len(probe["up"]) == fleet.n
    all_paired = fleet is not None and len(probe["paired"]) == fleet.n
    out = {
        "rc": rc,
        "wall_s": round(wall, 2),
        "up": len(probe["up"]),
        "all_up_s": round(max(probe["up"].values()) - started, 2) if all_up else None,
        "first_up_s": round(min(probe["up"].values()) - started, 2) if probe["up"] else None,
        "all_paired_s": round(max(probe["paired"].values()) - started, 2) if all_paired else None,
        "device_peak_rss_kb_max": max(dev_peaks) if dev_peaks else None,
        "device_peak_rss_kb_mean": round(statistics.mean(dev_peaks)) if dev_peaks else None,
        "devices_peak_rss_kb_sum": sum(dev_peaks),
        "devices_concurrent_rss_kb_peak": probe["peak_devices_kb"],
        "all_concurrent_rss_kb_peak": probe["peak_total_kb"],
        "host_peak_rss_kb": host,
    }
    Path(out_path).write_text(json.dumps(out))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.sim_child")
    ap.add_argument("--out", required=True)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    return run(a.out, rest)


if __name__ == "__main__":
    sys.exit(main())
