"""The ZigBee ⇄ UDP gateway: bridges devices behind an XBee coordinator (and
WiFi devices on UDP) to the ATLS service, over UDP or, per service, over
the draft's HTTP(S) / CoAP bindings through a keyless relay
(host_tools/gateway_relay.py, docs/BINDINGS.md "Gateway").  It sees only ciphertext and holds
no keys: it forwards packets that carry the ATLS marker (docs/PROTOCOL.md §1)
from paired devices, drops and counts everything else, and pairs devices
(§8) into an allowlist kept on disk.

    python -m host_tools.gateway run    --config gateway.json
    python -m host_tools.gateway pair   --config gateway.json [--window 60] [--yes | --code 123456]
    python -m host_tools.gateway list   --config gateway.json
    python -m host_tools.gateway unpair --config gateway.json ADDR64|DEVICE
    python -m host_tools.gateway stats  --config gateway.json

Config (JSON; paths relative to the file):
    {"serial": "/dev/ttyUSB0", "baudrate": 115200, "escaped": false,
     "services": {"default": "127.0.0.1:5684",                        # UDP
                  "web": {"url": "https://host:8443/atls", "ca": "ca.pem"},  # HTTP(S)
                  "coap": {"url": "coap://host:5683/.well-known/atls"}},     # CoAP
     "routes": {"dev-7": "coap"},            # optional: per device (id or addr64) override
     "relay": {"poll_ms": 15000, ...},        # HTTP/CoAP relay settings (gateway_relay)
     "udp_listen": "0.0.0.0:5683",          # WiFi devices (optional)
     "state_dir": "gateway-state",           # pairing.json, gateway.sock, stats.json
     "limits": {"rate_per_s": 50, "rate_burst": 100, "max_devices": 1000, "max_payload": 84},
     "join_window_s": 60}
"""

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

from atls import pairing, xbee  # noqa: E402
from atls.errors import DecodeError  # noqa: E402
from host_tools import gateway_relay as relay  # noqa: E402
from host_tools.common import log, parse_hostport  # noqa: E402

DEFAULT_LIMITS = {
    "rate_per_s": 50,
    "rate_burst": 100,
    "max_devices": 1000,
    "max_payload": 84,
    "max_pending_pairings": 32,
}


class GatewayError(Exception):
    pass


def _hostport(s):
    try:
        return parse_hostport(s, "127.0.0.1")
    except ValueError as e:
        raise GatewayError(str(e))


