"""The gateway's command line (`python -m host_tools.gateway`) and its
running loop.

    python -m host_tools.gateway run    --config gateway.json [--ready-file F]
    python -m host_tools.gateway pair   --config gateway.json [--window 60] [--yes | --code 123456]
                                        [--count N]
    python -m host_tools.gateway list   --config gateway.json
    python -m host_tools.gateway unpair --config gateway.json ADDR64|DEVICE
    python -m host_tools.gateway stats  --config gateway.json

`run` is the gateway; the others talk to it through its control socket
(`list` and `unpair` use the pairing table on disk when it is not running).
Exit status: 0, 1 when `unpair` finds no such device, 2 on a GatewayError
(bad config, gateway not running, ...), printed as "gateway: ..." on stderr.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from host_tools.common import log
from host_tools.gateway.bridge import Gateway
from host_tools.gateway.config import Config, GatewayError, describe_service
from host_tools.gateway.control import control, serve
from host_tools.gateway.pairing_table import PairingTable

__all__ = ["run", "main"]


async def run(config, ready=None, gateway_class=None):
    """Run a gateway (a `gateway_class`, default Gateway) until SIGINT/SIGTERM;
    write "ok" to `ready` once it serves, its counters to stats.json every
    second.  Returns the gateway."""
    gw = (gateway_class or Gateway)(config)
    loop = asyncio.get_running_loop()
    if config.serial:
        gw.open_serial()
    if config.udp_listen:
        await gw.open_udp(config.udp_listen)
    sock_path = config.socket_path
    if sock_path.exists():
        sock_path.unlink()
    server = await serve(gw, sock_path)
    metrics = None
    if config.metrics_listen:
        from host_tools.gateway.metrics import serve_metrics

        metrics, addr = await serve_metrics(gw, config.metrics_listen)
        log("listening", binding="metrics", addr=addr)
        (config.state_dir / "metrics.addr").write_text(addr + "\n")
    if gw.serial is not None:
        try:
            status, value = await gw.at(b"NJ", b"\x00")  # join window closed at start
        except GatewayError as e:
            log("coordinator_warning", error=str(e))
    log(
        "gateway_running",
        serial=config.serial,
        paired=len(gw.table.devices),
        services={k: describe_service(v) for k, v in config.services.items()},
    )
    if ready:
        Path(ready).write_text("ok\n")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats_path = config.stats_path
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            gw.expire()
            tmp = stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(gw.stats(), indent=1, sort_keys=True))
            os.replace(tmp, stats_path)
    finally:
        server.close()
        if metrics is not None:
            await metrics.cleanup()
        if sock_path.exists():
            sock_path.unlink()
        await gw.close_relays()
        gw.close_flows()
        log("gateway_stopped", **{k: v for k, v in gw.stats().items() if k != "drops"})
    return gw


def cmd_pair(config, a):
    """Open the join window and confirm devices as they ask to pair."""
    control(config, {"cmd": "open_join", "seconds": a.window})
    print("join window open for %d s: put the device in pairing mode" % a.window, flush=True)
    deadline = time.time() + a.window
    seen = set()
    paired = 0
    while time.time() < deadline and (a.count is None or paired < a.count):
        for p in control(config, {"cmd": "pending"})["pending"]:
            if p["addr64"] in seen or p["confirmed"]:
                continue
            seen.add(p["addr64"])
            print(
                "device %s (%s) asks to join service %r — code %s"
                % (p["device"], p["addr64"], p["service"], p["code"]),
                flush=True,
            )
            if a.code is not None:
                ok = a.code == p["code"]
                if not ok:
                    print("  code mismatch: refused", flush=True)
            elif a.yes:
                ok = True
            else:
                ok = input("  does the device show the same code? [y/N] ").strip().lower() == "y"
            control(config, {"cmd": "confirm", "addr64": p["addr64"], "accept": ok})
            if ok:
                paired += 1
                print("  confirmed: the device completes pairing on its next request", flush=True)
        time.sleep(0.3)
    control(config, {"cmd": "close_join"})
    print("join window closed; %d device(s) confirmed" % paired)
    return 0


def main(argv=None, gateway_class=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description="ATLS ZigBee/UDP gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "pair", "list", "unpair", "stats"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True)
        if name == "run":
            p.add_argument("--ready-file")
        if name == "pair":
            p.add_argument("--window", type=int, default=60)
            p.add_argument("--yes", action="store_true", help="confirm every request")
            p.add_argument("--code", help="confirm only the device showing this code")
            p.add_argument("--count", type=int, help="stop after confirming this many")
        if name == "unpair":
            p.add_argument("key", help="64-bit address (hex) or device id")
    a = ap.parse_args(argv)
    try:
        config = Config(a.config)
        if a.cmd == "run":
            asyncio.run(run(config, a.ready_file, gateway_class))
            return 0
        if a.cmd == "pair":
            return cmd_pair(config, a)
        if a.cmd == "list":
            try:
                devices = control(config, {"cmd": "list"})["devices"]
            except GatewayError:
                devices = PairingTable(config.pairing_path).devices
            for addr, d in sorted(devices.items()):
                print("%s  %-20s service=%s" % (addr, d["device"], d["service"]))
            return 0
        if a.cmd == "unpair":
            try:
                removed = control(config, {"cmd": "unpair", "key": a.key})["removed"]
            except GatewayError:
                removed = PairingTable(config.pairing_path).remove(a.key)
            if not removed:
                print("gateway: no paired device %r" % a.key, file=sys.stderr)
                return 1
            print("unpaired %s" % ", ".join(removed))
            return 0
        if a.cmd == "stats":
            print(json.dumps(control(config, {"cmd": "stats"})["counters"], indent=1))
            return 0
    except GatewayError as e:
        print("gateway: %s" % e, file=sys.stderr)
        return 2
    return 0
