"""python -m host_tools.loadgen --devices N --rate R --duration S [--workers W] [--redis] [--nginx]

Starts the service (as `python -m host_tools.service`, with --workers W if
given) on a fresh registry of N devices, runs N simulated devices against it
(host_tools.loadgen.run) and prints the metrics as JSON."""

import argparse
import json
import sys

from host_tools.loadgen.run import load_run


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.loadgen", description=__doc__)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--rate", type=float, default=100.0, help="messages/s over the fleet")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of steady traffic")
    ap.add_argument(
        "--workers", type=int, help="service workers (python -m host_tools.service --workers)"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="handshakes in flight at most")
    ap.add_argument("--size", type=int, default=16, help="message bytes")
    ap.add_argument("--per-ip", type=int, default=16, help="devices per loopback address")
    ap.add_argument(
        "--redis", action="store_true", help="a private redis-server, the service's redis section"
    )
    ap.add_argument("--nginx", action="store_true", help="devices reach the service through nginx")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, records)")
    a = ap.parse_args(argv)
    if a.devices < 1 or a.rate <= 0 or a.duration <= 0 or a.size < 8:
        ap.error("devices >= 1, rate > 0, duration > 0, size >= 8")
    res = load_run(
        a.devices,
        a.rate,
        a.duration,
        workers=a.workers,
        concurrency=a.concurrency,
        size=a.size,
        per_ip=a.per_ip,
        keep=a.keep,
        redis=a.redis,
        nginx=a.nginx,
    )
    print(json.dumps(res, indent=1, sort_keys=True))
    return 0 if not res.get("error") and res["lost"] == 0 and res["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
