"""Prometheus metrics of the service (`/metrics`, prometheus_client) and the
fleet tracker that feeds the fleet page.

`Fleet` wraps the application (the service calls it, it calls the app):
per device it counts handshakes and messages, keeps the last session end
reason, the online state, a message rate and the firmware version its last
HELLO reported (else the registry's: SQLite records it at every HELLO), and it observes handshake
durations and, for hold_acks apps (the MQTT bridge), how long a message
waited for the application before its link ACK.  `ServiceMetrics` reads the
service counters at scrape time (one CollectorRegistry per service, so
several services in one process do not collide).
"""

import asyncio
import time
from collections import deque

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from host_tools.registry.store import firmware_version
from host_tools.service.counters import STATE_COUNTERS

__all__ = ["Fleet", "ServiceMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Fleet:
    """The application wrapper that tracks every device (see module doc)."""

    def __init__(self, app, registry=None):
        self.app = app
        self.registry = registry
        self.devices = {}  # id -> dict (see row())
        self.handshake_s = deque(maxlen=10000)  # observations the metrics drain
        self.hold_s = deque(maxlen=10000)

    @property
    def hold_acks(self):
        return getattr(self.app, "hold_acks", False)

    def __getattr__(self, name):  # what the fleet does not track (on_channel_message)
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    def _dev(self, ident):
        d = self.devices.get(ident)
        if d is None:
            d = self.devices[ident] = {
                "handshakes": 0,
                "messages": 0,
                "online": False,
                "last_seen": None,
                "last_error": None,
                "suite": None,
                "firmware": None,
                "rate": 0.0,
                "_t": time.monotonic(),
                "_n": 0,
            }
        return d

    def on_connect(self, session):
        d = self._dev(session.identity)
        d["handshakes"] += 1
        d["online"] = True
        d["suite"] = session.suite
        d["last_seen"] = time.time()
        d["session"] = session
        if session.handshake_ms is not None:
            self.handshake_s.append(session.handshake_ms / 1000.0)
        return self.app.on_connect(session)

    def on_message(self, session, payload, *a, **kw):
        d = self._dev(session.identity)
        d["messages"] += 1
        d["_n"] += 1
        d["last_seen"] = time.time()
        r = self.app.on_message(session, payload, *a, **kw)
        if r is not None and self.hold_acks:
            t0 = time.monotonic()
            fut = asyncio.ensure_future(r)
            fut.add_done_callback(lambda _f: self.hold_s.append(time.monotonic() - t0))
            return fut
        return r

    def on_close(self, session, reason):
        if session.identity is not None:
            d = self._dev(session.identity)
            if d.get("session") is session:
                d["online"] = False
                d.pop("session")
            d["last_error"] = reason
        return self.app.on_close(session, reason)

    def rows(self):
        """Every known device (registered or seen) as a JSON-able dict."""
        now = time.monotonic()
        known = {}
        if self.registry is not None:
            for r in self.registry.devices():
                known[r["id"]] = r
        out = []
        for ident in sorted(set(known) | set(self.devices)):
            d = self._dev(ident)
            dt = now - d["_t"]
            if dt >= 1.0:  # messages per second, smoothed over ~5 s
                d["rate"] = 0.8 * d["rate"] + 0.2 * (d["_n"] / dt)
                d["_t"], d["_n"] = now, 0
            reg = known.get(ident, {})
            sess = d.get("session")
            if sess is not None and getattr(sess, "device_hello", None) is not None:
                d["firmware"] = firmware_version(sess.device_hello) or d["firmware"]
            out.append(
                {
                    "id": ident,
                    "online": d["online"],
                    "last_seen": d["last_seen"] or reg.get("last_seen"),
                    "handshakes": d["handshakes"],
                    "messages": d["messages"],
                    "last_error": d["last_error"],
                    "firmware": d["firmware"] or reg.get("firmware"),
                    "target": reg.get("target_version"),
                    "suite": d["suite"],
                    "revoked": bool(reg.get("revoked")),
                    "rate": round(d["rate"], 2),
                }
            )
        return out


class _Collector:
    def __init__(self, service, fleet):
        self.service = service
        self.fleet = fleet

    def collect(self):
        c = self.service.counters
        g = GaugeMetricFamily("atls_sessions", "Sessions by state", labels=["state"])
        g.add_metric(["established"], c["sessions_active"] - c["half_open"])
        g.add_metric(["half_open"], c["half_open"])
        yield g
        yield CounterMetricFamily("atls_sessions", "Sessions started", value=c["sessions_total"])
        h = CounterMetricFamily("atls_handshakes", "Handshakes by result", labels=["result"])
        h.add_metric(["ok"], c["handshakes_ok"])
        h.add_metric(["failed"], c["handshakes_failed"])
        yield h
        f = CounterMetricFamily(
            "atls_handshake_failures", "Failed handshakes by reason", labels=["reason"]
        )
        for reason, n in sorted(c.get("handshake_failures", {}).items()):
            f.add_metric([reason], n)
        yield f
        d = CounterMetricFamily("atls_drops", "Dropped packets by reason", labels=["reason"])
        for reason, n in sorted(c["drops"].items()):
            d.add_metric([reason], n)
        yield d
        for name, what in (
            ("datagrams", "Datagrams"),
            ("bytes", "UDP bytes"),
            ("messages", "Application messages"),
        ):
            m = CounterMetricFamily("atls_" + name, what + " by direction", labels=["direction"])
            m.add_metric(["in"], c[name + "_in"])
            m.add_metric(["out"], c[name + "_out"])
            yield m
        b = CounterMetricFamily(
            "atls_unvalidated_bytes", "Bytes to/from unvalidated addresses", labels=["direction"]
        )
        b.add_metric(["in"], c["unvalidated_bytes_in"])
        b.add_metric(["out"], c["unvalidated_bytes_out"])
        yield b
        v2 = CounterMetricFamily(
            "atls_link_v2", "Messages de-duplicated, moved; RESETs sent", labels=["event"]
        )
        for name in ("duplicates_suppressed", "messages_moved", "resets_sent"):
            v2.add_metric([name], c.get(name, 0))
        yield v2
        if "redis_up" in c:  # shared session state (service.state_store)
            yield GaugeMetricFamily(
                "atls_state_store_up", "Redis reachable (1) or not", c["redis_up"]
            )
            st = CounterMetricFamily(
                "atls_state_store", "Shared session state events", labels=["event"]
            )
            for name in STATE_COUNTERS:
                st.add_metric([name[len("state_") :]], c.get(name, 0))
            yield st
        q = GaugeMetricFamily("atls_queue_depth", "Queued messages", labels=["queue"])
        q.add_metric(["app_backlog"], sum(len(s.backlog) for s in self.service.sessions.values()))
        app = self.fleet.app if self.fleet is not None else self.service.app
        if hasattr(app, "queue_depths"):
            for name, n in app.queue_depths().items():
                q.add_metric(["mqtt_" + name], n)
        yield q
        if hasattr(app, "counters"):
            mc = CounterMetricFamily("atls_mqtt", "MQTT bridge events", labels=["event"])
            for name, n in sorted(app.counters.items()):
                mc.add_metric([name], n)
            yield mc


class ServiceMetrics:
    """The service's metrics; render() is the /metrics body."""

    def __init__(self, service, fleet=None):
        self.service = service
        self.fleet = fleet
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(service, fleet))
        r = self.registry
        self.handshake = Histogram(
            "atls_handshake_duration_seconds", "Handshake duration", buckets=_BUCKETS, registry=r
        )
        self.hold = Histogram(
            "atls_message_ack_hold_seconds",
            "Device message delivery to link ACK (hold_acks apps: the PUBACK wait)",
            buckets=_BUCKETS,
            registry=r,
        )
        self.publish = Histogram(
            "atls_mqtt_publish_latency_seconds",
            "MQTT publish to PUBACK",
            buckets=_BUCKETS,
            registry=r,
        )

    def _drain(self, src, hist):
        while src:
            hist.observe(src.pop())

    def render(self):
        f = self.fleet
        if f is not None:
            self._drain(f.handshake_s, self.handshake)
            self._drain(f.hold_s, self.hold)
            app = f.app
            if hasattr(app, "publish_latency"):
                self._drain(app.publish_latency, self.publish)
        return generate_latest(self.registry)
