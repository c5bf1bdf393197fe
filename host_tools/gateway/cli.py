"""The gateway's command line (`python -m host_tools.gateway`) and its
running loop.

    python -m host_tools.gateway run    --config gateway.json [--ready-file F]
    python -m host_tools.gateway pair   --config gateway.json [--window 60] [--yes | --code 123456]
                                        [--count N]
    python -m host_tools.gateway pair   --config gateway.json --qr FILE | --install-code CODE
                                        [--device ID] [--service NAME]
    python -m host_tools.gateway pair   --config gateway.json --zigbee-install-code I? --address A
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
            addr = (await gw.at(b"SH"))[1] + (await gw.at(b"SL"))[1]
            if len(addr) == 8:
                gw.pairing.addr64 = addr  # bound into every confirmation code
            await secure_coordinator(gw, config)
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


def zigbee_keys(config):
    """The coordinator's network key and trust-center link key, made once and
    kept in state_dir/zigbee-keys.json (mode 0600); never logged."""
    import secrets

    path = config.state_dir / "zigbee-keys.json"
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        keys = {}
    want_ky = (config.zigbee_security or {}).get("link_key")
    changed = False
    if len(bytes.fromhex(keys.get("nk", ""))) != 16:
        keys["nk"] = secrets.token_bytes(16).hex()
        changed = True
    if want_ky and keys.get("ky") != want_ky.lower():
        keys["ky"] = want_ky.lower()
        changed = True
    elif len(bytes.fromhex(keys.get("ky", ""))) != 16:
        keys["ky"] = secrets.token_bytes(16).hex()  # devices then join by install code
        changed = True
    if changed:
        keys["applied"] = False
        config.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    os.chmod(path, 0o600)
    return path, keys


async def secure_coordinator(gw, config):
    """ZigBee network security (docs/BOARDS.md): EE=1, EO=2 (centralized trust
    center), NK (random), KY (the trust-center link key), WR.  Written when
    the keys are new or the coordinator reports EE=0; the keys never reach a log."""
    if config.zigbee_security is None:
        log("zigbee_security", enabled=False)
        return
    path, keys = zigbee_keys(config)
    ee = (await gw.at(b"EE"))[1]
    if keys.get("applied") and ee == b"\x01":
        log("zigbee_security", enabled=True, changed=False)
        return
    for cmd, value in (
        (b"EE", b"\x01"),
        (b"EO", b"\x02"),
        (b"NK", bytes.fromhex(keys["nk"])),
        (b"KY", bytes.fromhex(keys["ky"])),
        (b"WR", b""),
    ):
        status, _ = await gw.at(cmd, value)
        if status != 0:
            raise GatewayError("coordinator refused AT %s (status %d)" % (cmd.decode(), status))
    keys["applied"] = True
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f)
    log("zigbee_security", enabled=True, changed=True)


def cmd_preauthorise(config, a):
    """Install-code onboarding: pre-authorise the device named in the QR code
    (or --install-code, with --device unless it is a whole QR payload)."""
    from host_tools.install_code import InstallCodeError, parse_code, parse_payload, read_qr

    try:
        if a.qr:
            device, service, code = read_qr(a.qr)
        elif a.install_code.strip().startswith("ATLS-IC:"):
            device, service, code = parse_payload(a.install_code)
        else:
            if not a.device:
                raise GatewayError("--install-code needs --device (or a whole QR payload)")
            device, service, code = a.device, a.service, parse_code(a.install_code)
    except InstallCodeError as e:
        raise GatewayError(str(e))
    if service not in config.services:
        raise GatewayError("the install code names service %r, not in the config" % service)
    req = {"cmd": "preauthorise", "who": device, "install_code": code.hex(), "service": service}
    try:
        control(config, req)
        # the device's radio must still join the ZigBee network (NJ)
        control(config, {"cmd": "open_join", "seconds": a.window})
    except GatewayError:  # not running: write the table; it is read at start
        PairingTable(config.pairing_path).preauthorise(device, code, service)
    print("device %s pre-authorised for service %r: it pairs on its own" % (device, service))
    return 0


def cmd_pair(config, a):
    """Open the join window and confirm devices as they ask to pair."""
    if a.zigbee_install_code:
        if not a.address:
            raise GatewayError("--zigbee-install-code needs --address (the module's SH+SL)")
        req = {"cmd": "register_zigbee", "addr64": a.address, "install_code": a.zigbee_install_code}
        control(config, req)
        control(config, {"cmd": "open_join", "seconds": a.window})
        print("module %s registered with the trust center; join window open" % a.address)
        return 0
    if a.qr or a.install_code:
        return cmd_preauthorise(config, a)
    control(config, {"cmd": "open_join", "seconds": a.window})
    print("join window open for %d s: put the device in pairing mode" % a.window, flush=True)
    deadline = time.time() + a.window
    seen = set()
    paired = 0
    while time.time() < deadline and (a.count is None or paired < a.count):
        pend = control(config, {"cmd": "pending"})["pending"]
        for p in pend:
            if (p["addr64"], p["code"]) in seen or p["confirmed"]:
                continue
            seen.add((p["addr64"], p["code"]))
            print(
                "device %s (%s) asks to join service %r — code %s"
                % (p["device"], p["addr64"], p["service"], p["code"]),
                flush=True,
            )
            if p.get("ambiguous"):
                print("  refused for now: %s" % p["ambiguous"], flush=True)
                continue
            if a.code is not None:
                if a.code != p["code"]:
                    print("  code mismatch: refused", flush=True)
                    control(config, {"cmd": "confirm", "addr64": p["addr64"], "accept": False})
                    continue
                try:  # exactly one request shows the code, or none is confirmed
                    control(config, {"cmd": "confirm_code", "code": a.code})
                except GatewayError as e:
                    print("  %s" % e, flush=True)
                    continue
            else:
                if a.yes:
                    ok = True
                else:
                    answer = input("  does the device show the same code? [y/N] ")
                    ok = answer.strip().lower() == "y"
                try:
                    control(config, {"cmd": "confirm", "addr64": p["addr64"], "accept": ok})
                except GatewayError as e:
                    print("  %s" % e, flush=True)
                    continue
                if not ok:
                    continue
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
            p.add_argument("--qr", help="install-code onboarding: the device's QR code (PNG/text)")
            p.add_argument("--install-code", help="install-code onboarding: the code (36 hex)")
            p.add_argument("--device", help="the device id the --install-code belongs to")
            p.add_argument("--service", default="default", help="its service [default]")
            p.add_argument("--zigbee-install-code", help="a module's own install code (I?)")
            p.add_argument("--address", help="that module's 64-bit address (hex)")
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
