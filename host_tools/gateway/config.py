"""The gateway's configuration: one JSON file, loaded and checked by `Config`.

Paths in it (state_dir, capture, a service's ca/cert/key) are relative to the
file.  A bad file raises GatewayError saying what is wrong.  Example:

    {"serial": "/dev/ttyUSB0", "baudrate": 115200, "escaped": false,
     "services": {"default": "127.0.0.1:5684",                        # UDP
                  "web": {"url": "https://host:8443/atls", "ca": "ca.pem"},  # HTTP(S)
                  "coap": {"url": "coap://host:5683/.well-known/atls"}},     # CoAP
     "routes": {"dev-7": "coap"},            # optional: per device (id or addr64) override
     "relay": {"poll_ms": 15000, ...},        # HTTP/CoAP relay settings (relay.py)
     "udp_listen": "0.0.0.0:5683",          # WiFi devices (optional)
     "state_dir": "gateway-state",           # pairing.json, gateway.sock, stats.json
     "limits": {"rate_per_s": 50, "rate_burst": 100, "max_devices": 1000, "max_payload": 84},
     "join_window_s": 60}

Keys (default in brackets):
  serial         the XBee coordinator: a device path or a pyserial URL
                 [none: no ZigBee side]
  baudrate       its baud rate [115200]
  escaped        XBee API mode 2, escaped frames (AP=2) [false]
  services       required, at least one: name -> service.  A device names its
                 service when it pairs; WiFi devices use "default".  A service is
                 "host:port" or {"udp": "host:port"} (UDP), or {"url": ...} for
                 the HTTP(S)/CoAP bindings through the keyless relay:
                   url       http://, https:// or coap://
                   ca        PEM file of CAs for the HTTPS leg (e.g. a TLS-
                             terminating middlebox) [system CAs]
                   cert, key a client certificate (and key) for the HTTPS leg [none]
                   insecure  true: do not verify the HTTPS leg [false] (ATLS still
                             authenticates the service end to end)
                   plus any "relay" key below, for this service only.
                 ca/cert/key/insecure apply to https:// urls only.
  routes         ZigBee device id or 64-bit address (hex) -> service name,
                 overriding what the device asked for; case-insensitive [{}]
  relay          settings of the HTTP/CoAP relay (DEFAULT_RELAY), positive integers,
                 unknown keys refused:
                   poll_ms 15000            long poll for packets the service sends
                   timeout_s 30             per request; >= poll_ms + 2 s
                   rto_ms 1000, rto_max_ms 8000   the relay link's retransmission
                   handshake_timeout_ms 60000     the relay link gives up a handshake
                   idle_timeout_s 600       a relay session without device packets ends
                   queue 64                 device packets waiting (oldest dropped)
                   max_batch 32             packets per POST
                   max_flight 4096          largest flight either way (at most
                                            255 fragments of the radio MTU)
  udp_listen     "host:port" for WiFi devices on UDP (empty host: 127.0.0.1)
                 [none: no WiFi side]
  state_dir      pairing.json, gateway.sock (control socket), stats.json
                 ["gateway-state"]
  limits         (DEFAULT_LIMITS and flows.FLOW_LIMITS; given keys replace
                 defaults, none is checked)
                   rate_per_s 50, rate_burst 100   token bucket per device
                   max_devices 1000         ZigBee flows toward services (also bounds
                                            the bucket table and the relay's connections)
                 flows (flows.py; issue 14):
                   idle_timeout_s 120       a flow without a packet either way ends
                   pending_timeout_s 30     an unvalidated WiFi/UDP flow ends
                   max_udp_flows 1000       WiFi/UDP flows (a quota apart from ZigBee's)
                   max_udp_flows_per_ip 64  WiFi/UDP flows of one IP address
                   max_udp_pending 256      unvalidated WiFi/UDP flows (the oldest of
                                            the IP holding most is evicted when full)
                   max_udp_pending_per_ip 8 unvalidated flows of one IP
                   new_flows_per_ip_per_s 5, new_flows_per_ip_burst 20
                                            new WiFi/UDP flows per IP (token bucket)
                 A WiFi/UDP source gets a flow (and a socket) only for a well-formed
                 first-flight fragment (HS, flight 0, session id 0); it is validated
                 when it sends its session id after the service answered.
                   max_payload 84           largest ZigBee payload either way, and
                                            the relay's fragment size toward ZigBee
                                            devices (WiFi devices: 1200)
                   max_pending_pairings 32  pairing requests awaiting confirmation
  join_window_s  the join window of a control "open_join" that names no seconds
                 [60] (`pair` always names its --window)
  auto_confirm   confirm every pairing request without a code (tests, the
                 simulator), unless another pending request shows the same
                 code or device id [false]
  gateway_id     the gateway's identity in pairing (1-8 bytes, part of the
                 confirmation code, docs/PROTOCOL.md §8) ["gateway"]
  zigbee_security  {} or {"link_key": "<32 hex>"}: the coordinator runs an
                 encrypted network (EE=1, EO=2, a random network key NK and the
                 trust-center link key KY, both kept in state_dir/zigbee-keys.json,
                 mode 0600, never logged).  Devices join with link_key as their
                 KY; without link_key KY is random and only devices whose module
                 install code is registered on the coordinator can join
                 (`pair --zigbee-install-code`, docs/BOARDS.md).  Absent: the network is left as it is
                 (open; any radio can claim a paired address) [none]
  capture        debugging: append every byte the gateway handles to this file
                 (capture.py) [none]
"""

