"""Prometheus metrics of the gateway (`metrics_listen` in gateway.json):
`/metrics` exposes Gateway.stats() as it is at scrape time - a number is
`atls_gateway_<name>`, a table of numbers (drops, frame errors, flow counts)
is `atls_gateway_<name>{key="…"}`; counters end in `_total`, the rest
(flows, paired devices, limits) are gauges."""

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["GatewayMetrics", "serve_metrics"]

_GAUGES = {"flows", "flow_counts", "limits", "paired_devices", "pending", "join_open"}


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Collector:
    def __init__(self, gw):
        self.gw = gw

    def collect(self):
        for name, v in sorted(self.gw.stats().items()):
            metric = "atls_gateway_" + "".join(c if c.isalnum() else "_" for c in name)
            kind = GaugeMetricFamily if name in _GAUGES else CounterMetricFamily
            if _number(v):
                yield kind(metric, "gateway " + name, value=v)
            elif isinstance(v, dict) and all(_number(x) for x in v.values()):
                fam = kind(metric, "gateway " + name, labels=["key"])
                for k, x in sorted(v.items()):
                    fam.add_metric([str(k)], x)
                yield fam


class GatewayMetrics:
    def __init__(self, gw):
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(gw))

    def render(self):
        return generate_latest(self.registry)


async def serve_metrics(gw, addr):
    """Listen on addr (host, port) for /metrics; returns the aiohttp runner
    (cleanup() stops it) and the bound "host:port"."""
    m = GatewayMetrics(gw)

    async def handler(request):
        return web.Response(
            body=m.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, addr[0], addr[1]).start()
    bound = runner.addresses[0]
    return runner, "%s:%d" % (bound[0], bound[1])
