"""Running the service: `serve` (UDP, the HTTP/CoAP bindings if configured,
timers, the stats file) and the CLI `main`:

    python -m host_tools.service --config service.json [--stats F] [--ready-file F]
        [--listen host:port] [--http-listen host:port] [--coap-listen host:port]
        [--workers N [--grace S]]

--workers N runs a supervisor (service.supervisor) that starts N worker
processes sharing the listeners with SO_REUSEPORT (service.worker,
docs/SCALE.md); without it the service is one process, as before.

--ready-file gets "host:port" of the UDP listener once everything listens
(with bindings or metrics_listen, F.json first: {"udp": ..., "http": ...,
"coap": ..., "metrics": ...}); --stats gets the counters (JSON) every second
and at the end.  An application with start()/stop() coroutines (the MQTT
bridge) is started before the listeners and stopped after them.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from host_tools.common import log
from host_tools.service.config import build_from_config
from host_tools.service.errors import ConfigError
from host_tools.service.worker import drain, health

__all__ = ["serve", "main"]


async def serve(service, host, port, stats=None, ready=None, worker=None):
    """worker: this process's index among --workers (listeners shared with
    SO_REUSEPORT), or None for the single process."""
    loop = asyncio.get_running_loop()
    app = getattr(service.app, "app", service.app)  # under the fleet tracker, if any
    if hasattr(app, "start"):
        await app.start()
    shared = worker is not None
    transport, _ = await loop.create_datagram_endpoint(
        lambda: service, local_addr=(host, port), reuse_port=shared or None
    )
    bound = transport.get_extra_info("sockname")
    log("listening", addr="%s:%d" % bound[:2])
    bindings = admin = None
    addrs = {}
    if service.binding_config:
        # aiohttp/aiocoap only when configured
        from host_tools.service.bindings import Bindings

        bindings = Bindings(service, reuse_port=shared, **service.binding_config)
        addrs = await bindings.start()
    if getattr(service, "metrics_listen", None):
        from host_tools.service.fleet_page import AdminSite
        from host_tools.service.metrics import ServiceMetrics

        admin = AdminSite(
            ServiceMetrics(service, service.app),
            service.app,
            service.metrics_listen,
            health=lambda: health(service, worker),
        )
        addrs["metrics"] = await admin.start()
        log("listening", binding="metrics", addr=addrs["metrics"])
    if shared:
        addrs.update(worker=worker, pid=os.getpid(), server_id=service.sids.server_id)
    if ready and addrs:  # written before the ready file: once that exists, all are listening
        _write_json(str(ready) + ".json", dict(addrs, udp="%s:%d" % bound[:2]))
    if ready:
        Path(ready).write_text("%s:%d\n" % bound[:2])
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    timers = asyncio.ensure_future(service.run_timers())
    app_timers = getattr(service.app, "run_timers", None)  # e.g. host_tools.ota.app.OtaApp
    app_timers = asyncio.ensure_future(app_timers(service)) if app_timers else None

    async def write_stats():
        while True:
            if stats:
                _write_json(stats, service.counters)
            await asyncio.sleep(1)

    st = asyncio.ensure_future(write_stats())
    try:
        await stop.wait()
        await drain(service)  # no new sessions; established ones to the store, if any
    finally:
        timers.cancel()
        st.cancel()
        if app_timers is not None:
            app_timers.cancel()
        if bindings is not None:
            await bindings.stop()
        if admin is not None:
            await admin.stop()
        if hasattr(app, "stop"):
            await app.stop()
        if stats:
            _write_json(stats, service.counters)
        transport.close()
        log("stopped", **{k: v for k, v in service.counters.items() if k != "drops"})


def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.service",
        description="ATLS service (UDP, and HTTP/CoAP if configured)",
    )
    ap.add_argument("--config", required=True, help="service config (JSON)")
    ap.add_argument("--listen", help="host:port, overrides the config")
    ap.add_argument("--http-listen", help="host:port for ATLS over HTTP (draft §9)")
    ap.add_argument("--coap-listen", help="host:port for ATLS over CoAP")
    ap.add_argument("--stats", help="write counters (JSON) here every second")
    ap.add_argument("--ready-file", help="write the bound address here once listening")
    ap.add_argument("--workers", type=int, help="run N worker processes (docs/SCALE.md)")
    ap.add_argument("--grace", type=float, default=10.0, help="--workers: seconds to drain")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # "i/n": set by the supervisor
    a = ap.parse_args(argv)
    if a.workers is not None:
        from host_tools.service.supervisor import supervise

        if a.workers < 1:
            ap.error("--workers must be at least 1")
        return supervise(a)
    worker = None
    if a.worker:
        index, _, count = a.worker.partition("/")
        worker = (int(index), int(count))
    try:
        service, (host, port) = build_from_config(
            a.config,
            listen=a.listen,
            http_listen=a.http_listen,
            coap_listen=a.coap_listen,
            worker=worker,
        )
    except ConfigError as e:
        print("service: %s" % e, file=sys.stderr)
        return 2
    index = worker[0] if worker else None
    asyncio.run(serve(service, host, port, a.stats, a.ready_file, index))
    return 0