class Config:
    def __init__(self, path):
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise GatewayError("config %s: %s" % (path, e))
        base = path.parent
        self.serial = raw.get("serial")
        self.baudrate = int(raw.get("baudrate", 115200))
        self.escaped = bool(raw.get("escaped", False))
        try:
            self.relay = dict(relay.DEFAULT_RELAY, **(raw.get("relay") or {}))
            relay.check_relay_options(self.relay)
            self.services = {
                k: _service(k, v, base, self.relay) for k, v in (raw.get("services") or {}).items()
            }
        except (ValueError, TypeError) as e:
            raise GatewayError("config: %s" % e)
        if not self.services:
            raise GatewayError("config: 'services' must name at least one service")
        self.routes = {str(k).lower(): v for k, v in (raw.get("routes") or {}).items()}
        for k, v in self.routes.items():
            if v not in self.services:
                raise GatewayError("config: route %s -> unknown service %r" % (k, v))
        self.udp_listen = _hostport(raw["udp_listen"]) if raw.get("udp_listen") else None
        self.state_dir = base / raw.get("state_dir", "gateway-state")
        self.limits = dict(DEFAULT_LIMITS, **(raw.get("limits") or {}))
        self.join_window_s = int(raw.get("join_window_s", 60))
        self.auto_confirm = bool(raw.get("auto_confirm", False))
        # debugging: append every byte the gateway handles (serial in/out, UDP
        # in/out) to this file as records: kind (1) | length (4) | bytes
        self.capture = base / raw["capture"] if raw.get("capture") else None

    @property
    def socket_path(self):
        """The control socket: in state_dir, or (AF_UNIX paths are limited to
        ~107 bytes) in the temp dir under a name derived from state_dir."""
        p = self.state_dir.resolve() / "gateway.sock"
        if len(str(p)) < 100:
            return p
        import hashlib
        import tempfile

        h = hashlib.sha256(str(p).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / ("atls-gateway-%s.sock" % h)


def _service(name, spec, base, relay_defaults):
    """A service: (host, port) for UDP ("host:port" or {"udp": "host:port"}),
    or a gateway_relay.Target for {"url": "http(s)://…" | "coap://…", …}."""
    if isinstance(spec, str):
        return _hostport(spec)
    if isinstance(spec, dict) and set(spec) == {"udp"}:
        return _hostport(spec["udp"])
    return relay.Target(name, spec, base, relay_defaults)


def describe_service(target):
    return target.describe() if relay.is_relay(target) else "udp:%s:%d" % target


class PairingTable:
    """The allowlist: 64-bit address → device id and service, on disk."""

    def __init__(self, path):
        self.path = Path(path)
        self.devices = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.devices = dict(data.get("devices", {}))
            except ValueError as e:
                raise GatewayError("pairing table %s is corrupt: %s" % (self.path, e))

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"version": 1, "devices": self.devices}, indent=1, sort_keys=True)
        )
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a table

    def add(self, addr64, device_id, service):
        self.devices[addr64.hex()] = {
            "device": device_id,
            "service": service,
            "paired_at": int(time.time()),
        }
        self.save()

    def remove(self, key):
        """Unpair by 64-bit address (hex) or device id; returns what was removed."""
        key = key.lower()
        gone = [a for a, d in self.devices.items() if a == key or d["device"].lower() == key]
        for a in gone:
            del self.devices[a]
        if gone:
            self.save()
        return gone

    def get(self, addr64):
        return self.devices.get(addr64.hex())


class Flow:
    """One device's UDP flow toward its service: its own socket, so the
    service sees one source address per device."""

    def __init__(self, key, sock):
        self.key = key  # ("zb", addr64 bytes) or ("udp", (ip, port))
        self.sock = sock
        self.last = 0.0

    def send(self, data):
        try:
            self.sock.send(data)
        except OSError:
            pass  # e.g. ECONNREFUSED while the service restarts: the link retransmits


