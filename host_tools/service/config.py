"""The service's config file and its loader, `build_from_config`.

Config (JSON; paths relative to the config file):
    {"listen": "127.0.0.1:5684",
     "registry": "devices.json",            # host_tools.service.registry (.json or SQLite)
     "registry_key": "registry.sqlite.key",  # optional: master key file of sealed PSKs
     "cert": "server.pem", "key": "server.key",        # optional: certificate mode
     "suites": [...], "groups": [...], "tickets": 0,
     "link": {"mtu": 1200, "rto_ms": 1000, ...},       # atls.link.LinkConfig
     "limits": {"max_half_open": 64, "idle_timeout_s": 300,
                "rate_per_s": 200, "rate_burst": 400, "max_sessions": 10000},
     "app": "echo",                          # or "mqtt" (the "mqtt" object) or "module:Class"
     "mqtt": {"host": ..., "prefix": "atls", ...},  # host_tools.service.mqtt_app
     "metrics_listen": "127.0.0.1:9100",     # optional: /metrics and the fleet page
     "http_listen": "127.0.0.1:8080",        # optional: ATLS over HTTP (draft §9),
     "https": {"cert": "h.pem", "key": "h.key"},   #  optionally HTTPS on that listener
     "coap_listen": "127.0.0.1:5683",        # optional: ATLS over CoAP
     "bindings": {"max_body": 16384, "max_wait_ms": 25000},  # see docs/BINDINGS.md
     "ota": {"bundles": "bundles", "rate_fps": 10},  # optional: updates (host_tools.ota.app)
     "routing": {"server_id": 0, "server_bits": 2},  # optional: routable sids (service.routing)
     "redis": {"url": "redis://127.0.0.1:6379/0", "seal_key_file": "state-seal.key"}}
                                             # optional: sessions shared by workers (state_store)
"""

import importlib
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from atls.link import LinkConfig
from host_tools.common import parse_hostport
from host_tools.service.core import EchoApp, Service
from host_tools.service.errors import ConfigError
from host_tools.service.registry import Registry
from host_tools.service.routing import from_config as sid_space
from host_tools.service.tls_engine import ServerConfig

__all__ = ["build_from_config", "load_app", "split_hostport", "DEFAULT_LISTEN"]

DEFAULT_LISTEN = "127.0.0.1:5684"
# devices offer CCM_8 first (smallest tag on the radio); the service agrees
_DEFAULT_SUITES = ("TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_GCM_SHA256")


def load_app(spec, cfg=None, base=".", registry=None):
    """The application object named by the config's "app" (`mqtt`: the MQTT
    bridge, configured by the config's "mqtt" object)."""
    if spec in (None, "", "echo"):
        return EchoApp()
    if spec == "mqtt":
        from host_tools.service.mqtt_app import MqttApp

        return MqttApp((cfg or {}).get("mqtt") or {}, base, registry)
    mod, _, cls = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)()
    except (ImportError, AttributeError) as e:
        raise ConfigError("app %r: %s" % (spec, e))


def split_hostport(s):
    """'host:port' -> (host, port); host defaults to 0.0.0.0."""
    try:
        return parse_hostport(s, "0.0.0.0")
    except ValueError:
        raise ConfigError("listen must be host:port, got %r" % s)


