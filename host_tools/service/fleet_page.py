"""The service's HTTP listener for operators (`metrics_listen` in
service.json): `/metrics` (Prometheus text format), `/healthz` (this
worker: id, sessions held, store reachable; service.worker) and the fleet page
`/fleet` (every device: online state, last seen, handshakes, last error,
firmware version (and the version targeted, if another), message rate),
which polls `/fleet.json` every second.
"""

import json

from aiohttp import web

from host_tools.service.metrics import CONTENT_TYPE

__all__ = ["AdminSite", "PAGE"]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ATLS fleet</title>
<style>
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.online{color:#070}.offline{color:#a00}.revoked{text-decoration:line-through}
</style></head><body>
<h1>ATLS fleet</h1>
<p id="summary">loading…</p>
<table><thead><tr><th>device</th><th>state</th><th>last seen</th><th>handshakes</th>
<th>messages</th><th>msg/s</th><th>last error</th><th>firmware</th></tr></thead>
<tbody id="devices"></tbody></table>
<script>
function cell(tr, text, cls) {
  var td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}
function ago(t) {
  if (!t) return "never";
  var s = Math.max(0, Date.now() / 1000 - t);
  return s < 60 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}
async function refresh() {
  try {
    var r = await fetch("fleet.json", {cache: "no-store"});
    var data = await r.json();
    var body = document.getElementById("devices");
    body.textContent = "";
    var online = 0;
    data.devices.forEach(function (d) {
      var tr = document.createElement("tr");
      tr.dataset.device = d.id;
      if (d.revoked) tr.className = "revoked";
      var state = d.revoked ? "revoked" : (d.online ? "online" : "offline");
      if (d.online) online++;
      cell(tr, d.id);
      cell(tr, state, d.online ? "online" : "offline");
      cell(tr, ago(d.last_seen));
      cell(tr, d.handshakes);
      cell(tr, d.messages);
      cell(tr, d.rate);
      cell(tr, d.last_error || "");
      var fw = d.firmware || "";
      if (d.target && d.target !== d.firmware) fw += " \u2192 " + d.target;
      cell(tr, fw);
      body.appendChild(tr);
    });
    document.getElementById("summary").textContent =
      online + " of " + data.devices.length + " devices online; updated " +
      new Date().toISOString();
  } catch (e) {
    document.getElementById("summary").textContent = "service unreachable: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""


class AdminSite:
    """aiohttp listener for /metrics, /fleet, /fleet.json and /healthz
    (`health()`: a JSON-able dict with "ok"; 503 when not ok)."""

    def __init__(self, metrics, fleet, addr, health=None):
        self.metrics = metrics
        self.fleet = fleet
        self.addr = addr
        self.health = health
        self._runner = None

    async def start(self):
        """Listen; returns "host:port" bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/fleet", self._page)
        app.router.add_get("/", self._page)
        app.router.add_get("/fleet.json", self._json)
        if self.health is not None:
            app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.addr[0], self.addr[1]).start()
        bound = self._runner.addresses[0]
        return "%s:%d" % (bound[0], bound[1])

    async def stop(self):
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request):
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _page(self, request):
        return web.Response(text=PAGE, content_type="text/html")

    async def _health(self, request):
        h = self.health()
        return web.json_response(h, status=200 if h.get("ok") else 503)

    async def _json(self, request):
        body = json.dumps({"devices": self.fleet.rows()})
        return web.Response(text=body, content_type="application/json")
