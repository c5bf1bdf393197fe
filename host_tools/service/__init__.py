"""The ATLS service: terminates device sessions with an unmodified OpenSSL
(memory BIOs), exports the channel keys and runs the same link and channel
code as the device (firmware/atls, imported here).

    python -m host_tools.service --config service.json [--stats stats.json]

Modules (each with its own public names; the ones below are re-exported):
    config      the config file and its loader, build_from_config
    registry    the devices file (PSKs, device CA): Registry
    tls_engine  OpenSSL through memory BIOs: ServerConfig, ServerConnection,
                TLSError, openssl_version (tls_names, tls_hooks: its tables
                and cffi callbacks)
    admission   before a device is known: first flights, anti-amplification,
                DEFAULT_LIMITS (docs/SECURITY.md)
    core        the UDP service: Service, Session, EchoApp, counters, limits
                (rate limiting: host_tools.ratelimit.TokenBuckets)
    bindings    ATLS over HTTP and CoAP beside UDP (aiohttp/aiocoap, loaded
                only when configured): Bindings
    cli         serve() and the command line (__main__)
    supervisor  --workers N: worker processes sharing the ports (SO_REUSEPORT)
    worker      one of them: state directory, /healthz, graceful drain
    routing     routable session ids (the worker's server id in the top bits)

Application API: an object with on_connect(session), on_message(session,
payload) and on_close(session, reason); `session.send(payload)` queues a
message to the device.  Logs are JSON lines on stderr and never contain keys
or PSKs; counters (`Service.counters`) are written to --stats every second.
"""

from host_tools.service.config import build_from_config, load_app
from host_tools.service.core import DEFAULT_LIMITS, EchoApp, Service, Session
from host_tools.service.errors import ConfigError
from host_tools.service.registry import Registry
from host_tools.service.tls_engine import (
    ServerConfig,
    ServerConnection,
    TLSError,
    openssl_version,
)

__all__ = [
    "Service",
    "Session",
    "EchoApp",
    "DEFAULT_LIMITS",
    "ConfigError",
    "Registry",
    "build_from_config",
    "load_app",
    "ServerConfig",
    "ServerConnection",
    "TLSError",
    "openssl_version",
]