def build_from_config(path, listen=None, http_listen=None, coap_listen=None, worker=None):
    """(Service, (host, port)) from the config file at `path`.  `listen`,
    `http_listen`, `coap_listen` ("host:port") override the file's listeners
    (the CLI's --listen, --http-listen, --coap-listen).  worker: (index,
    count) of a --workers process: its server id, its own state directory and
    metrics port (metrics_listen's port + index; service.worker).  ConfigError
    if the files cannot be read or are invalid."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("config %s: %s" % (path, e))
    base = path.parent
    key = cfg.get("registry_key")
    registry_path = base / cfg.get("registry", "devices.json")
    registry = Registry(registry_path, base / key if key else None)
    cert_chain = key = None
    if cfg.get("cert"):
        cert_chain = x509.load_pem_x509_certificates((base / cfg["cert"]).read_bytes())
        key = serialization.load_pem_private_key((base / cfg["key"]).read_bytes(), None)
    kw = {"suites": _DEFAULT_SUITES}
    for name in ("suites", "groups", "tickets"):
        if name in cfg:
            kw[name] = tuple(cfg[name]) if isinstance(cfg[name], list) else cfg[name]
    try:
        tls_cfg = ServerConfig(
            psks=registry.psks,
            cert_chain=cert_chain,
            key=key,
            client_ca=registry.device_ca or None,
            **kw,
        )
        link_cfg = LinkConfig(**dict({"mtu": 1200}, **cfg.get("link", {})))
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e))
    index, count = worker or (0, 1)
    sids = sid_space(cfg.get("routing"), index, count)
    if worker is not None and isinstance(cfg.get("mqtt"), dict):  # a client id each
        from host_tools.service.worker import per_worker_mqtt

        cfg["mqtt"] = per_worker_mqtt(cfg["mqtt"], sids.server_id)
    app = load_app(cfg.get("app"), cfg, base, registry)
    if "mqtt" in cfg and cfg.get("app") != "mqtt":
        from host_tools.service.mqtt_app import MqttConfig

        MqttConfig(cfg["mqtt"], base)  # checked even when another app runs
    if cfg.get("ota") is not None:  # firmware updates on channel 2 (docs/OTA.md)
        from host_tools.ota.app import from_config

        app = from_config(app, cfg["ota"], base, registry_path)
    bindings = _binding_config(cfg, base)
    addr = split_hostport(cfg.get("listen", DEFAULT_LISTEN))
    if listen:
        addr = split_hostport(listen)
    if http_listen or coap_listen:
        bindings = bindings or {"http_listen": None, "coap_listen": None, "ssl_context": None}
        if http_listen:
            bindings["http_listen"] = split_hostport(http_listen)
        if coap_listen:
            bindings["coap_listen"] = split_hostport(coap_listen)
    metrics_listen = cfg.get("metrics_listen")
    if metrics_listen:
        from host_tools.service.metrics import Fleet

        app = Fleet(app, registry)  # tracks every device for the fleet page and /metrics
    state = None
    if worker is not None:  # per-run state of its own (reset keys, marks)
        from host_tools.service.worker import state_dir

        state = state_dir(registry_path, sids.server_id)
    service = Service(tls_cfg, link_cfg, cfg.get("limits"), app, registry, bindings, state)
    service.sids = sids
    if cfg.get("redis") is not None:  # established sessions in Redis (docs/SCALE.md)
        from host_tools.service.state_store import from_config as state_store

        state_store(cfg["redis"], base).attach(service)
    # /metrics, /healthz and the fleet page (host_tools.service.fleet_page), started by cli.serve
    service.metrics_listen = split_hostport(metrics_listen) if metrics_listen else None
    if service.metrics_listen and service.metrics_listen[1] and index:
        service.metrics_listen = (service.metrics_listen[0], service.metrics_listen[1] + index)
    return service, addr


def _binding_config(cfg, base):
    """Keyword arguments of service.bindings.Bindings (HTTP/CoAP listeners)
    from the config, or None."""
    if not (cfg.get("http_listen") or cfg.get("coap_listen")):
        if cfg.get("https"):
            raise ConfigError("https needs http_listen")
        return None
    out = {"http_listen": None, "coap_listen": None, "ssl_context": None}
    for key in ("http_listen", "coap_listen"):
        if cfg.get(key):
            out[key] = split_hostport(cfg[key])
    https = cfg.get("https")
    if https:
        if not out["http_listen"] or not isinstance(https, dict) or "cert" not in https:
            raise ConfigError('https must be {"cert": ..., "key": ...} with http_listen')
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(
                base / https["cert"], base / https["key"] if https.get("key") else None
            )
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("https: %s" % e)
        out["ssl_context"] = ctx
    extra = cfg.get("bindings") or {}
    if (
        not isinstance(extra, dict)
        or set(extra) - {"max_body", "max_wait_ms"}
        or not all(isinstance(v, int) and v > 0 for v in extra.values())
    ):
        raise ConfigError("bindings: only max_body and max_wait_ms, positive integers")
    out.update(extra)
    return out