import json
import ssl as _ssl
from pathlib import Path

from host_tools.common import parse_hostport

__all__ = [
    "GatewayError",
    "DEFAULT_LIMITS",
    "DEFAULT_RELAY",
    "Config",
    "Target",
    "check_relay_options",
    "is_relay",
    "describe_service",
]

DEFAULT_LIMITS = {
    "rate_per_s": 50,
    "rate_burst": 100,
    "max_devices": 1000,
    "max_payload": 84,
    "max_pending_pairings": 32,
}  # plus flows.FLOW_LIMITS, applied by flows.FlowTable
DEFAULT_RELAY = {
    "poll_ms": 15000,
    "timeout_s": 30,
    "rto_ms": 1000,
    "rto_max_ms": 8000,
    "handshake_timeout_ms": 60000,
    "idle_timeout_s": 600,
    "queue": 64,
    "max_batch": 32,
    "max_flight": 4096,
}
_TARGET_KEYS = {"url", "ca", "cert", "key", "insecure"}


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
            self.relay = dict(DEFAULT_RELAY, **(raw.get("relay") or {}))
            check_relay_options(self.relay)
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
        ml = raw.get("metrics_listen")  # /metrics (host_tools.gateway.metrics)
        self.metrics_listen = _hostport(ml) if ml else None
        self.state_dir = base / raw.get("state_dir", "gateway-state")
        self.limits = dict(DEFAULT_LIMITS, **(raw.get("limits") or {}))
        self.join_window_s = int(raw.get("join_window_s", 60))
        self.auto_confirm = bool(raw.get("auto_confirm", False))
        self.gateway_id = str(raw.get("gateway_id", "gateway"))
        if not 0 < len(self.gateway_id.encode()) <= 8:
            raise GatewayError("config: gateway_id must be 1-8 bytes")
        self.zigbee_security = raw.get("zigbee_security")
        if self.zigbee_security is not None:
            zs = self.zigbee_security
            ky = zs.get("link_key") if isinstance(zs, dict) else None
            if not isinstance(zs, dict) or set(zs) - {"link_key"}:
                raise GatewayError('config: zigbee_security is {} or {"link_key": hex}')
            try:
                ok = ky is None or len(bytes.fromhex(ky)) == 16
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise GatewayError("config: zigbee_security.link_key must be 32 hex digits")
        # debugging: append every byte the gateway handles (serial in/out, UDP
        # in/out) to this file as records: kind (1) | length (4) | bytes
        self.capture = base / raw["capture"] if raw.get("capture") else None

    @property
    def pairing_path(self):
        """The pairing table on disk."""
        return self.state_dir / "pairing.json"

    @property
    def stats_path(self):
        """The counters, rewritten every second while the gateway runs."""
        return self.state_dir / "stats.json"

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
    or a Target for {"url": "http(s)://…" | "coap://…", …}."""
    if isinstance(spec, str):
        return _hostport(spec)
    if isinstance(spec, dict) and set(spec) == {"udp"}:
        return _hostport(spec["udp"])
    return Target(name, spec, base, relay_defaults)


def describe_service(target):
    return target.describe() if is_relay(target) else "udp:%s:%d" % target


class Target:
    """An HTTP(S) or CoAP service from the gateway config:
    {"url": "https://host:8443/atls", "ca": "ca.pem"} (ca: PEM file for the
    HTTPS leg, e.g. a TLS-terminating middlebox's CA; "cert"/"key": a client
    certificate for that leg; "insecure": true skips its verification -
    ATLS still authenticates the service end to end) plus optional relay
    settings (DEFAULT_RELAY keys) overriding the config's "relay" block."""

    def __init__(self, name, spec, base=Path("."), defaults=None):
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ValueError('service %r: expected {"url": ...}' % name)
        unknown = set(spec) - _TARGET_KEYS - set(DEFAULT_RELAY)
        if unknown:
            raise ValueError("service %r: unknown keys %s" % (name, sorted(unknown)))
        url = spec["url"]
        self.name = name
        self.url = url
        if url.startswith("coap://"):
            self.kind = "coap"
        elif url.startswith("http://") or url.startswith("https://"):
            self.kind = "http"
        else:
            raise ValueError("service %r: url must be http://, https:// or coap://" % name)
        self.ssl = None
        tls_keys = [k for k in ("ca", "cert", "key", "insecure") if spec.get(k)]
        if tls_keys and not url.startswith("https://"):
            raise ValueError("service %r: %s only apply to https:// urls" % (name, tls_keys))
        if spec.get("insecure"):
            self.ssl = False
        elif spec.get("ca") or spec.get("cert"):
            try:
                ctx = _ssl.create_default_context(
                    cafile=str(Path(base) / spec["ca"]) if spec.get("ca") else None
                )
                if spec.get("cert"):
                    ctx.load_cert_chain(
                        str(Path(base) / spec["cert"]),
                        str(Path(base) / spec["key"]) if spec.get("key") else None,
                    )
            except (OSError, _ssl.SSLError) as e:
                raise ValueError("service %r: %s" % (name, e))
            self.ssl = ctx
        opts = dict(DEFAULT_RELAY, **(defaults or {}))
        opts.update({k: spec[k] for k in DEFAULT_RELAY if k in spec})
        check_relay_options(opts, "service %r" % name)
        self.opts = opts

    def describe(self):
        """The URL without any user:password part (for logs)."""
        scheme, sep, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return scheme + sep + host.rpartition("@")[2] + slash + path


def check_relay_options(opts, where="relay"):
    unknown = set(opts) - set(DEFAULT_RELAY)
    if unknown:
        raise ValueError("%s: unknown keys %s" % (where, sorted(unknown)))
    for k, v in opts.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError("%s: %s must be a positive integer" % (where, k))
    if opts["timeout_s"] * 1000 < opts["poll_ms"] + 2000:
        raise ValueError("%s: timeout_s must exceed poll_ms by 2 s or more" % where)
    if opts["rto_max_ms"] < opts["rto_ms"]:
        raise ValueError("%s: rto_max_ms < rto_ms" % where)


def is_relay(target):
    """Is this service reached through the relay (HTTP(S)/CoAP), not UDP?"""
    return isinstance(target, Target)
