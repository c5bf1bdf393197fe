"""One service process as a worker of several (`--workers N`, service.supervisor;
docs/SCALE.md): its place among the others, its health, its graceful end.

A worker is the ordinary single-process service with three differences:
its session ids carry its server id (service.routing), its per-run state
(reset key, de-duplication marks) lives in `service-state/server-<id>/` so
that workers never overwrite each other's reset keys, and its listeners are
opened with SO_REUSEPORT so the N workers of one machine share the UDP (and
HTTP) port; the kernel spreads datagrams over them by their 4-tuple.

Graceful end (SIGTERM): `drain` stops new handshakes (first flights get
ERROR(busy), the device retries later and reaches another worker once this
one has closed its socket), writes every established session to the shared
store when one is configured (the other workers load it when the device's
next packet reaches them) and returns; the caller closes the listeners.
Without a store the sessions end with the process and their devices
handshake again with another worker.
"""

import os

from host_tools.common import log

__all__ = ["health", "drain", "state_dir", "per_worker_mqtt"]


def state_dir(registry_path, server_id):
    """The per-run state directory of the worker with `server_id`."""
    return registry_path.parent / "service-state" / ("server-%d" % server_id)


def per_worker_mqtt(mqtt, server_id):
    """service.json's "mqtt" object for the worker with `server_id`: its own
    MQTT client id (a broker disconnects a client when another connects with
    the same id, so N workers with one id would take turns) and its own
    state file (SQLite: the duplicate table and the downlink queue)."""
    from host_tools.service.mqtt_app import DEFAULTS

    out = dict(mqtt)
    out["client_id"] = "%s-%d" % (mqtt.get("client_id", DEFAULTS["client_id"]), server_id)
    out["state"] = "%s.server-%d" % (mqtt.get("state", DEFAULTS["state"]), server_id)
    return out


def store_of(service):
    """The shared session store (scale-state's service.store) or None."""
    return getattr(service, "store", None)


def health(service, worker_index=None):
    """`/healthz` body: who this is and whether it can take sessions.
    ok is False while draining or when the store cannot be reached."""
    store = store_of(service)
    store_ok = None
    if store is not None:
        store_ok = bool(getattr(store, "up", True))  # state_store: False while unreachable
    established = sum(1 for s in service.sessions.values() if s.handshake_ms is not None)
    return {
        "ok": not service.draining and store_ok is not False,
        "worker": worker_index,
        "server_id": service.sids.server_id,
        "pid": os.getpid(),
        "draining": service.draining,
        "sessions": established,
        "half_open": len(service.half_open),
        "redis": store_ok,
        "uptime_s": round(service.now_ms() / 1000, 1),
    }


async def drain(service):
    """Stop new handshakes and hand the established sessions to the store
    (when there is one).  Returns how many sessions were handed over."""
    service.draining = True
    store = store_of(service)
    if store is None:
        log("draining", sessions=len(service.sessions), in_store=0)
        return 0
    # the store is written through (state_store: committed before anything
    # leaves); flush commits what is behind (acknowledgements), then count
    try:
        written = store.flush(service)
    except Exception as e:  # the store failing must not keep the process from ending
        log("drain_failed", error=repr(e))
        written = 0
    held = [s for s in service.sessions.values() if getattr(s, "shared", None) is not None]
    log("draining", sessions=len(service.sessions), in_store=len(held), written=written)
    return len(held)
