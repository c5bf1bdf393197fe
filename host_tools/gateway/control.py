"""The control socket: a running gateway answers one JSON line per connection
on an AF_UNIX stream socket (Config.socket_path) with one JSON line.

    {"cmd": "open_join", "seconds": 60}      -> {"ok": true}   (default join_window_s)
    {"cmd": "close_join"}                    -> {"ok": true}
    {"cmd": "pending"}                       -> {"ok": true, "pending": [{"addr64", "device",
                                                 "service", "code", "confirmed", "ambiguous"}, ...]}
    {"cmd": "confirm", "addr64": hex, "code": "123456", "accept": true}   (code optional)
                                             -> {"ok": true}   (refused while ambiguous)
    {"cmd": "confirm_code", "code": "123456"} -> {"ok": true, "confirmed": {...}}
                                                (exactly one pending request shows it)
    {"cmd": "preauthorise", "who": device id | addr64, "install_code": 36 hex,
     "service": name}                        -> {"ok": true}   (install-code onboarding)
    {"cmd": "register_zigbee", "addr64": hex, "install_code": 36 hex}
                                             -> {"ok": true}   (Register Joining Device
                                                0x24: the module joins with its I?)
    {"cmd": "list"}                          -> {"ok": true, "devices": {addr64: {...}}}
    {"cmd": "unpair", "key": addr64|device}  -> {"ok": true, "removed": [addr64, ...]}
    {"cmd": "stats"}                         -> {"ok": true, "counters": {...}}

Errors answer {"ok": false, "error": "..."}.  `serve` runs the gateway's
side, `control(config, req)` is the client (the CLI, the simulator).
"""

import asyncio
import json
import socket

from host_tools.gateway.config import GatewayError

__all__ = ["serve", "dispatch", "control"]


async def serve(gw, path):
    """Answer commands for the Gateway `gw` on the unix socket at `path`."""

    async def handle(reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            req = json.loads(line or b"{}")
            resp = dispatch(gw, req)
        except (ValueError, KeyError, GatewayError, asyncio.TimeoutError) as e:
            resp = {"ok": False, "error": str(e)}
        writer.write((json.dumps(resp) + "\n").encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=str(path))


def dispatch(gw, req):
    """One command for the Gateway `gw`; its answer, or GatewayError."""
    cmd = req.get("cmd")
    if cmd == "open_join":
        gw.open_join(int(req.get("seconds", gw.config.join_window_s)))
        return {"ok": True}
    if cmd == "close_join":
        gw.close_join()
        return {"ok": True}
    if cmd == "pending":
        return {"ok": True, "pending": gw.pending_requests()}
    if cmd == "confirm":
        gw.confirm(req["addr64"], req.get("code"), req.get("accept", True))
        return {"ok": True}
    if cmd == "confirm_code":
        return {"ok": True, "confirmed": gw.pairing.confirm_code(str(req["code"]))}
    if cmd == "preauthorise":
        from host_tools.install_code import InstallCodeError, parse_code

        try:
            code = parse_code(req["install_code"])
        except InstallCodeError as e:
            raise GatewayError(str(e))
        gw.table.preauthorise(req["who"], code, req.get("service", "default"))
        return {"ok": True}
    if cmd == "register_zigbee":
        return register_zigbee(gw, req["addr64"], req["install_code"])
    if cmd == "list":
        return {"ok": True, "devices": gw.table.devices}
    if cmd == "unpair":
        return {"ok": True, "removed": gw.unpair(req["key"])}
    if cmd == "stats":
        return {"ok": True, "counters": gw.stats()}
    raise GatewayError("unknown command %r" % cmd)


def register_zigbee(gw, addr64_hex, install_code):
    """Register a joining module's own install code (I?) on the coordinator,
    the trust center (frame 0x24, no status asked)."""
    from atls import xbee
    from host_tools.install_code import InstallCodeError, parse_code, register_device_frame

    try:
        code = parse_code(install_code)
        frame = register_device_frame(0, bytes.fromhex(addr64_hex), code)
    except (InstallCodeError, ValueError) as e:
        raise GatewayError("register_zigbee: %s" % e)
    if gw.serial is None:
        raise GatewayError("register_zigbee: no coordinator")
    gw.serial.write(xbee.encode_frame(frame, gw.config.escaped))
    return {"ok": True}


def control(config, req, timeout=5.0):
    """Send one command to a running gateway's control socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(config.socket_path))
    except OSError:
        raise GatewayError("gateway is not running (no control socket at %s)" % config.socket_path)
    with s:
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    resp = json.loads(buf or b"{}")
    if not resp.get("ok"):
        raise GatewayError(resp.get("error", "command failed"))
    return resp