class Gateway:
    def __init__(self, config):
        self.config = config
        self.limits = config.limits
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.table = PairingTable(config.state_dir / "pairing.json")
        self.decoder = xbee.FrameDecoder(escaped=config.escaped)
        self.serial = None
        self.flows = {}
        self.buckets = {}
        self.join_until = 0.0
        self.pending = {}  # addr64 -> {"device", "service", "nonce", "code", "confirmed"}
        self.frame_id = 0
        self.at_waiters = {}
        self.udp = None
        self.coordinator64 = None
        self.capture = open(config.capture, "ab") if config.capture else None
        self.relay_clients = None  # shared HTTP session / CoAP context, made on first use
        self.counters = {
            "frames_in": 0,
            "frames_out": 0,
            "up_packets": 0,
            "up_bytes": 0,
            "down_packets": 0,
            "down_bytes": 0,
            "tx_failures": 0,
            "tx_too_large": 0,
            "paired": 0,
            "unpaired": 0,
            "drops": {},
            "relay": {},
        }

    def _capture(self, kind, data):
        if self.capture is not None:
            self.capture.write(kind + len(data).to_bytes(4, "big") + bytes(data))
            self.capture.flush()

    def drop(self, reason):
        d = self.counters["drops"]
        d[reason] = d.get(reason, 0) + 1

    # -- ZigBee side ----------------------------------------------------------------
    def open_serial(self):
        import serial  # pyserial

        try:
            self.serial = serial.serial_for_url(
                self.config.serial, baudrate=self.config.baudrate, timeout=0
            )
        except (serial.SerialException, ValueError) as e:
            raise GatewayError("cannot open %s: %s" % (self.config.serial, e))
        asyncio.get_running_loop().add_reader(self.serial.fileno(), self._serial_readable)

    def _serial_readable(self):
        try:
            data = self.serial.read(4096)
        except Exception as e:  # device unplugged: keep running, say so
            log("serial_error", error=str(e))
            return
        self._capture(b"S", data)
        for frame in self.decoder.feed(data):
            self.counters["frames_in"] += 1
            try:
                self._on_frame(xbee.parse(frame))
            except DecodeError:
                self.drop("bad_frame")

    def _next_frame_id(self):
        self.frame_id = self.frame_id % 255 + 1
        return self.frame_id

    def _write_frame(self, frame_data):
        if self.serial is None:
            return
        raw = xbee.encode_frame(frame_data, self.config.escaped)
        self._capture(b"s", raw)
        self.serial.write(raw)
        self.counters["frames_out"] += 1

    async def at(self, command, parameter=b"", timeout=2.0):
        """Send an AT command to the coordinator and wait for its response."""
        fid = self._next_frame_id()
        fut = asyncio.get_running_loop().create_future()
        self.at_waiters[fid] = fut
        self._write_frame(xbee.at_command(fid, command, parameter))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise GatewayError("coordinator did not answer AT %s" % command.decode())
        finally:
            self.at_waiters.pop(fid, None)

    def _on_frame(self, f):
        kind = f[0]
        if kind == "rx":
            _, src64, _src16, _opts, payload = f
            self.upstream(("zb", bytes(src64)), bytes(payload))
        elif kind == "at_response":
            fut = self.at_waiters.get(f[1])
            if fut is not None and not fut.done():
                fut.set_result((f[3], bytes(f[4])))
        elif kind == "tx_status":
            delivery = f[4]
            if delivery == xbee.PAYLOAD_TOO_LARGE:
                self.counters["tx_too_large"] += 1
            elif delivery != xbee.DELIVERY_SUCCESS:
                self.counters["tx_failures"] += 1
        elif kind == "modem_status":
            log("modem_status", status=f[1])
        else:
            self.drop("unknown_frame")

    # -- forwarding ---------------------------------------------------------------------
    def _rate_ok(self, key):
        now = time.monotonic()
        rate, burst = self.limits["rate_per_s"], self.limits["rate_burst"]
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) > 4 * self.limits["max_devices"]:
                self.buckets.clear()
            b = self.buckets[key] = [burst, now]
        b[0] = min(burst, b[0] + (now - b[1]) * rate)
        b[1] = now
        if b[0] < 1:
            return False
        b[0] -= 1
        return True

    def upstream(self, key, payload):
        """A packet from a device (ZigBee or WiFi UDP)."""
        if not payload:
            return self.drop("empty")
        if key[0] == "zb" and pairing.is_pairing(payload):
            return self._on_pairing(key[1], payload)
        if (payload[0] & 0xF0) != 0xA0:
            return self.drop("not_atls")
        if len(payload) > self.limits["max_payload"] and key[0] == "zb":
            return self.drop("too_big")
        service = "default"
        if key[0] == "zb":
            entry = self.table.get(key[1])
            if entry is None:
                return self.drop("unpaired")
            service = (
                self.config.routes.get(key[1].hex())
                or self.config.routes.get(str(entry["device"]).lower())
                or entry["service"]
            )
        if not self._rate_ok(key):
            return self.drop("rate")
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= self.limits["max_devices"]:
                return self.drop("too_many_flows")
            target = self.config.services.get(service)
            if target is None:
                return self.drop("unknown_service")
            flow = self._open_flow(key, target)
        self.counters["up_packets"] += 1
        self.counters["up_bytes"] += len(payload)
        flow.last = time.monotonic()
        self._capture(b"U", payload)
        flow.send(payload)

    def _open_flow(self, key, target):
        if relay.is_relay(target):  # HTTP(S) / CoAP toward the service: keyless relay
            if self.relay_clients is None:
                self.relay_clients = relay.Clients(2 * self.limits["max_devices"] + 16)
            counters = self.counters["relay"].setdefault(target.kind, relay.new_counters())
            mtu = self.limits["max_payload"] if key[0] == "zb" else 1200
            flow = relay.RelayFlow(key, target, self.downstream, self.relay_clients, counters, mtu)
            self.flows[key] = flow
            return flow
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(target)
        flow = Flow(key, sock)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._flow_readable, flow)
        self.flows[key] = flow
        return flow

    def _flow_readable(self, flow):
        for _ in range(64):
            try:
                data = flow.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP unreachable reported on the socket: nothing to read
            self.downstream(flow, data)

    def _close_flow(self, flow):
        if isinstance(flow, relay.RelayFlow):
            return flow.close()
        try:
            asyncio.get_running_loop().remove_reader(flow.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        flow.sock.close()

    def downstream(self, flow, data):
        """A packet from the service for one device."""
        self._capture(b"u", data)
        if not data or (data[0] & 0xF0) != 0xA0:
            return self.drop("not_atls_down")
        key = flow.key
        if key[0] == "zb":
            if self.table.get(key[1]) is None:
                return self.drop("unpaired")  # unpaired since: cut off both ways
            if len(data) > self.limits["max_payload"]:
                return self.drop("too_big_down")
            self._write_frame(xbee.tx_request(self._next_frame_id(), key[1], data))
        elif self.udp is not None:
            self.udp.sendto(data, key[1])
        self.counters["down_packets"] += 1
        self.counters["down_bytes"] += len(data)

    # -- pairing ----------------------------------------------------------------------------
    def open_join(self, seconds):
        self.join_until = time.monotonic() + seconds
        nj = max(1, min(254, int(seconds)))
        if self.serial is not None:
            asyncio.ensure_future(self._set_nj(nj))
        log("join_window_open", seconds=seconds)

    async def _set_nj(self, nj):
        try:
            await self.at(b"NJ", bytes((nj,)))
        except GatewayError as e:
            log("join_window_error", error=str(e))

    def _on_pairing(self, addr64, payload):
        try:
            msg = pairing.decode(payload)
        except DecodeError:
            return self.drop("bad_pairing")
        if msg[0] != "request":
            return self.drop("bad_pairing")
        _, nonce, device_id, service = msg
        if self.table.get(addr64) is not None and self.table.get(addr64)["device"] == device_id:
            return self._pair_reply(addr64, pairing.ACCEPT, nonce)
        if time.monotonic() > self.join_until:
            self.drop("join_closed")
            return self._pair_reply(addr64, pairing.REJECT, nonce, 1)
        if service not in self.config.services:
            return self._pair_reply(addr64, pairing.REJECT, nonce, 2)
        p = self.pending.get(addr64)
        if p is None or p["nonce"] != nonce:
            if len(self.pending) >= self.limits["max_pending_pairings"]:
                # bounded, but nobody is turned away: the device repeats its
                # request every 2 s and gets a slot once others are confirmed
                self.drop("pairing_busy")
                return self._pair_reply(addr64, pairing.PENDING, nonce)
            code = pairing.confirmation_code(addr64, nonce, device_id, service)
            p = self.pending[addr64] = {
                "device": device_id,
                "service": service,
                "nonce": nonce,
                "code": code,
                "confirmed": self.config.auto_confirm,
            }
            log(
                "pairing_request", addr64=addr64.hex(), device=device_id, service=service, code=code
            )
        if p["confirmed"]:
            self.table.add(addr64, device_id, service)
            self.counters["paired"] += 1
            del self.pending[addr64]
            log("paired", addr64=addr64.hex(), device=device_id, service=service)
            return self._pair_reply(addr64, pairing.ACCEPT, nonce)
        return self._pair_reply(addr64, pairing.PENDING, nonce)

    def _pair_reply(self, addr64, kind, nonce, reason=0):
        self._write_frame(
            xbee.tx_request(
                self._next_frame_id(), addr64, pairing.encode_reply(kind, nonce, reason)
            )
        )

    def confirm(self, addr64_hex, code=None, accept=True):
        addr64 = bytes.fromhex(addr64_hex)
        p = self.pending.get(addr64)
        if p is None:
            raise GatewayError("no pairing request from %s" % addr64_hex)
        if code is not None and code != p["code"]:
            raise GatewayError("code %s does not match the device's" % code)
        if accept:
            p["confirmed"] = True  # accepted when the device repeats its request
        else:
            del self.pending[addr64]

    def unpair(self, key):
        gone = self.table.remove(key)
        for a in gone:
            flow = self.flows.pop(("zb", bytes.fromhex(a)), None)
            if flow is not None:
                self._close_flow(flow)
        self.counters["unpaired"] += len(gone)
        return gone

    # -- control socket -----------------------------------------------------------------
    async def handle_control(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            req = json.loads(line or b"{}")
            resp = self.control(req)
        except (ValueError, GatewayError, asyncio.TimeoutError) as e:
            resp = {"ok": False, "error": str(e)}
        writer.write((json.dumps(resp) + "\n").encode())
        await writer.drain()
        writer.close()

    def control(self, req):
        cmd = req.get("cmd")
        if cmd == "open_join":
            self.open_join(int(req.get("seconds", self.config.join_window_s)))
            return {"ok": True}
        if cmd == "close_join":
            self.join_until = 0
            return {"ok": True}
        if cmd == "pending":
            return {
                "ok": True,
                "pending": [
                    {
                        "addr64": a.hex(),
                        "device": p["device"],
                        "service": p["service"],
                        "code": p["code"],
                        "confirmed": p["confirmed"],
                    }
                    for a, p in self.pending.items()
                ],
            }
        if cmd == "confirm":
            self.confirm(req["addr64"], req.get("code"), req.get("accept", True))
            return {"ok": True}
        if cmd == "list":
            return {"ok": True, "devices": self.table.devices}
        if cmd == "unpair":
            return {"ok": True, "removed": self.unpair(req["key"])}
        if cmd == "stats":
            return {"ok": True, "counters": self.stats()}
        raise GatewayError("unknown command %r" % cmd)

    async def close_relays(self):
        for flow in list(self.flows.values()):
            if isinstance(flow, relay.RelayFlow):
                flow.close()
        if self.relay_clients is not None:
            await self.relay_clients.close()
            self.relay_clients = None

    def stats(self):
        c = dict(self.counters)
        c["frame_errors"] = dict(self.decoder.counters)
        c["flows"] = len(self.flows)
        c["paired_devices"] = len(self.table.devices)
        return c


class _WifiSide(asyncio.DatagramProtocol):
    def __init__(self, gw):
        self.gw = gw

    def connection_made(self, transport):
        self.gw.udp = transport

    def datagram_received(self, data, addr):
        self.gw.upstream(("udp", addr), data)


async def run(config, ready=None, gateway_class=None):
    gw = (gateway_class or Gateway)(config)
    loop = asyncio.get_running_loop()
    if config.serial:
        gw.open_serial()
    if config.udp_listen:
        await loop.create_datagram_endpoint(lambda: _WifiSide(gw), local_addr=config.udp_listen)
    sock_path = config.socket_path
    if sock_path.exists():
        sock_path.unlink()
    server = await asyncio.start_unix_server(gw.handle_control, path=str(sock_path))
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
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats_path = config.state_dir / "stats.json"
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            tmp = stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(gw.stats(), indent=1, sort_keys=True))
            os.replace(tmp, stats_path)
    finally:
        server.close()
        if sock_path.exists():
            sock_path.unlink()
        await gw.close_relays()
        log("gateway_stopped", **{k: v for k, v in gw.stats().items() if k != "drops"})
    return gw


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


def main(argv=None, gateway_class=None):
    ap = argparse.ArgumentParser(description="ATLS ZigBee/UDP gateway")
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
                devices = PairingTable(config.state_dir / "pairing.json").devices
            for addr, d in sorted(devices.items()):
                print("%s  %-20s service=%s" % (addr, d["device"], d["service"]))
            return 0
        if a.cmd == "unpair":
            try:
                removed = control(config, {"cmd": "unpair", "key": a.key})["removed"]
            except GatewayError:
                removed = PairingTable(config.state_dir / "pairing.json").remove(a.key)
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


if __name__ == "__main__":
    sys.exit(main())
