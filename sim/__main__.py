"""`make sim`: run the simulated fleet and print (and write) the report.

    python -m sim [--devices 5] [--loss 0] [--latency 5] [--seed 1] [--duration 20]
                  [--mode psk|cert] [--suite NAME] [--scenario default] [--report r.json]
                  [--html r.html] [--period 1000]
Exit status 0 when the scenario's verdict is pass, 1 when it fails, 2 on bad options.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from atls.protocol import SUITES
from host_tools.toolchain import ROOT
from sim import report as rep
from sim.fleet import Fleet
from sim.scenarios import DEFAULT_LOSS, EVILS, SCENARIOS, run_scenario


class Live:
    """Per-device status on the terminal while the fleet runs."""

    def __init__(self, fleet, stream=sys.stdout):
        self.fleet = fleet
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.lines = 0

    def __call__(self):
        now = time.time()
        if now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        devs = self.fleet.devices
        up = sum(1 for d in devs.values() if d.status == "up")
        head = "t=%5.1fs  up %d/%d  sent %d  acked %d  retrans %d" % (
            now - self.fleet.started,
            up,
            len(devs),
            sum(d.sent for d in devs.values()),
            sum(d.acked for d in devs.values()),
            sum(d.retransmissions for d in devs.values()),
        )
        if not self.tty:
            print(head, flush=True)
            return
        pico = getattr(self.fleet, "pico_names", ())  # issue 16: * marks a Pico
        rows = [head] + [
            "  %-7s %-12s hs=%-6s sent=%-5d acked=%-5d rx=%-5d retrans=%d%s"
            % (
                n + ("*" if n in pico else ""),
                d.status,
                (d.handshake_ms[0] if d.handshake_ms else "-"),
                d.sent,
                d.acked,
                d.received,
                d.retransmissions,
                (" code " + d.code) if d.status == "pairing" and d.code else "",
            )
            for n, d in sorted(devs.items())[:40]
        ]
        if self.lines:
            self.stream.write("\x1b[%dF\x1b[J" % self.lines)
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self.lines = len(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--loss", type=float, default=None, help="fraction of radio frames lost")
    ap.add_argument("--latency", type=float, default=5.0, help="radio latency (ms)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of traffic once up")
    ap.add_argument("--mode", choices=("psk", "cert"), default="psk")
    ap.add_argument("--suite", choices=sorted(SUITES))
    ap.add_argument("--scenario", default="default", choices=sorted(SCENARIOS))
    ap.add_argument("--period", type=int, default=1000, help="ms between readings")
    ap.add_argument("--count", type=int, help="readings per device (default: until the end)")
    ap.add_argument(
        "--capture",
        action="store_true",
        help="the gateway records every byte it handles (gateway-capture.bin)",
    )
    ap.add_argument("--pico", type=int, default=0, help="first N devices on emulated Picos")
    ap.add_argument("--report", help="write the JSON report here")
    ap.add_argument("--html", help="write the HTML report here (default: next to --report)")
    ap.add_argument("--workdir", help="where processes keep logs and state")
    ap.add_argument("--mqtt", action="store_true", help="the MQTT bridge and a local broker")
    ap.add_argument(
        "--ota-rate", type=int, help="scenario ota: update frames/s per device (default 40)"
    )
    a = ap.parse_args(argv)
    if a.devices < 1 or a.devices > 500:
        print("sim: --devices must be 1..500", file=sys.stderr)
        return 2
    if a.scenario == "ota" and a.devices < 4:  # one device per role (sim/ota_run.py)
        print("sim: --scenario ota needs --devices 4 or more", file=sys.stderr)
        return 2
    loss = a.loss if a.loss is not None else DEFAULT_LOSS.get(a.scenario, 0.0)
    if not 0 <= loss < 1:
        print("sim: --loss must be in [0, 1)", file=sys.stderr)
        return 2
    fleet = Fleet(
        devices=a.devices,
        loss=loss,
        latency_ms=a.latency,
        seed=a.seed,
        mode=a.mode,
        suite=a.suite,
        period_ms=a.period,
        count=a.count,
        capture=a.capture,
        workdir=a.workdir or ROOT / "build" / "sim" / ("%s-%d" % (a.scenario, a.seed)),
        evil=EVILS.get(a.scenario),
    )
    fleet.ota_rate = a.ota_rate
    if a.pico:  # issue 16: devices on emulated RP2040s (sim/pico), marked * in the table
        from sim.pico.fleet import attach

        attach(fleet, a.pico)
    print("atls-mcu simulator: scenario %s — %s" % (a.scenario, SCENARIOS[a.scenario]))
    print(
        "  %d devices, loss %.0f %%, latency %g ms, seed %d, mode %s, logs in %s"
        % (a.devices, loss * 100, a.latency, a.seed, a.mode, fleet.dir),
        flush=True,
    )
    t0 = time.time()
    live = Live(fleet)
    mq = None
    try:
        if a.mqtt:  # sim.mqtt_check: broker, echoing subscriber, two more checks
            from sim.mqtt_check import MqttCheck

            mq = MqttCheck(fleet)
        names, good, wrong, checks = run_scenario(fleet, a.scenario, a.duration, live)
        if mq is not None:
            checks = checks + mq.checks(fleet, names)
        live.last = 0
        live()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        fleet.shutdown()
        return 1
    except Exception as e:
        fleet.shutdown()
        print("sim: %s (logs in %s)" % (e, fleet.dir), file=sys.stderr)
        return 1
    finally:
        if mq is not None:
            fleet.shutdown()
            mq.stop()
    fleet.shutdown()
    report = rep.build(fleet, a.scenario, names, good, wrong, checks, time.time() - t0)
    if getattr(fleet, "ota_result", None):  # scenario ota: its figures (sim/ota_run.py)
        report["ota"] = fleet.ota_result
    print()
    print(rep.text(report))
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(json.dumps(report, indent=1, default=list))
        print("report: %s" % a.report)
    html_path = a.html or (
        str(Path(a.report).with_suffix(".html")) if a.report else str(fleet.dir / "report.html")
    )
    Path(html_path).write_text(rep.html_page(report))
    print("charts: %s" % html_path)
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
